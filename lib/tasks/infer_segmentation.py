"""MONAI Label infer task ``segmentation``: the UNet published by the trainer ``segmentation``, run by
sliding-window inference on CPU or CUDA and hot-reloaded whenever a new model is published."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import Any, Dict, Tuple

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.io import read_volume
from lib.segmentation.checkpoint import load_unet
from lib.segmentation.postprocess import remove_fragments
from lib.segmentation.predict import StudyProbabilities, study_probabilities
from lib.tasks.errors import ClientError
from lib.tasks.models import ModelFiles, ModelInferTask, PublishedModel, pick_device
from lib.tasks.results import write_result


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


def _label(probs: StudyProbabilities, fraction: float) -> np.ndarray:
    """The label of ``probs`` on the study's own grid: argmax without the fragments below ``fraction``."""
    return probs.view.to_native(remove_fragments(probs.probs, fraction).astype(np.uint8))


class SegmentationInfer(ModelInferTask):
    def __init__(self, files: ModelFiles, min_component_fraction: float = 0.25):
        super().__init__(
            PublishedModel(files, load_unet, "no segmentation model yet: run the trainer 'segmentation' first "
                                             "(POST /train/segmentation)"),
            type=InferType.SEGMENTATION,
            labels=None,
            dimension=3,
            description="3D UNet trained on the pre-labeled cohort (trainer 'segmentation')",
            config={"device": pick_device(), "min_component_fraction": _fraction(min_component_fraction)},
        )
        self._cache: dict[tuple[str, int], tuple[np.ndarray, Dict[str, int], StudyProbabilities]] = {}  # _cached's
        self._cache_lock = threading.Lock()

    def info(self) -> Dict[str, Any]:
        out = super().info()
        if self.model.exists():  # the classes of the published model (Slicer lists them)
            try:
                out["labels"] = self.model.get("cpu")[0].label_names
            except Exception:  # a model being replaced: the next /info will have it
                pass
        return out

    def __call__(self, request: Dict[str, Any]) -> Tuple[str, Dict]:
        t0 = time.perf_counter()
        path = self.image_path(request)
        device = pick_device(request)
        try:
            fraction = _fraction(request.get("min_component_fraction", self._config["min_component_fraction"]))
        except ValueError as e:
            raise ClientError(str(e)) from None
        cached = False
        if fraction == self._config["min_component_fraction"] and device == pick_device({}):
            # the app's defaults: the label the corrections also start from, computed once per study and model
            model = self.model.get(device)[0]  # 409 with what to run first while nothing is published
            (label, _, _), cached = self._cached_entry(path)
        else:
            label, model, _ = self._predict(path, device, fraction)
        out = write_result(request, label, prefix="seg_")
        return out, {"label_names": model.label_names, "device": device, "epoch": model.epoch,
                     "noise_strategy": model.noise_strategy, "min_component_fraction": fraction, "cached": cached,
                     "seconds": round(time.perf_counter() - t0, 2)}

    def _predict(self, path: str, device: str, fraction: float):
        """``(label on the study's grid, the model, its version)`` for the study at ``path``."""
        probs, model, version = self._probabilities(path, device)
        return _label(probs, fraction), model, version

    def _probabilities(self, path: str, device: str):
        """``(StudyProbabilities on the model's canonical grid (float32), the model, its version)`` for the study at
        ``path``."""
        model, version = self.model.get(device)
        try:
            vol = read_volume(path)
        except ValueError as e:
            raise ClientError(f"the image could not be read: {e}", status_code=422) from None
        return study_probabilities(model, vol, device), model, version

    def _cached(self, image_path: str) -> tuple[np.ndarray, Dict[str, int], StudyProbabilities]:
        """The published model's label of a study, its ``{name: id}`` and its probabilities, computed once per study
        and model version (each stroke of a correction asks again); :class:`ClientError` while no model is
        published."""
        return self._cached_entry(image_path)[0]

    def _cached_entry(self, image_path: str) -> tuple[tuple[np.ndarray, Dict[str, int], StudyProbabilities], bool]:
        """:meth:`_cached`'s entry and whether it was held already."""
        if not self.model.exists():
            raise ClientError("no segmentation model yet", status_code=404)
        device = pick_device({})
        version = self.model.get(device)[1]
        key = (os.path.realpath(image_path), version)
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit, True
        probs, model, version = self._probabilities(image_path, device)
        label = _label(probs, self._config["min_component_fraction"])
        hit = (label, dict(model.label_names), replace(probs, probs=probs.probs.astype(np.float16)))  # half the memory
        with self._cache_lock:
            self._cache = {k: v for k, v in list(self._cache.items())[-3:]}  # the last few studies
            self._cache[(key[0], version)] = hit
        return hit, False

    def predict_label(self, image_path: str) -> tuple[np.ndarray, Dict[str, int]]:
        """The published model's label of the study at ``image_path`` and its ``{name: id}`` (cached per study and
        model version); :class:`ClientError` while no model is published."""
        label, names, _ = self._cached(image_path)
        return label, names

    def probabilities(self, image_path: str) -> StudyProbabilities | None:
        """The published model's class probabilities of the study (cached with :meth:`predict_label`); None while no
        model is published."""
        try:
            return self._cached(image_path)[2]
        except ClientError:
            return None
