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

import hashlib
import json
import logging
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
from lib.distributed import Ranks, spawn
from lib.tasks.errors import ClientError
from lib.tasks.jobs import die_with_parent, job
from lib.tasks.params import number
from lib.threads import check_job_threads, job_threads, torch_threads, usable_cpus

logger = logging.getLogger(__name__)

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
    (thread-safe; one copy per device, so batch pre-labeling on several GPUs does not reload): a new
    publication by the trainer is picked up by the next request."""

    def __init__(self, files: ModelFiles, load: Callable[[str, str], M], missing: str):
        self.files, self._load, self._missing = files, load, missing
        self._models: dict[str, tuple[int, M]] = {}  # device -> (version, model)
        self._digests: dict[int, str] = {}  # version -> sha256 of the file
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
        version = os.stat(self.files.published).st_mtime_ns
        with self._lock:
            held = self._models.get(device)
            if held is None or held[0] != version:
                held = (version, self._load(self.files.published, device))
                self._models[device] = held
            return held[1], version

    def digest(self, version: int) -> str:
        """The first 16 hex digits of the sha256 of the published file of ``version`` (hashed once): the
        model's identity across hosts and copies, recorded with every draft it makes."""
        with self._lock:
            if version not in self._digests:
                with open(self.files.published, "rb") as f:
                    self._digests[version] = hashlib.sha256(f.read()).hexdigest()[:16]
            return self._digests[version]


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


#: what a train request says about where it runs (MONAI Label's keys, and ``processes`` on a CPU host)
PARALLEL_DEFAULTS = {"multi_gpu": True, "gpus": "all", "processes": 1}


def train_processes(request: Dict[str, Any]) -> tuple[int, list[int]]:
    """``(processes, gpus)`` of a train request, as MONAI Label's own trainers read it.

    On a CUDA host: ``multi_gpu`` (default true) with ``gpus`` (``all`` or ``"0,1"``) gives one process per
    GPU when that is two or more, else one process on the first of them. On a CPU host: ``processes``
    (default 1) gloo processes; ``multi_gpu`` has nothing to spread over there.

    Raises:
        ClientError: for a GPU that does not exist or a ``processes`` outside 1 .. the CPU count.
    """
    if torch.cuda.is_available() and str(request.get("device", "cuda")).startswith("cuda"):
        count = torch.cuda.device_count()
        wanted = str(request.get("gpus", "all") or "all")
        try:
            gpus = list(range(count)) if wanted == "all" else [int(g) for g in wanted.split(",") if g.strip()]
        except ValueError:
            raise ClientError(f"gpus must be 'all' or a list of GPU indices like '0,1', got {wanted!r}") from None
        if not gpus or any(g < 0 or g >= count for g in gpus):
            raise ClientError(f"gpus {wanted!r}: this host has GPUs 0..{count - 1}")
        if is_true(request.get("multi_gpu", True)) and len(gpus) > 1:
            return len(gpus), gpus
        return 1, gpus[:1]
    n = number(request, "processes", 1, 1, usable_cpus(), integer=True)
    return n, []


class ResumableTrainTask(TrainTask):
    """A trainer of one model (:class:`ModelFiles`): one job at a time on the model folder, resumes from its
    checkpoint unless the request says ``restart``, publishes and writes its stats atomically.

    Data parallel (:mod:`lib.distributed`): a request for several processes (:func:`train_processes`)
    spawns them on this host and each runs :meth:`train` with its :class:`~lib.distributed.Ranks`;
    ``torchrun`` reaches the same :meth:`train` from :mod:`lib.cluster`. Rank 0 alone writes the files.
    """

    def __init__(self, description: str, files: ModelFiles, threads: int | str = "auto"):
        """``threads``: the torch threads of a run on the CPU (``job_threads``, :mod:`lib.threads`: by default
        one core stays free for the server's interactive requests)."""
        super().__init__(description)
        self.files = files
        self.model_dir = files.model_dir
        self.threads = check_job_threads(threads)

    def stats(self) -> Dict[str, Any]:
        if os.path.exists(self.files.stats):
            with open(self.files.stats) as f:
                return json.load(f)
        return {}

    def config(self) -> Dict[str, Any]:
        return {}

    def request_keys(self) -> set[str]:
        """The keys a train request may hold: this trainer's ``config()``, ``seed`` and where it runs."""
        return {*self.config(), "seed", "multi_gpu", "gpus", "processes"}

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        """Train (one training job at a time on this model folder; see :mod:`lib.tasks.jobs`), in one process
        or in one per GPU (per CPU ``processes``) of this host."""
        with job(self.model_dir, "train", self.files.name):
            os.makedirs(self.model_dir, exist_ok=True)
            nprocs, gpus = train_processes(request)
            threads = job_threads(self.threads, "cuda" if gpus else "cpu")  # no GPU listed: the CPU trains
            if nprocs == 1:
                device = f"cuda:{gpus[0]}" if gpus else pick_device(request)
                with torch_threads(threads):
                    return self.train(request, datastore, Ranks(device=device))
            self.validate(request, datastore)  # a bad request fails here, with its 4xx, not in every worker
            logger.info(f"{self.files.name}: training in {nprocs} processes ({'GPUs ' + str(gpus) if gpus else 'CPU, gloo'})")
            spawn(self._rank_main, nprocs, (request, datastore), gpus, threads)
            return self.stats()

    def _rank_main(self, ranks: Ranks, request: Dict[str, Any], datastore: Datastore) -> None:
        die_with_parent()  # a worker ends with the job process that spawned it (and that one with the server)
        self.train(request, datastore, ranks)

    def validate(self, request: Dict[str, Any], datastore: Datastore) -> Any:
        raise NotImplementedError

    def train(self, request: Dict[str, Any], datastore: Datastore, ranks: Ranks | None = None) -> Dict[str, Any]:
        """Train as process ``ranks`` (None: the only one, on :func:`pick_device`'s device)."""
        raise NotImplementedError

    def resume_from(self, request: Dict[str, Any], device: str) -> dict | None:
        """The checkpoint to go on from, or None (none yet, or the request says ``restart``)."""
        if is_true(request.get("restart", False)) or not os.path.exists(self.files.checkpoint):
            return None
        return torch.load(self.files.checkpoint, map_location=device, weights_only=False)

    def save(self, checkpoint: dict, published: dict, stats: dict, ranks: Ranks = Ranks()) -> None:
        """Checkpoint, then publish (the infer task reloads it), then the stats: each file written atomically,
        by rank 0 alone."""
        if not ranks.main:
            return
        atomic_torch_save(checkpoint, self.files.checkpoint)
        atomic_torch_save(published, self.files.published)
        atomic_write_json(self.files.stats, {"model": self.files.name, **stats, "published": self.files.published})
