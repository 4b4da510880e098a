"""Intensity normalisation to [0, 1] for CT and MR, per study.

CT intensities are Hounsfield units, the same on every scanner: a fixed piecewise-linear window
(``window_hu`` knots → ``window_out`` values, the app's ``geos.window_hu``) maps them to [0, 1].
MR intensities have no absolute scale (they change with the scanner, the sequence and the coil), so a
fixed HU window maps a whole MR study into a sliver of [0, 1]. An MR study is normalised from its own
statistics instead: its robust range (from the air to a high percentile of the body's voxels) → [0, 1].

:func:`modality_of` tells them apart from the intensities alone (a NIfTI file carries no modality):
CT has air at about −1000 HU, so a CT study (even a slab inside the body holds the lungs, bowel gas or
the air around the patient) has voxels below ``−ct_air_hu``; an MR magnitude image has none (small
negative values from reconstruction filters are far above it). A request or the image's info may
state the modality instead.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MODALITIES = ("CT", "MR")
CT_AIR_HU = 500.0  # a study with voxels below −CT_AIR_HU (0.1 % of them at least) is CT
MR_PERCENTILES = (0.5, 99.5)


def normalize_intensity(image: np.ndarray, window_in: Sequence[float], window_out: Sequence[float]) -> np.ndarray:
    """Piecewise-linear map of ``image`` through knots ``window_in`` → ``window_out``; float32."""
    return np.interp(image, window_in, window_out).astype(np.float32)


def _sample(array: np.ndarray, max_voxels: int = 2_000_000) -> np.ndarray:
    """A regular subsample of ``array``'s voxels (statistics of a 512 × 512 × 300 study in milliseconds)."""
    step = max(1, int(np.ceil((array.size / max_voxels) ** (1 / 3))))
    return np.asarray(array[::step, ::step, ::step] if array.ndim == 3 else array).ravel()


def modality_of(array: np.ndarray) -> str:
    """``"CT"`` when at least 0.1 % of the voxels are below −``CT_AIR_HU`` (air in HU), else ``"MR"``."""
    values = _sample(array)
    return "CT" if np.mean(values < -CT_AIR_HU) >= 1e-3 else "MR"


def study_window(
    array: np.ndarray,
    window_hu: Sequence[float],
    window_out: Sequence[float],
    modality: str | None = None,
    mr_percentiles: Sequence[float] = MR_PERCENTILES,
) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """The knots ``(window_in, window_out, modality)`` that normalise this study to [0, 1].

    CT: the HU window as given. MR: from the low percentile of all voxels (the air: 0 of a magnitude
    image) to the high percentile of the voxels above the background (the lowest 10 % of the intensity
    range) → 0 and 1. The low end is the air, not the body's darkest tissue: organs darker than fat
    (spleen, kidneys, vessels on a T1 study) must not be clipped to 0 together. ``modality`` None:
    :func:`modality_of`.
    """
    modality = (modality or modality_of(array)).upper()
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {list(MODALITIES)}, got {modality!r}")
    if modality == "CT":
        return tuple(float(x) for x in window_hu), tuple(float(x) for x in window_out), "CT"
    values = _sample(array).astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    body = values[values > lo + 0.1 * (hi - lo)]
    if body.size < 100:
        body = values
    a = float(np.percentile(values, mr_percentiles[0]))
    b = float(np.percentile(body, mr_percentiles[1]))
    if b <= a:
        b = a + 1.0
    return (a, b), (0.0, 1.0), "MR"


def normalise_study(array: np.ndarray, window_hu: Sequence[float], window_out: Sequence[float],
                    modality: str | None = None) -> tuple[np.ndarray, str]:
    """``array`` in [0, 1] (float32) by :func:`study_window`, and the modality used."""
    w_in, w_out, modality = study_window(array, window_hu, window_out, modality)
    return normalize_intensity(array, w_in, w_out), modality


def seed_window(study_range: Sequence[float], seed_values: np.ndarray, half_width: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The knots ``(window_in, window_out)`` of an MR crop around the structure being segmented.

    As the CT window gives soft tissue (−100…200 HU) the middle 0.6 of [0, 1] and compresses air, fat
    and bone, this one gives the intensities within ``half_width`` × the study's robust range
    (``study_range`` ``(lo, hi)``, :func:`study_window`) of the foreground seeds' median 0.2…0.8 and
    compresses the rest of the range into 0…0.2 and 0.8…1. MR has no fixed tissue intensities, so the
    seeds say where the structure lies on this study's scale.
    """
    lo, hi = float(study_range[0]), float(study_range[-1])
    r = max(hi - lo, 1e-6)
    m = float(np.median(seed_values)) if np.size(seed_values) else (lo + hi) / 2
    a = min(max(m - half_width * r, lo + 1e-3 * r), hi - 2e-3 * r)
    b = max(min(m + half_width * r, hi - 1e-3 * r), a + 1e-3 * r)
    return (lo, a, b, hi), (0.0, 0.2, 0.8, 1.0)
