"""Training volumes and class-balanced patch sampling (MONAI ``RandCropByLabelClassesd``).

Arrays are ``(I, J, K)`` on each study's canonical grid (:mod:`lib.frame`); images normalised to [0, 1];
labels integer class ids ``0..C-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from monai.transforms import ClassesToIndices, RandCropByLabelClassesd, SpatialPadd

from lib.frame import View


@dataclass
class Study:
    id: str
    image: np.ndarray  # (I, J, K) float32 in [0, 1]
    label: np.ndarray  # (I, J, K) int, 0..C-1: the draft (noisy) or final (clean) label
    clean: bool = False  # a `final` label: used as MCPM's meta set and never corrected by PLC
    view: View | None = None  # how the stored study maps to these arrays (the canonical frame; None: as stored)
    _indices: list | None = field(default=None, repr=False)

    def set_label(self, label: np.ndarray) -> None:
        self.label = label
        self._indices = None


class PatchSampler:
    """Random patches centred on a voxel of a randomly chosen class: background with weight
    ``background_ratio``, each organ with weight 1, so small organs are seen as often as the liver.
    Volumes smaller than a patch are zero-padded."""

    def __init__(self, patch_size: tuple[int, int, int], num_classes: int, seed: int = 0, background_ratio: float = 1.0):
        if not background_ratio > 0:
            raise ValueError(f"background_ratio must be > 0, got {background_ratio}")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.num_classes = num_classes
        self.rng = np.random.default_rng(seed)
        self._to_indices = ClassesToIndices(num_classes=num_classes)
        self._pad = SpatialPadd(keys=("image", "label"), spatial_size=self.patch_size)
        self._crop = RandCropByLabelClassesd(
            keys=("image", "label"), label_key="label", spatial_size=self.patch_size, num_classes=num_classes,
            num_samples=1, indices_key="indices", allow_smaller=True, warn=False,
            ratios=[float(background_ratio)] + [1.0] * (num_classes - 1),
        )
        self._crop.set_random_state(seed=seed)

    def _padded(self, study: Study) -> dict:
        if study._indices is None:
            padded = self._pad({"image": study.image[None], "label": study.label[None].astype(np.int64)})
            padded["indices"] = self._to_indices(padded["label"])
            study._indices = [padded]
        return study._indices[0]

    def sample(self, studies: list[Study], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` patches from randomly chosen ``studies``: image ``(n, 1, *patch)`` float, label ``(n, 1, *patch)`` long."""
        xs, ys = [], []
        for i in self.rng.integers(0, len(studies), size=n):
            d = self._padded(studies[int(i)])
            crop = self._crop({"image": d["image"], "label": d["label"], "indices": d["indices"]})[0]
            xs.append(torch.as_tensor(np.asarray(crop["image"]), dtype=torch.float32))
            ys.append(torch.as_tensor(np.asarray(crop["label"]), dtype=torch.long))
        return torch.stack(xs), torch.stack(ys)
