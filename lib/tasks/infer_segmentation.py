"""MONAI Label infer task ``segmentation``: the UNet published by the trainer ``segmentation``, run by
sliding-window inference on CPU or CUDA and hot-reloaded whenever a new model is published."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, Tuple

import numpy as np
import torch
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.intensity import normalise_study
from lib.io import read_volume
from lib.segmentation.postprocess import remove_fragments
from lib.segmentation.train import predict_probs
from lib.tasks.errors import ClientError
from lib.tasks.results import write_result
from lib.tasks.train_segmentation import load_segmentation


def _fraction(value: Any) -> float:
    """``min_component_fraction`` as a float in [0, 1], else ValueError saying what it means."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("'min_component_fraction' must be a number in [0, 1] (0 keeps every fragment, 1 only each "
                         f"class's largest component), got {value!r}")
    return fraction


class SegmentationInfer(InferTask):
    def __init__(self, model_path: str, min_component_fraction: float = 0.25):
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=None,
            dimension=3,
            description="3D UNet trained on the pre-labeled cohort (trainer 'segmentation')",
            config={"device": "cuda" if torch.cuda.is_available() else "cpu",
                    "min_component_fraction": _fraction(min_component_fraction)},
        )
        self.model_path = model_path
        self._model: tuple | None = None
        self._key: tuple | None = None
        self._lock = threading.Lock()

    def is_valid(self) -> bool:
        return True  # listed before training; a request then names the trainer to run

    def info(self) -> Dict[str, Any]:
        out = super().info()
        if os.path.exists(self.model_path):  # the classes of the published model (Slicer lists them)
            try:
                out["labels"] = self._load("cpu")[1]["label_names"]
            except Exception:  # a model being replaced: the next /info will have it
                pass
        return out

    def _load(self, device: str) -> tuple:
        if not os.path.exists(self.model_path):
            raise ClientError("no segmentation model yet: run the trainer 'segmentation' first (POST /train/segmentation)",
                              status_code=409)
        key = (os.stat(self.model_path).st_mtime_ns, device)
        with self._lock:
            if self._key != key:  # hot reload after (re)training
                self._model = load_segmentation(self.model_path, device)
                self._key = key
            return self._model

    def __call__(self, request: Dict[str, Any]) -> Tuple[str, Dict]:
        t0 = time.perf_counter()
        path = request.get("image")
        if not isinstance(path, str) or not os.path.exists(path):
            raise ClientError(f"image '{request.get('image')}' is not in the datastore", status_code=404)
        want = str(request.get("device", "cuda"))
        device = "cuda" if torch.cuda.is_available() and want.startswith("cuda") else "cpu"
        try:
            fraction = _fraction(request.get("min_component_fraction", self._config["min_component_fraction"]))
        except ValueError as e:
            raise ClientError(str(e)) from None
        net, meta = self._load(device)
        try:
            vol = read_volume(path)
        except ValueError as e:
            raise ClientError(f"the image could not be read: {e}", status_code=422) from None
        # the model's frame (RAS axes, its voxel size; lib/frame.py), the study normalised on its own (CT: the window)
        view = vol.view(meta["config"].spacing_mm)
        image = normalise_study(view.image(vol.array), *meta["window"])[0]
        probs = predict_probs(net, image, meta["config"], device)
        label = view.to_native(remove_fragments(probs, fraction).astype(np.uint8))
        out = write_result(request, label, prefix="seg_")
        return out, {"label_names": meta["label_names"], "device": device, "epoch": meta.get("epoch"),
                     "noise_strategy": meta.get("noise_strategy"),
                     "min_component_fraction": fraction, "seconds": round(time.perf_counter() - t0, 2)}
