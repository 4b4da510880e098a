"""What the two model-backed tasks share: where a model's files live, a published model that its infer task
hot-reloads, and a trainer that resumes and publishes atomically.

A model ``<name>`` (``prnet``, ``segmentation``) owns three files in the model folder (MONAI Label's
``<app>/model`` unless ``model_dir`` is set)::

    <name>.pt                   published weights + what they were trained with; its infer task reloads it
                                whenever the file changes (mtime), so a new publication is used at once
    <name>_checkpoint.pt        the trainer's state (weights, optimizers, step or epoch): a run resumes from it
    train_stats_<name>.json     the trainer's progress (MONAI Label's ``/info`` shows it)

:class:`ModelFiles` is the one place these names are spelled; ``apps/oneshot/main.py`` builds one per model
and hands it to both its infer and its train task.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generic, TypeVar

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from lib.atomic import atomic_torch_save, atomic_write_json
from lib.config import is_true
from lib.tasks.errors import ClientError
from lib.tasks.jobs import job

M = TypeVar("M")


@dataclass(frozen=True)
class ModelFiles:
    """The files of model ``name`` in ``model_dir`` (see the module's docstring)."""

    model_dir: str
    name: str

    @property
    def published(self) -> str:
        return os.path.join(self.model_dir, f"{self.name}.pt")

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.model_dir, f"{self.name}_checkpoint.pt")

    @property
    def stats(self) -> str:
        return os.path.join(self.model_dir, f"train_stats_{self.name}.json")


def pick_device(request: Dict[str, Any] | None = None) -> str:
    """``cuda`` when present and the request does not ask for ``device: cpu``; else ``cpu``."""
    want = str((request or {}).get("device", "cuda"))
    return "cuda" if torch.cuda.is_available() and want.startswith("cuda") else "cpu"


class PublishedModel(Generic[M]):
    """The published model of ``files``, loaded by ``load(path, device)`` once per file version and device
    (thread-safe): a new publication by the trainer is picked up by the next request."""

    def __init__(self, files: ModelFiles, load: Callable[[str, str], M], missing: str):
        self.files, self._load, self._missing = files, load, missing
        self._model: M | None = None
        self._key: tuple | None = None
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return os.path.exists(self.files.published)

    def get(self, device: str) -> tuple[M, int]:
        """``(model, version)``; the version (the file's mtime in ns) changes with every publication.

        Raises:
            ClientError: 409 with ``missing`` (what to run first) when nothing is published yet.
        """
        if not self.exists():
            raise ClientError(self._missing, status_code=409)
        key = (os.stat(self.files.published).st_mtime_ns, device)
        with self._lock:
            if self._key != key:
                self._model = self._load(self.files.published, device)
                self._key = key
            return self._model, key[0]  # type: ignore[return-value]


class ModelInferTask(InferTask):
    """An infer task backed by a trained, published model (:class:`PublishedModel`): listed before training
    (a request then says which trainer to run), the request's image checked, the device picked."""

    def __init__(self, model: PublishedModel, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def is_valid(self) -> bool:
        return True

    @staticmethod
    def image_path(request: Dict[str, Any]) -> str:
        path = request.get("image")
        if not isinstance(path, str) or not os.path.exists(path):
            raise ClientError(f"image '{request.get('image')}' is not in the datastore", status_code=404)
        return path


class ResumableTrainTask(TrainTask):
    """A trainer of one model (:class:`ModelFiles`): one job at a time on the model folder, resumes from its
    checkpoint unless the request says ``restart``, publishes and writes its stats atomically."""

    def __init__(self, description: str, files: ModelFiles):
        super().__init__(description)
        self.files = files
        self.model_dir = files.model_dir

    def stats(self) -> Dict[str, Any]:
        if os.path.exists(self.files.stats):
            with open(self.files.stats) as f:
                return json.load(f)
        return {}

    def request_keys(self) -> set[str]:
        """The keys a train request may hold: this trainer's ``config()`` and ``seed``."""
        return {*self.config(), "seed"}

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        """Train (one training job at a time on this model folder; see :mod:`lib.tasks.jobs`)."""
        with job(self.model_dir, "train", self.files.name):
            os.makedirs(self.model_dir, exist_ok=True)
            return self.train(request, datastore)

    def train(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        raise NotImplementedError

    def resume_from(self, request: Dict[str, Any], device: str) -> dict | None:
        """The checkpoint to go on from, or None (none yet, or the request says ``restart``)."""
        if is_true(request.get("restart", False)) or not os.path.exists(self.files.checkpoint):
            return None
        return torch.load(self.files.checkpoint, map_location=device, weights_only=False)

    def save(self, checkpoint: dict, published: dict, stats: dict) -> None:
        """Checkpoint, then publish (the infer task reloads it), then the stats: each file written atomically."""
        atomic_torch_save(checkpoint, self.files.checkpoint)
        atomic_torch_save(published, self.files.published)
        atomic_write_json(self.files.stats, {"model": self.files.name, **stats, "published": self.files.published})
