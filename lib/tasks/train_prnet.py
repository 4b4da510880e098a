"""MONAI Label trainer ``prnet``: self-supervised PRNet training on every study of the datastore.

Coarse to fine (``lib.prnet.train``): every step trains the coarse model on one batch of pairs and,
unless ``fine_r_mm`` is null, the fine model on one batch of short pairs.
Progress (loss, its two terms, offset error in mm of each model, pairs/s) is in the trainer's
``train_stats``. A checkpoint (weights, optimizers, step) is written atomically every ``checkpoint_every``
steps and the weights are published (:mod:`lib.prnet.checkpoint`: plain state_dicts, with their settings
and the intensity window), so an interrupted run resumes where its last checkpoint left off. The checkpoint
records the studies it trained on: once studies are added or removed, a run trains ``max_steps`` steps on the
new set from the checkpoint's weights (a resumed run would stop at once, its step reached, and never see them).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Dict, Sequence

import numpy as np
import torch
from monailabel.interfaces.datastore import Datastore

from lib.distributed import Ranks
from lib.intensity import normalise_study
from lib.io import read_volume
from lib.prnet.checkpoint import STATE_KEYS, build_prnet, prnet_state
from lib.prnet.train import PRNetConfig, train_prnet
from lib.tasks.errors import ClientError
from lib.tasks.models import PARALLEL_DEFAULTS, ModelFiles, ResumableTrainTask, pick_device, train_processes
from lib.tasks.params import number

logger = logging.getLogger(__name__)


class PRNetTrain(ResumableTrainTask):
    def __init__(self, files: ModelFiles, cfg: PRNetConfig, window: Sequence[Sequence[float]], batch_mode: str = "per_process",
                 threads: int | str = "auto"):
        """``window``: the CT intensity window (HU knots, [0, 1] values) the studies are normalised with; it is
        recorded in the published model, which propagation then uses. ``batch_mode``: how the processes of a
        data-parallel run share a step (``train_batch``, :mod:`lib.distributed`); ``threads``: the torch threads
        of a run on the CPU (``job_threads``, :mod:`lib.threads`)."""
        super().__init__("Self-supervised PRNet (relative position + reconstruction) on every study", files, threads)
        self.cfg = cfg
        self.window = window
        self.batch_mode = batch_mode

    def config(self) -> Dict[str, Any]:
        return {"max_steps": self.cfg.max_steps, "lr": self.cfg.lr, "batch_pairs": self.cfg.batch_pairs,
                "checkpoint_every": self.cfg.checkpoint_every, "restart": False, **PARALLEL_DEFAULTS}

    def validate(self, request: Dict[str, Any], datastore: Datastore) -> tuple[int, int, float]:
        """``(max_steps, checkpoint_every, lr)`` of a request; ClientError (4xx) with what to fix."""
        max_steps = number(request, "max_steps", self.cfg.max_steps, 0, 10_000_000, integer=True)
        every = max(1, number(request, "checkpoint_every", self.cfg.checkpoint_every, 1, 10_000_000, integer=True))
        lr = number(request, "lr", self.cfg.lr, 1e-8, 1.0)
        number(request, "seed", 0, 0, 2**31 - 1, integer=True)
        nprocs = train_processes(request)[0]
        if self.batch_mode == "global" and self.cfg.batch_pairs < nprocs:
            raise ClientError(f"prnet.train.batch_pairs ({self.cfg.batch_pairs}) is split over the {nprocs} processes "
                              f"(train_batch 'global'): set it to at least {nprocs}, or train_batch to 'per_process'")
        if not datastore.list_images():
            raise ClientError("the datastore has no studies to train PRNet on; add images first")
        return max_steps, every, lr

    def train(self, request: Dict[str, Any], datastore: Datastore, ranks: Ranks | None = None) -> Dict[str, Any]:
        """Train on every study (each process loads them all: the pairs of a batch are split, not the studies)."""
        max_steps, every, lr = self.validate(request, datastore)
        images = sorted(datastore.list_images())
        ranks = ranks or Ranks(device=pick_device(request))
        device = ranks.device
        volumes, spacings = [], []
        for image_id in images:  # each study in the canonical frame (RAS axes, cfg.spacing_mm), normalised per study
            vol = read_volume(datastore.get_image_uri(image_id))
            view = vol.view(self.cfg.spacing_mm)
            volumes.append(normalise_study(view.image(vol.array), *self.window)[0])
            spacings.append(view.spacing)
        # r must cover the largest offset: the largest extent (mm) over the studies, per axis
        extent = np.max([np.asarray(v.shape) * np.asarray(s) for v, s in zip(volumes, spacings)], axis=0)
        cfg = replace(self.cfg, lr=lr, max_steps=max_steps, checkpoint_every=every, r_mm=tuple(float(x) for x in extent))

        torch.manual_seed(int(request.get("seed", 0)))  # reproducible initial weights
        stages = ["coarse"] + (["fine"] if cfg.fine_r_mm is not None else [])
        nets = {k: build_prnet(cfg).to(device) for k in stages}  # the same initial weights on every rank
        optimizers = {k: torch.optim.Adam(n.parameters(), lr=cfg.lr) for k, n in nets.items()}
        optimizer_keys = {"coarse": "optimizer", "fine": "fine_optimizer"}
        step, warm_from = 0, None
        ck = self.resume_from(request, device)
        if ck is not None:
            if all(STATE_KEYS[k] in ck for k in stages):
                for k in stages:
                    nets[k].load_state_dict(ck[STATE_KEYS[k]])
                    optimizers[k].load_state_dict(ck[optimizer_keys[k]])
                before = ck.get("studies")
                if before is not None and list(before) != images:
                    # studies added or removed: the same run would stop at once (its step is reached) and never see
                    # them; max_steps steps on the new set instead, from the checkpoint's weights
                    warm_from = int(ck["step"])
                    added, removed = len(set(images) - set(before)), len(set(before) - set(images))
                    logger.info(f"PRNet: the studies changed since the checkpoint ({added} added, {removed} removed): "
                                f"{max_steps} steps on the {len(images)} studies, from the weights of step {warm_from}")
                else:
                    step = int(ck["step"])
                    logger.info(f"PRNet: resuming at step {step}")
            else:
                logger.warning("PRNet: the checkpoint lacks a model of this configuration; starting over")

        # the coarse model without the fine one trains on the whole of Eq. 3; else its decoder is unused
        trained = {k: ranks.wrap(nets[k], find_unused_parameters=not cfg.stage(k == "fine")[2]) for k in stages}
        split = ranks.split_batch(cfg.batch_pairs, self.batch_mode)
        history = self.stats().get("history", []) if step else []
        t_start = time.time()
        while step < max_steps:
            chunk = min(every, max_steps - step)
            mean: dict[str, float] = {}
            t0 = time.perf_counter()
            for k in stages:
                losses: list[dict] = []
                train_prnet(trained[k], volumes, spacings, cfg, chunk, optimizers[k], seed=split.seed(step + (k == "fine") * 7919),
                            device=device, callback=lambda s, st: losses.append(st), fine=k == "fine", part=split.part)
                prefix = "fine_" if k == "fine" else ""
                mean.update({prefix + n: float(np.mean([l[n] for l in losses])) for n in losses[0]})
            mean = ranks.mean(mean)  # each rank's loss is on its part of the step's pairs: the step's is their mean
            step += chunk
            rate = chunk * split.per_step * len(stages) / (time.perf_counter() - t0)
            history.append({"step": step, **mean, "pairs_per_s": rate})
            published = prnet_state(nets, cfg, self.window, step)
            self.save({**published, **{optimizer_keys[k]: optimizers[k].state_dict() for k in stages}, "studies": images}, published,
                      {"step": step, "max_steps": max_steps, "device": device, "processes": ranks.world_size,
                       "threads": torch.get_num_threads(),
                       "train_batch": self.batch_mode, "pairs_per_step": split.per_step,
                       "studies": len(images), "warm_start_from_step": warm_from, **mean, "pairs_per_s": rate, "history": history[-200:],
                       "elapsed_s": time.time() - t_start}, ranks)
            fine_err = f", fine err {mean['fine_err_mm']:.1f} mm" if "fine_err_mm" in mean else ""
            logger.info(f"PRNet step {step}/{max_steps}: loss {mean['loss']:.3f} err {mean['err_mm']:.1f} mm{fine_err}, {rate:.1f} pairs/s")
        return self.stats()
