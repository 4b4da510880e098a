"""MONAI Label trainer ``segmentation``: a 3D UNet trained on the cohort's drafts with a noise strategy.

Data: every study with a ``final`` label (clean; wins over a draft) or an ``original`` draft (noisy,
e.g. written by ``POST /batch/infer/prnet_prelabel?images=unlabeled``). Label names come from the labels'
info (``label_names`` / ``label_info``). Request parameters: ``noise_strategy`` (none | plc | mcpm |
oeem, default from the configuration), ``epochs``, ``steps_per_epoch``, ``lr``, ``lr_decay`` (poly | none),
``seed``, ``restart``, and where it runs: ``multi_gpu`` / ``gpus`` (one process per GPU) or ``processes`` on a
CPU host (:func:`lib.tasks.models.train_processes`; data parallel, :class:`lib.segmentation.train.SegTrainer`).

Resumable: after every epoch the model, optimizer(s) and epoch go to an atomic checkpoint, and PLC's
corrected labels are saved in the datastore under tag ``plc``; a run restarted on the same data and
strategy continues from both. The model is published (:mod:`lib.segmentation.checkpoint`) after every
epoch (the infer task ``segmentation`` hot-reloads it).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import replace
from typing import Any, Dict, Sequence

import numpy as np
import torch
from monailabel.interfaces.datastore import Datastore

from lib.distributed import Ranks
from lib.intensity import normalise_study
from lib.io import read_volume, write_like
from lib.segmentation.checkpoint import unet_state
from lib.segmentation.config import LR_DECAYS, STRATEGIES, SegConfig
from lib.segmentation.data import Study
from lib.segmentation.train import SegTrainer
from lib.tasks.errors import ClientError
from lib.tasks.labels import label_names_from_info
from lib.tasks.models import PARALLEL_DEFAULTS, ModelFiles, ResumableTrainTask, pick_device, train_processes
from lib.tasks.params import number

logger = logging.getLogger(__name__)

PLC_TAG = "plc"


def training_set(datastore: Datastore, window: tuple, spacing_mm=(3.0, 3.0, 3.0)) -> tuple[list[Study], dict[str, int], list[tuple]]:
    """Studies to train on, ``{name: id}`` of the classes and a key of the data (ids, tags, label times).

    Each study is seen in the canonical frame (RAS axes, ``spacing_mm`` voxels; labels by nearest
    neighbour) and normalised per study (:func:`lib.intensity.normalise_study`: ``window`` for CT)."""
    studies, names, key = [], {}, []
    for image_id in sorted(datastore.list_images()):
        tag = next((t for t in ("final", "original") if datastore.get_label_uri(image_id, t)), None)
        if tag is None:
            continue
        info = datastore.get_label_info(image_id, tag) or {}
        for n, i in label_names_from_info(info).items():
            if names.get(n, i) != i:
                raise ClientError(f"label '{n}' has id {names[n]} in one study and {i} in '{image_id}' ({tag}); "
                                  "save the labels with consistent ids")
            names[n] = i
        image = read_volume(datastore.get_image_uri(image_id))
        label = np.rint(read_volume(datastore.get_label_uri(image_id, tag)).array).astype(np.int64)
        if label.shape != image.array.shape:
            raise ClientError(f"the '{tag}' label of '{image_id}' has shape {label.shape}, its image {image.array.shape}")
        view = image.view(spacing_mm)
        img01 = normalise_study(view.image(image.array), *window)[0]
        studies.append(Study(image_id, img01, view.labels(label), clean=tag == "final", view=view))
        key.append((image_id, tag, info.get("ts")))
    return studies, names, key


class SegmentationTrain(ResumableTrainTask):
    def __init__(self, files: ModelFiles, cfg: SegConfig, window: Sequence[Sequence[float]], batch_mode: str = "per_process",
                 threads: int | str = "auto"):
        """``window``: the CT intensity window (HU knots, [0, 1] values), recorded in the published model;
        ``batch_mode``: how the processes of a data-parallel run share a step (``train_batch``, :mod:`lib.distributed`);
        ``threads``: the torch threads of a run on the CPU (``job_threads``, :mod:`lib.threads`)."""
        super().__init__("3D UNet on the drafts (original) and final labels, with a noise-robust strategy (PLC / MCPM / OEEM)",
                         files, threads)
        self.cfg, self.window, self.batch_mode = cfg, window, batch_mode

    def config(self) -> Dict[str, Any]:
        return {"noise_strategy": self.cfg.noise_strategy, "epochs": self.cfg.epochs,
                "steps_per_epoch": self.cfg.steps_per_epoch, "lr": self.cfg.lr, "lr_decay": self.cfg.lr_decay,
                "restart": False, **PARALLEL_DEFAULTS}

    def _request_config(self, request: Dict[str, Any]) -> SegConfig:
        strategy = str(request.get("noise_strategy", self.cfg.noise_strategy))
        if strategy not in STRATEGIES:
            raise ClientError(f"unknown noise_strategy '{strategy}'; valid: {', '.join(STRATEGIES)}")
        cfg = replace(
            self.cfg, noise_strategy=strategy,
            epochs=number(request, "epochs", self.cfg.epochs, 0, 100_000, integer=True),
            steps_per_epoch=number(request, "steps_per_epoch", self.cfg.steps_per_epoch, 1, 1_000_000, integer=True),
            lr=number(request, "lr", self.cfg.lr, 1e-8, 1.0),
            lr_decay=str(request.get("lr_decay", self.cfg.lr_decay)),
        )
        number(request, "seed", 0, 0, 2**31 - 1, integer=True)
        if cfg.lr_decay not in LR_DECAYS:
            raise ClientError(f"unknown lr_decay '{cfg.lr_decay}'; valid: {', '.join(LR_DECAYS)}")
        return cfg

    def validate(self, request: Dict[str, Any], datastore: Datastore) -> SegConfig:
        """Cheap checks of a request before training starts (ClientError, 4xx, with what to fix)."""
        cfg = self._request_config(request)
        tags = [next((t for t in ("final", "original") if datastore.get_label_uri(i, t)), None) for i in datastore.list_images()]
        if not any(tags):
            raise ClientError("no drafts and no final labels to train on: pre-label the cohort first "
                              "(POST /batch/infer/prnet_prelabel?images=unlabeled) or save 'final' labels")
        nprocs = train_processes(request)[0]
        if nprocs > 1 and cfg.noise_strategy == "mcpm":
            raise ClientError("noise_strategy 'mcpm' trains in one process (its meta look-ahead is not data parallel): "
                              "leave out multi_gpu / processes, or choose plc, oeem or none")
        if self.batch_mode == "global" and cfg.batch_size < nprocs:
            raise ClientError(f"segmentation.batch_size ({cfg.batch_size}) is split over the {nprocs} processes "
                              f"(train_batch 'global'): set it to at least {nprocs}, or train_batch to 'per_process'")
        if cfg.noise_strategy == "mcpm" and "final" not in tags:
            raise ClientError("noise_strategy 'mcpm' needs a clean meta set: save at least one study's corrected "
                              "mask as a 'final' label")
        return cfg

    def train(self, request: Dict[str, Any], datastore: Datastore, ranks: Ranks | None = None) -> Dict[str, Any]:
        """Train on every labeled study (each process loads them all: the patches of a batch are split)."""
        cfg = self.validate(request, datastore)
        studies, names, data_key = training_set(datastore, self.window, cfg.spacing_mm)
        if not names:
            raise ClientError("the labels name no classes: save them with label_names / label_info")
        num_classes = max(names.values()) + 1
        for s in studies:
            if s.label.max() >= num_classes or s.label.min() < 0:
                raise ClientError(f"the label of '{s.id}' holds ids outside 0..{num_classes - 1} (its names: {names})")

        ranks = ranks or Ranks(device=pick_device(request))
        device = ranks.device
        seed = int(request.get("seed", 0))
        trainer = SegTrainer(cfg, num_classes, device, seed=seed, ranks=ranks, batch_mode=self.batch_mode)
        key = {"data": data_key, "strategy": cfg.noise_strategy, "num_classes": num_classes, "seed": seed}
        epoch, history = 0, []
        ck = self.resume_from(request, device)
        if ck is not None:
            if json.dumps(ck.get("key"), default=str) == json.dumps(key, default=str):
                trainer.load_state_dict(ck["trainer"])
                epoch, history = int(ck["epoch"]), self.stats().get("history", [])
                trainer.steps = epoch * cfg.steps_per_epoch  # the learning rate schedule goes on where it stopped
                if cfg.noise_strategy == "plc":
                    self._load_corrected(datastore, studies)
                logger.info(f"segmentation: resuming at epoch {epoch} ({cfg.noise_strategy})")
        trainer.sampler.rng = np.random.default_rng(trainer.split.seed(seed + epoch))

        t_start = time.time()

        def on_epoch(epoch: int, row: Dict[str, Any]) -> None:
            if "delta" in row and ranks.main:  # PLC corrected the drafts: part of the state a resumed run needs
                self._save_corrected(datastore, studies, names, epoch, row["delta"])
            history.append(row)
            self.save({"trainer": trainer.state_dict(), "epoch": epoch, "key": key},
                      unet_state(trainer.net, cfg, num_classes, names, self.window, epoch), {
                          "epoch": epoch, "epochs": cfg.epochs, "noise_strategy": cfg.noise_strategy,
                          "device": device, "processes": ranks.world_size, "threads": torch.get_num_threads(),
                          "train_batch": self.batch_mode,
                          "patches_per_step": trainer.split.per_step, "studies": len(studies), "final": sum(s.clean for s in studies),
                          "label_names": names, **{k: v for k, v in row.items() if k != "epoch"}, "history": history,
                          "elapsed_s": round(time.time() - t_start, 1)}, ranks)
            logger.info(f"segmentation epoch {epoch}/{cfg.epochs} ({cfg.noise_strategy}): {row}")

        trainer.fit(studies, start_epoch=epoch, on_epoch=on_epoch)
        return self.stats()

    def _save_corrected(self, datastore: Datastore, studies: list[Study], names: dict, epoch: int, delta: float) -> None:
        for s in studies:
            if s.clean:
                continue
            fd, tmp = tempfile.mkstemp(suffix=".nii.gz", prefix="plc_")
            os.close(fd)
            try:
                write_like(s.view.to_native(s.label) if s.view else s.label, datastore.get_image_uri(s.id), tmp)
                datastore.save_label(s.id, tmp, PLC_TAG, {"label_names": names, "epoch": epoch, "delta": delta})
            finally:
                os.unlink(tmp)

    @staticmethod
    def _load_corrected(datastore: Datastore, studies: list[Study]) -> None:
        for s in studies:
            uri = None if s.clean else datastore.get_label_uri(s.id, PLC_TAG)
            if uri:
                label = np.rint(read_volume(uri).array).astype(np.int64)
                s.set_label(s.view.labels(label) if s.view else label)

