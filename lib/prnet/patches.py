"""Patches of a volume around points: what PRNet sees, in training (pairs) and in propagation (support and query)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def extract_patches(volume: np.ndarray, centres: np.ndarray, patch: Sequence[int], windows: np.ndarray | None = None) -> np.ndarray:
    """Patches ``(N, *patch)`` centred on integer ``centres`` ``(N, 3)``; zero outside the volume, and with
    ``windows`` ``(N, 3, 2)`` (per patch and axis, ``[lo, hi)`` in patch voxels, :func:`patch_windows`) zero
    outside each patch's window too."""
    half = np.asarray(patch) // 2
    padded = np.pad(volume, [(h, h) for h in half], mode="constant")
    out = np.empty((len(centres), *patch), dtype=np.float32)
    for n, c in enumerate(np.asarray(centres, int)):
        lo = c  # the padded origin shifts by `half`, so lo = c - half + half
        out[n] = padded[lo[0] : lo[0] + patch[0], lo[1] : lo[1] + patch[1], lo[2] : lo[2] + patch[2]]
        if windows is not None:
            (a0, a1), (b0, b1), (c0, c1) = windows[n]
            kept = out[n, a0:a1, b0:b1, c0:c1].copy()
            out[n] = 0.0
            out[n, a0:a1, b0:b1, c0:c1] = kept
    return out


def patch_windows(shape: Sequence[int], centres: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """Which part of each patch of :func:`extract_patches` lies inside a volume of ``shape``: ``(N, 3, 2)``,
    per patch and axis the ``[lo, hi)`` patch voxels (the whole ``[0, patch)`` for a patch inside it)."""
    c = np.asarray(centres, int).reshape(-1, 3)
    start = c - np.asarray(patch) // 2  # volume index of each patch's first voxel
    lo = np.clip(-start, 0, np.asarray(patch))
    hi = np.clip(np.asarray(shape) - start, 0, np.asarray(patch))
    return np.stack([lo, hi], axis=-1)


def common_windows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The part of the patch window two volumes both show: the intersection of :func:`patch_windows` ``(N, 3, 2)``."""
    lo = np.maximum(a[..., 0], b[..., 0])
    return np.stack([lo, np.maximum(lo, np.minimum(a[..., 1], b[..., 1]))], axis=-1)


def changed_by_blanking(volume: np.ndarray, centres: np.ndarray, patch: Sequence[int], windows: np.ndarray) -> np.ndarray:
    """Bool ``(N,)``: whether the patch of :func:`extract_patches` around each centre holds a non-zero voxel outside
    its window ``(N, 3, 2)``, i.e. whether blanking it to the window changes it."""
    whole = extract_patches(volume, centres, patch)
    return np.array([np.count_nonzero(w) != np.count_nonzero(w[a0:a1, b0:b1, c0:c1])
                     for w, ((a0, a1), (b0, b1), (c0, c1)) in zip(whole, windows)], dtype=bool)
