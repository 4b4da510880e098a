"""Patches of a volume around points: what PRNet sees, in training (pairs) and in propagation (support and query)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def extract_patches(volume: np.ndarray, centres: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """Patches ``(N, *patch)`` centred on integer ``centres`` ``(N, 3)``; zero outside the volume."""
    half = np.asarray(patch) // 2
    padded = np.pad(volume, [(h, h) for h in half], mode="constant")
    out = np.empty((len(centres), *patch), dtype=np.float32)
    for n, c in enumerate(np.asarray(centres, int)):
        lo = c  # the padded origin shifts by `half`, so lo = c - half + half
        out[n] = padded[lo[0] : lo[0] + patch[0], lo[1] : lo[1] + patch[1], lo[2] : lo[2] + patch[2]]
    return out
