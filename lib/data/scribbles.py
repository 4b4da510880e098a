"""Deterministic simulated scribbles, as an annotator would draw them on axial slices.

Foreground: on a few axial slices spread over each organ's extent, one stroke along the organ's
principal in-slice axis through its innermost point, kept ``erosion_vox`` inside the organ.
Background: on the same slices, a ring at ``ring_vox`` around each organ, clipped to the body and kept
``margin_vox`` (3D) away from every organ.

Volumes are ``(I, J, K)`` with ``K`` the axial axis; distances are in voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class ScribbleConfig:
    slices_per_organ: int = 3
    erosion_vox: int = 2
    stroke_width_vox: int = 1
    background_margin_vox: int = 4
    background_ring_vox: int = 6
    body_threshold_hu: float = -500.0

    @classmethod
    def from_dict(cls, d: Mapping) -> "ScribbleConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def organ_slices(mask: np.ndarray, n: int) -> list[int]:
    """``n`` axial indices spread over the extent of ``mask`` (``(I, J, K)``), at quantiles (i+1)/(n+1)."""
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    if ks.size == 0:
        return []
    picks = [ks[int(round((i + 1) / (n + 1) * (ks.size - 1)))] for i in range(n)]
    return sorted(set(int(k) for k in picks))


def _largest_component(m: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(m)
    if n <= 1:
        return m
    sizes = ndi.sum(m, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def stroke_in_slice(region: np.ndarray, erosion_vox: int, width_vox: int) -> np.ndarray:
    """One stroke inside a 2D ``region`` ``(I, J)``: its principal axis through its innermost point.

    Erosion is reduced (down to 0) when the region is too thin; returns an empty mask when the region
    is empty. Every returned voxel lies in ``region``.
    """
    out = np.zeros(region.shape, dtype=bool)
    if not region.any():
        return out
    for e in range(erosion_vox, -1, -1):
        core = ndi.binary_erosion(region, iterations=e) if e else region.copy()
        if core.any():
            break
    core = _largest_component(core)
    pts = np.argwhere(core).astype(np.float64)
    dist = ndi.distance_transform_edt(core)
    anchor = np.array(np.unravel_index(int(np.argmax(dist)), core.shape), dtype=np.float64)
    if len(pts) >= 2:
        cov = np.cov((pts - pts.mean(axis=0)).T)
        direction = np.linalg.eigh(cov)[1][:, -1]
    else:
        direction = np.array([1.0, 0.0])
    # walk both ways from the anchor along the principal axis while inside the core
    line = [anchor.astype(int)]
    for sign in (1.0, -1.0):
        t = 0.5
        while True:
            p = np.rint(anchor + sign * t * direction).astype(int)
            if np.any(p < 0) or np.any(p >= core.shape) or not core[p[0], p[1]]:
                break
            line.append(p)
            t += 0.5
    for p in line:
        out[p[0], p[1]] = True
    if width_vox > 0:
        out = ndi.binary_dilation(out, iterations=width_vox) & core
    return out


def simulate_scribbles(
    label: np.ndarray,
    image: np.ndarray,
    organ_ids: Mapping[str, int],
    background_id: int,
    cfg: ScribbleConfig = ScribbleConfig(),
) -> np.ndarray:
    """Scribbles for every organ of ``label`` plus background strokes.

    Args:
        label: ``(I, J, K)`` organ label map (0 = none).
        image: ``(I, J, K)`` CT in HU, used only to keep background strokes inside the body.
        organ_ids: ``{name: id}`` of the organs to scribble.
        background_id: value written for background strokes (must differ from every organ id).
        cfg: stroke geometry.

    Returns:
        ``(I, J, K)`` ``uint8``: 0 = no scribble, organ ids, ``background_id``.
    """
    if label.shape != image.shape:
        raise ValueError(f"label {label.shape} and image {image.shape} differ in shape")
    if background_id in organ_ids.values():
        raise ValueError(f"background id {background_id} collides with an organ id")
    scribbles = np.zeros(label.shape, dtype=np.uint8)
    any_organ = np.isin(label, list(organ_ids.values()))
    # background may be drawn where it is at least `margin` (3D) away from every organ, inside the body
    far = ndi.distance_transform_edt(~any_organ) > cfg.background_margin_vox
    body = image > cfg.body_threshold_hu
    for k in range(body.shape[2]):
        body[:, :, k] = ndi.binary_fill_holes(body[:, :, k])
    allowed_bg = far & body

    for organ_id in organ_ids.values():
        mask = label == organ_id
        slices = organ_slices(mask, cfg.slices_per_organ)
        for k in slices:
            stroke = stroke_in_slice(mask[:, :, k], cfg.erosion_vox, cfg.stroke_width_vox)
            scribbles[:, :, k][stroke] = organ_id
        if slices:
            k = slices[len(slices) // 2]
            d = ndi.distance_transform_edt(~mask[:, :, k])
            ring = (d >= cfg.background_ring_vox) & (d < cfg.background_ring_vox + 1.5) & allowed_bg[:, :, k]
            free = scribbles[:, :, k] == 0
            scribbles[:, :, k][ring & free] = background_id
    return scribbles
