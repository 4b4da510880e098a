"""MONAI Label trainer ``prnet``: self-supervised PRNet training on every study of the datastore.

Coarse to fine (``lib.prnet.train``): every step trains the coarse model on one batch of pairs and,
unless ``fine_r_mm`` is null, the fine model on one batch of short pairs.
Progress (loss, its two terms, offset error in mm of each model, pairs/s) is in the trainer's
``train_stats``. A checkpoint (weights, optimizers, step) is written atomically every ``checkpoint_every``
steps and the weights are published to ``<model_dir>/prnet.pt`` (plain state_dicts, with their settings),
so an interrupted run resumes where its last checkpoint left off.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from typing import Any, Dict

import numpy as np
import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from lib.atomic import atomic_torch_save, atomic_write_json
from lib.config import is_true
from lib.intensity import normalise_study
from lib.io import read_volume
from lib.prnet.network import PRNet
from lib.prnet.propagate import Localizer
from lib.prnet.train import PRNetConfig, train_prnet
from lib.tasks.errors import ClientError
from lib.tasks.jobs import job
from lib.tasks.params import number

logger = logging.getLogger(__name__)


def load_prnet(path: str, device: str = "cpu") -> tuple[Localizer, PRNetConfig]:
    """The published PRNet model(s) and their settings."""
    blob = torch.load(path, map_location=device, weights_only=False)
    known = PRNetConfig.__dataclass_fields__
    cfg = PRNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in blob["config"].items() if k in known})
    if "fine_state_dict" not in blob:
        cfg = PRNetConfig(**{**asdict(cfg), "fine_r_mm": None})

    def build(state: dict) -> PRNet:
        net = PRNet(cfg.patch_size, cfg.base_channels, blob.get("fc_hidden", 256))
        net.load_state_dict(state)
        return net.to(device).eval()

    fine = build(blob["fine_state_dict"]) if cfg.fine_r_mm is not None else None
    return Localizer(build(blob["state_dict"]), cfg.r_mm, fine, cfg.fine_r_mm), cfg


class PRNetTrain(TrainTask):
    def __init__(
        self,
        model_dir: str,
        cfg: PRNetConfig,
        window: tuple[list, list],
        max_steps: int = 2000,
        checkpoint_every: int = 50,
        fc_hidden: int = 256,
    ):
        super().__init__("Self-supervised PRNet (relative position + reconstruction) on every study")
        self.model_dir = model_dir
        self.cfg = cfg
        self.window = window
        self.max_steps = max_steps
        self.checkpoint_every = checkpoint_every
        self.fc_hidden = fc_hidden
        self.published = os.path.join(model_dir, "prnet.pt")
        self.checkpoint = os.path.join(model_dir, "prnet_checkpoint.pt")
        self.stats_path = os.path.join(model_dir, "train_stats_prnet.json")

    def config(self) -> Dict[str, Any]:
        return {"max_steps": self.max_steps, "lr": self.cfg.lr, "batch_pairs": self.cfg.batch_pairs,
                "checkpoint_every": self.checkpoint_every, "restart": False}

    def stats(self) -> Dict[str, Any]:
        if os.path.exists(self.stats_path):
            with open(self.stats_path) as f:
                return json.load(f)
        return {}

    def validate(self, request: Dict[str, Any], datastore: Datastore) -> tuple[int, int, float]:
        """``(max_steps, checkpoint_every, lr)`` of a request; ClientError (4xx) with what to fix."""
        max_steps = number(request, "max_steps", self.max_steps, 0, 10_000_000, integer=True)
        every = max(1, number(request, "checkpoint_every", self.checkpoint_every, 1, 10_000_000, integer=True))
        lr = number(request, "lr", self.cfg.lr, 1e-8, 1.0)
        number(request, "seed", 0, 0, 2**31 - 1, integer=True)
        if not datastore.list_images():
            raise ClientError("the datastore has no studies to train PRNet on; add images first")
        return max_steps, every, lr

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        """Train (one training job at a time on this model folder; see :mod:`lib.tasks.jobs`)."""
        with job(self.model_dir, "train", "prnet"):
            return self._train(request, datastore)

    def _train(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        os.makedirs(self.model_dir, exist_ok=True)
        max_steps, every, lr = self.validate(request, datastore)
        images = datastore.list_images()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        volumes, spacings = [], []
        for image_id in images:  # each study in the canonical frame (RAS axes, cfg.spacing_mm), normalised per study
            vol = read_volume(datastore.get_image_uri(image_id))
            view = vol.view(self.cfg.spacing_mm)
            volumes.append(normalise_study(view.image(vol.array), *self.window)[0])
            spacings.append(view.spacing)
        # r must cover the largest offset: the largest extent (mm) over the studies, per axis
        extent = np.max([np.asarray(v.shape) * np.asarray(s) for v, s in zip(volumes, spacings)], axis=0)
        cfg = PRNetConfig(**{**asdict(self.cfg), "lr": lr, "r_mm": tuple(float(x) for x in extent)})

        torch.manual_seed(int(request.get("seed", 0)))  # reproducible initial weights
        stages = ["coarse"] + (["fine"] if cfg.fine_r_mm is not None else [])
        nets = {k: PRNet(cfg.patch_size, cfg.base_channels, self.fc_hidden).to(device) for k in stages}
        optimizers = {k: torch.optim.Adam(n.parameters(), lr=cfg.lr) for k, n in nets.items()}
        keys = {"coarse": ("state_dict", "optimizer"), "fine": ("fine_state_dict", "fine_optimizer")}
        step = 0
        restart = is_true(request.get("restart", False))
        if os.path.exists(self.checkpoint) and not restart:
            ck = torch.load(self.checkpoint, map_location=device, weights_only=False)
            if all(keys[k][0] in ck for k in stages):
                for k in stages:
                    nets[k].load_state_dict(ck[keys[k][0]])
                    optimizers[k].load_state_dict(ck[keys[k][1]])
                step = int(ck["step"])
                logger.info(f"PRNet: resuming at step {step}")
            else:
                logger.warning("PRNet: the checkpoint lacks a model of this configuration; starting over")

        history = self.stats().get("history", []) if step else []
        t_start = time.time()
        while step < max_steps:
            chunk = min(every, max_steps - step)
            mean: dict[str, float] = {}
            t0 = time.perf_counter()
            for k in stages:
                losses: list[dict] = []
                train_prnet(nets[k], volumes, spacings, cfg, chunk, optimizers[k], seed=step + (k == "fine") * 7919,
                            device=device, callback=lambda s, st: losses.append(st), fine=k == "fine")
                prefix = "fine_" if k == "fine" else ""
                mean.update({prefix + n: float(np.mean([l[n] for l in losses])) for n in losses[0]})
            step += chunk
            rate = chunk * cfg.batch_pairs * len(stages) / (time.perf_counter() - t0)
            history.append({"step": step, **mean, "pairs_per_s": rate})
            blob = {keys[k][0]: nets[k].state_dict() for k in stages}
            blob.update({"config": asdict(cfg), "fc_hidden": self.fc_hidden, "step": step})
            atomic_torch_save({**blob, **{keys[k][1]: optimizers[k].state_dict() for k in stages}}, self.checkpoint)
            atomic_torch_save(blob, self.published)
            atomic_write_json(self.stats_path, {"model": "prnet", "step": step, "max_steps": max_steps, "device": device,
                               "studies": len(images), **mean, "pairs_per_s": rate, "history": history[-200:],
                               "elapsed_s": time.time() - t_start, "published": self.published})
            fine_err = f", fine err {mean['fine_err_mm']:.1f} mm" if "fine_err_mm" in mean else ""
            logger.info(f"PRNet step {step}/{max_steps}: loss {mean['loss']:.3f} err {mean['err_mm']:.1f} mm{fine_err}, {rate:.1f} pairs/s")
        return self.stats()
