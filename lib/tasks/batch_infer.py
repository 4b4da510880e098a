"""Batch inference whose defaults work on a CPU host.

MONAI Label's :class:`BatchInferTask` defaults to ``multi_gpu: true, gpus: all`` and ``device:
cuda``; with no GPU the device list is empty and the request dies on a modulo by zero. Here the
defaults follow the host (multi-GPU and CUDA only when CUDA is present); explicit request values win.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.batch_infer import BatchInferTask

from lib.tasks.jobs import job


class HostAwareBatchInferTask(BatchInferTask):
    def __init__(self, multi_gpu: str | bool = "auto", max_workers: int = 1, model_dir: str = ""):
        """``model_dir``: where the one-batch-job-at-a-time lock lives (see :mod:`lib.tasks.jobs`)."""
        super().__init__()
        self.model_dir = model_dir
        self.multi_gpu = multi_gpu
        self.max_workers = int(max_workers)

    def defaults(self) -> Dict[str, Any]:
        cuda = torch.cuda.is_available()
        multi = cuda if self.multi_gpu in ("auto", None) else bool(self.multi_gpu) and cuda
        return {"multi_gpu": multi, "device": "cuda" if cuda else "cpu", "max_workers": self.max_workers}

    def __call__(self, request: Dict[str, Any], datastore: Datastore, infer: Callable):
        request = {**self.defaults(), **request}
        if not torch.cuda.is_available():
            # a request written for a GPU host must still run here
            request["multi_gpu"] = False
            if str(request.get("device", "cpu")).startswith("cuda"):
                request["device"] = "cpu"
        if not self.model_dir:
            return super().__call__(request, datastore, infer)
        with job(self.model_dir, "batch", str(request.get("model", ""))):
            return super().__call__(request, datastore, infer)
