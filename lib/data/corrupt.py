"""Synthetic label noise, MCPM's protocol (Wang et al., §4.1), for the noise-robustness benchmark.

Corruption is applied per organ instance (one organ of one study): ``dilate`` grows the organ's mask
by a random 0–6 voxels (a loose contour; it overwrites whatever it covers), ``elastic`` moves it by a
random rotation, translation, scaling and elastic warp (MONAI ``Rand3DElastic``, nearest neighbour).
Label maps are ``(I, J, K)`` integer arrays, 0 = background.
"""

from __future__ import annotations

import math

import numpy as np
from monai.transforms import Rand3DElastic
from scipy import ndimage


def dilate_organ(label: np.ndarray, organ: int, rng: np.random.Generator, max_vox: int = 6) -> np.ndarray:
    """``label`` with organ ``organ`` dilated by a random ``0..max_vox`` voxels (26-connected steps)."""
    n = int(rng.integers(0, max_vox + 1))
    out = label.copy()
    if n:
        grown = ndimage.binary_dilation(label == organ, structure=np.ones((3, 3, 3), bool), iterations=n)
        out[grown] = organ
    return out


def deform_organ(label: np.ndarray, organ: int, rng: np.random.Generator) -> np.ndarray:
    """``label`` with organ ``organ`` moved by a random affine + elastic warp; its old voxels become background."""
    warp = Rand3DElastic(
        sigma_range=(5.0, 7.0), magnitude_range=(50.0, 100.0), prob=1.0,
        rotate_range=(math.radians(10),) * 3, translate_range=(4.0, 4.0, 4.0), scale_range=(0.1,) * 3,
        mode="nearest", padding_mode="zeros",
    )
    warp.set_random_state(seed=int(rng.integers(0, 2**31)))
    moved = np.asarray(warp((label == organ)[None].astype(np.float32)))[0] > 0.5
    out = label.copy()
    out[label == organ] = 0
    out[moved] = organ
    return out


def corrupt_labels(
    labels: dict[str, np.ndarray], organs: list[int], rate: float, kind: str, seed: int = 0
) -> tuple[dict[str, np.ndarray], list[tuple[str, int]]]:
    """Corrupt ``rate`` (0–1) of the organ instances of ``labels`` (``{study: (I, J, K)}``) with ``kind``
    (``dilate`` | ``elastic``); returns the new maps and the ``(study, organ)`` instances corrupted."""
    if kind not in ("dilate", "elastic"):
        raise ValueError(f"unknown corruption '{kind}' (dilate | elastic)")
    rng = np.random.default_rng(seed)
    instances = [(s, o) for s in sorted(labels) for o in organs]
    chosen = [instances[i] for i in sorted(rng.choice(len(instances), int(round(rate * len(instances))), replace=False))]
    out = {s: v.copy() for s, v in labels.items()}
    for s, o in chosen:
        out[s] = dilate_organ(out[s], o, rng) if kind == "dilate" else deform_organ(out[s], o, rng)
    return out, chosen
