"""Batch inference whose defaults work on a CPU host and use every GPU of a GPU host.

MONAI Label's :class:`BatchInferTask` defaults to ``multi_gpu: true, gpus: all`` and ``device:
cuda``; with no GPU the device list is empty and the request dies on a modulo by zero. Here the
defaults follow the host (multi-GPU and CUDA only when CUDA is present); explicit request values win.
MONAI Label hands the studies round-robin to the GPUs and runs ``max_workers`` of them at a time: by
default (``max_workers`` 0) one worker per GPU on a multi-GPU host, one otherwise. A study that fails is
logged with its id and answered as ``{"error": ...}`` in the batch's result; the others go on (MONAI
Label's one-worker loop stopped the whole batch at the first failure).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.batch_infer import BatchInferTask

from lib.tasks.jobs import job
from lib.threads import check_job_threads, job_threads, torch_threads

logger = logging.getLogger(__name__)


class HostAwareBatchInferTask(BatchInferTask):
    def __init__(self, multi_gpu: str | bool = "auto", max_workers: int = 0, model_dir: str = "", threads: int | str = "auto"):
        """``model_dir``: where the one-batch-job-at-a-time lock lives (see :mod:`lib.tasks.jobs`); ``threads``: the
        torch threads of a batch on the CPU (``job_threads``, :mod:`lib.threads`)."""
        super().__init__()
        self.model_dir = model_dir
        self.multi_gpu = multi_gpu
        self.max_workers = int(max_workers)
        self.threads = check_job_threads(threads)

    def defaults(self) -> Dict[str, Any]:
        cuda = torch.cuda.is_available()
        multi = cuda if self.multi_gpu in ("auto", None) else bool(self.multi_gpu) and cuda
        workers = self.max_workers or (torch.cuda.device_count() if multi else 1)
        return {"multi_gpu": multi, "device": "cuda" if cuda else "cpu", "max_workers": max(1, workers)}

    def __call__(self, request: Dict[str, Any], datastore: Datastore, infer: Callable):
        request = {**self.defaults(), **request}
        if not torch.cuda.is_available():
            # a request written for a GPU host must still run here
            request["multi_gpu"] = False
            if str(request.get("device", "cpu")).startswith("cuda"):
                request["device"] = "cpu"
        if request.get("multi_gpu") and str(request.get("gpus", "all")) not in ("", "all") and "max_workers" not in request:
            request["max_workers"] = len(str(request["gpus"]).split(","))

        def each(req: Dict[str, Any], store: Datastore) -> Dict[str, Any]:
            try:
                return infer(req, store)
            except Exception as e:  # noqa: BLE001 - one study must not stop the batch
                logger.error(f"batch: {req.get('_image_id')} failed: {type(e).__name__}: {e}")
                return {"error": f"{type(e).__name__}: {e}"}

        with torch_threads(job_threads(self.threads, str(request.get("device", "cpu")))):
            if not self.model_dir:
                return super().__call__(request, datastore, each)
            with job(self.model_dir, "batch", str(request.get("model", ""))):
                return super().__call__(request, datastore, each)
