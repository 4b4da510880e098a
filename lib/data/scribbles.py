"""Deterministic simulated scribbles, as an annotator would draw them on axial slices.

Foreground: on a few axial slices spread over each organ's extent, one stroke along the organ's
in-slice medial axis (the longest path through the skeleton of its largest cross-section, as a hand
drags along the middle of an organ; skeleton strokes are the usual simulation of scribbles), kept
``erosion_vox`` inside the organ where it is thick enough. Background: on every scribbled slice of an
organ, a ring at ``ring_vox`` around it, clipped to the body and kept ``margin_vox`` (3D) away from every
organ.

Volumes are ``(I, J, K)`` with ``K`` the axial axis; distances are in voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.morphology import skeletonize

from lib.frame import View


@dataclass(frozen=True)
class ScribbleConfig:
    slices_per_organ: int = 3
    erosion_vox: int = 2
    stroke_width_vox: int = 1
    background_margin_vox: int = 3
    background_ring_vox: int = 5
    body_threshold_hu: float = -500.0


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


def longest_skeleton_path(skeleton: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """The longest shortest path ``(N, 2)`` through the 8-connected pixels of a 2D ``skeleton``.

    Two sweeps of Dijkstra (from ``start``, a skeleton pixel, to the farthest pixel ``a``; from ``a`` to
    the farthest ``b``): the exact diameter on a tree, a close one on a skeleton with loops. Path lengths
    are in pixels (diagonal steps √2).
    """
    pts = np.argwhere(skeleton)
    index = -np.ones(skeleton.shape, int)
    index[tuple(pts.T)] = np.arange(len(pts))
    rows, cols, weights = [], [], []
    for di, dj in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each undirected edge once
        q = pts + (di, dj)
        inside = np.all((q >= 0) & (q < skeleton.shape), axis=1)
        nb = np.full(len(pts), -1)
        nb[inside] = index[q[inside, 0], q[inside, 1]]
        has = nb >= 0
        rows.append(np.flatnonzero(has))
        cols.append(nb[has])
        weights.append(np.full(int(has.sum()), np.hypot(di, dj)))
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(len(pts),) * 2)
    d0 = dijkstra(graph, directed=False, indices=int(index[start]))
    a = int(np.argmax(np.where(np.isfinite(d0), d0, -1)))
    da, pred = dijkstra(graph, directed=False, indices=a, return_predecessors=True)
    node = int(np.argmax(np.where(np.isfinite(da), da, -1)))
    path = [node]
    while node != a:
        node = int(pred[node])
        path.append(node)
    return pts[path]


def stroke_in_slice(region: np.ndarray, erosion_vox: int, width_vox: int) -> np.ndarray:
    """One stroke inside a 2D ``region`` ``(I, J)``: along the medial axis of its largest component.

    The stroke is the longest path through the component's skeleton, keeping the points at least
    ``erosion_vox`` voxels inside the region (where the region is thinner, the deepest points it has:
    a one-voxel-thick region still gets a stroke), widened by ``width_vox`` without reaching the border.
    Returns an empty mask when the region is empty; every returned voxel lies in ``region``.
    """
    out = np.zeros(region.shape, dtype=bool)
    if not region.any():
        return out
    region = _largest_component(region)
    depth = ndi.distance_transform_edt(region)  # 1 on the border, in voxels
    deepest = tuple(int(v) for v in np.unravel_index(int(np.argmax(depth)), region.shape))
    skeleton = skeletonize(region)
    skeleton[deepest] = True  # a blob of 1-2 voxels may skeletonise to nothing
    line = longest_skeleton_path(skeleton, deepest)
    inner = min(erosion_vox + 1.0, max(1.0, float(depth.max()) - 1.0))
    line = line[depth[tuple(line.T)] >= inner]
    out[tuple(line.T)] = True
    if width_vox > 0:
        out = ndi.binary_dilation(out, iterations=width_vox) & (depth >= min(2.0, float(depth.max())))
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
        for k in slices:
            d = ndi.distance_transform_edt(~mask[:, :, k])
            ring = (d >= cfg.background_ring_vox) & (d < cfg.background_ring_vox + 1.5) & allowed_bg[:, :, k]
            free = scribbles[:, :, k] == 0
            scribbles[:, :, k][ring & free] = background_id
    return scribbles


def scaled(cfg: ScribbleConfig, inplane_mm: float, reference_mm: float = 3.0) -> ScribbleConfig:
    """``cfg`` (voxel sizes meant for ``reference_mm`` in-plane voxels) for a study with ``inplane_mm``
    voxels: the same strokes in mm (an annotator's brush and ring are drawn in the viewer's mm, not in
    voxels). Stroke width stays whole voxels (at least 1)."""
    f = reference_mm / max(float(inplane_mm), 1e-3)

    def vox(v: int) -> int:
        return max(1, int(round(v * f))) if v else 0

    return ScribbleConfig(cfg.slices_per_organ, vox(cfg.erosion_vox), vox(cfg.stroke_width_vox),
                          vox(cfg.background_margin_vox), vox(cfg.background_ring_vox), cfg.body_threshold_hu)


def study_scribbles(label: np.ndarray, image: np.ndarray, affine: np.ndarray, organ_ids: Mapping[str, int],
                    background_id: int, cfg: ScribbleConfig = ScribbleConfig()) -> np.ndarray:
    """:func:`simulate_scribbles` on a study stored in any orientation and spacing: strokes on its axial
    (superior-inferior) slices, sized in mm as ``cfg`` is at 3 mm (:func:`scaled`).

    ``label`` / ``image``: ``(I, J, K)`` as stored, ``affine`` voxel → world RAS mm. Returns the
    scribbles on the stored grid (``uint8``)."""
    view = View.of(label.shape, affine, None)  # reoriented to R-A-S, stored voxel sizes
    inplane = float(np.mean(view.spacing[:2]))
    s = simulate_scribbles(view.labels(label), view.labels(image).astype(np.float32), organ_ids, background_id,
                           scaled(cfg, inplane))
    return view.to_native(s)
