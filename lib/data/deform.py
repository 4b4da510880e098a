"""Pseudo-subjects from one subject: a random smooth warp plus intensity jitter.

The image and its label map are resampled through the *same* displacement field (MONAI
``Rand3DElasticd``: affine and elastic parts composed, one resampling), bilinear for the image and
nearest-neighbour for the labels, so they stay aligned by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from monai.transforms import (
    Compose,
    Rand3DElasticd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from lib.config import ConfigError, from_section


@dataclass(frozen=True)
class DeformConfig:
    """Ranges of the random warp (voxel units, degrees) and of the HU jitter."""

    rotate_deg: Sequence[float] = (4.0, 4.0, 10.0)
    scale: float = 0.08
    translate_vox: Sequence[float] = (5.0, 5.0, 3.0)
    elastic_sigma_vox: Sequence[float] = (6.0, 8.0)
    elastic_magnitude_vox: Sequence[float] = (60.0, 120.0)
    intensity_scale: float = 0.05
    intensity_shift_hu: float = 20.0
    noise_sd_hu: float = 10.0
    background_hu: float = field(default=-1024.0)

    @classmethod
    def from_cohort_config(cls, deformation: Mapping, intensity: Mapping) -> "DeformConfig":
        """From the ``deformation`` and ``intensity`` sections of ``configs/sample_cohort.yaml`` (every key checked)."""
        renamed = {"scale": "intensity_scale", "shift_hu": "intensity_shift_hu", "noise_sd_hu": "noise_sd_hu"}
        unknown = sorted(set(intensity) - set(renamed))
        if unknown:
            raise ConfigError(f"unknown key '{unknown[0]}' in 'intensity'; known: {', '.join(sorted(renamed))}")
        return from_section(cls, {**deformation, **{renamed[k]: v for k, v in intensity.items()}}, "deformation")


def _warp(cfg: DeformConfig) -> Rand3DElasticd:
    return Rand3DElasticd(
        keys=("image", "label"),
        sigma_range=tuple(cfg.elastic_sigma_vox),
        magnitude_range=tuple(cfg.elastic_magnitude_vox),
        prob=1.0,
        rotate_range=tuple(math.radians(a) for a in cfg.rotate_deg),
        scale_range=(cfg.scale,) * 3,
        translate_range=tuple(cfg.translate_vox),
        mode=("bilinear", "nearest"),
        padding_mode=("border", "zeros"),
    )


def deform_pair(
    image: np.ndarray, label: np.ndarray, cfg: DeformConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` and ``label`` with one random field and jitter the image's intensities.

    Args:
        image: ``(I, J, K)`` CT in HU.
        label: ``(I, J, K)`` integer label map aligned with ``image``.
        cfg: ranges of the warp and the jitter.
        seed: the output is a deterministic function of ``(image, label, cfg, seed)``.

    Returns:
        ``(image, label)`` on the same grid: ``float32`` HU and ``uint8`` labels.
    """
    if image.shape != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape} differ in shape")
    data = {"image": image[None].astype(np.float32), "label": label[None].astype(np.float32)}
    warp = _warp(cfg)
    warp.set_random_state(seed=seed)
    data = warp(data)

    jitter = Compose(
        [
            RandScaleIntensityd(keys="image", factors=cfg.intensity_scale, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=cfg.intensity_shift_hu, prob=1.0),
            RandGaussianNoised(keys="image", std=cfg.noise_sd_hu, prob=1.0),
        ]
    )
    jitter.set_random_state(seed=seed + 1)
    data = jitter(data)

    out_image = np.asarray(data["image"][0], dtype=np.float32)
    out_label = np.rint(np.asarray(data["label"][0])).astype(np.uint8)
    return out_image, out_label


def source_coordinates(shape: Sequence[int], cfg: DeformConfig, seed: int) -> np.ndarray:
    """Where each voxel of the pseudo-subject made by :func:`deform_pair` (same ``cfg``, ``seed``, ``shape``)
    comes from in the source volume: ``(3, I, J, K)`` float voxel indices (the true correspondence, for
    evaluating propagation; the identity grid warped by the same random field)."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    warp = _warp(cfg)
    warp.set_random_state(seed=seed)
    return np.asarray(warp({"image": grid, "label": np.zeros((1, *shape), np.float32)})["image"], dtype=np.float32)


def locate_in_pseudo(points: np.ndarray, source_coords: np.ndarray) -> np.ndarray:
    """The pseudo-subject voxels ``(N, 3)`` that came from the source ``points`` ``(N, 3)`` (nearest match
    in :func:`source_coordinates`; voxel indices)."""
    from scipy.spatial import cKDTree

    flat = source_coords.reshape(3, -1).T
    _, idx = cKDTree(flat).query(np.asarray(points, float))
    return np.stack(np.unravel_index(idx, source_coords.shape[1:]), axis=1)
