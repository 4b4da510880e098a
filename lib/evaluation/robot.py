"""A simulated annotator for interactive benchmarks (DeepIGeoS, DeepEdit evaluate this way).

Each round it looks at the current result of one structure against the truth, takes the largest
connected error region (false negative or false positive, 26-connected) and puts one correction at its
most interior voxel (largest distance to the region's boundary, in mm): a foreground correction in a false
negative, a background one in a false positive. A click (:func:`stroke`) is a small ball there; a scribble
(:func:`scribble`) is drawn on the slice through it along the error's medial axis in that slice, as
DeepIGeoS (Wang et al. 2018) simulates scribbles from the skeleton of the mis-segmented region.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from lib.data.scribbles import stroke_in_slice
from lib.evaluation.metrics import dice
from lib.frame import axcodes
from lib.geos import seeds_from_points


@dataclass(frozen=True)
class Correction:
    foreground: bool  # True: the structure is missing there; False: it should not be there
    point: tuple[int, int, int]  # (i, j, k) voxel
    region_voxels: int  # the size of the error region it was put in
    region: np.ndarray | None = None  # bool (I, J, K): that region


def next_correction(result: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> Correction | None:
    """Where the annotator corrects next; ``result``, ``truth``: bool ``(I, J, K)``. None when they agree."""
    best = None
    for fg, error in ((True, truth & ~result), (False, result & ~truth)):
        lab, n = ndi.label(error, structure=np.ones((3, 3, 3), bool))
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        k = int(np.argmax(sizes)) + 1
        if best is None or sizes[k - 1] > best[2]:
            best = (fg, lab == k, int(sizes[k - 1]))
    if best is None:
        return None
    fg, region, size = best
    sl = ndi.find_objects(region.astype(np.uint8))[0]
    pad = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
    edt = ndi.distance_transform_edt(region[pad], sampling=spacing)
    p = np.unravel_index(int(np.argmax(edt)), edt.shape)
    return Correction(fg, tuple(int(a + s.start) for a, s in zip(p, pad)), size, region)  # type: ignore[arg-type]


def stroke(shape: Sequence[int], correction: Correction, spacing: Sequence[float], radius_mm: float = 3.0) -> np.ndarray:
    """The correction as a bool ``(I, J, K)`` stroke: a ball of ``radius_mm`` at its point, inside its error
    region (an annotator paints within the region they correct)."""
    ball = seeds_from_points(shape, [correction.point], spacing, radius_mm)
    return ball & correction.region if correction.region is not None else ball


def scribble(correction: Correction, axis: int, spacing: Sequence[float], radius_mm: float = 3.0) -> np.ndarray:
    """The correction as one scribble, bool ``(I, J, K)``: on the slice of voxel axis ``axis`` (the one a viewer
    shows, e.g. the axial) through its point, the longest path through the skeleton of the error region's
    cross-section there (the part holding the point), painted with an in-plane brush of ``radius_mm`` (Slicer's
    Paint effect draws on the slice) and kept inside that cross-section. A cross-section with no line (a voxel
    or two) gets the ball of :func:`stroke`."""
    if correction.region is None:
        raise ValueError("a scribble needs the correction's error region")
    index = [slice(None)] * 3
    index[axis] = correction.point[axis]
    section = correction.region[tuple(index)]
    lab, _ = ndi.label(section, structure=np.ones((3, 3), bool))
    inplane = tuple(p for a, p in enumerate(correction.point) if a != axis)
    part = lab == lab[inplane]
    line = stroke_in_slice(part, erosion_vox=1, width_vox=0)
    if not line.any():
        return stroke(correction.region.shape, correction, spacing, radius_mm)
    sp = [s for a, s in enumerate(spacing) if a != axis]
    brush = ndi.distance_transform_edt(~line, sampling=sp) <= radius_mm
    out = np.zeros(correction.region.shape, bool)
    out[tuple(index)] = brush & part
    return out


def axial_axis(affine: np.ndarray | None) -> int:
    """The voxel axis closest to the world's superior–inferior axis (``affine``: voxel → RAS mm; None: the third
    axis), the one whose slices are axial (:func:`lib.frame.axcodes`, nibabel's orientation codes)."""
    if affine is None:
        return 2
    return next(i for i, code in enumerate(axcodes(np.asarray(affine, float))) if code in "SI")


FOREGROUND, BACKGROUND = 1, 2  # the values of the strokes volume :func:`run_rounds` hands to ``segment``


def run_rounds(truth: np.ndarray, start: np.ndarray | None, spacing: Sequence[float], rounds: int,
               segment: Callable[[np.ndarray, list[Correction]], np.ndarray], axis: int | None = None,
               near_mm: float = 30.0) -> dict:
    """``rounds`` rounds of the robot on one structure.

    Each round: the next correction (:func:`next_correction`) of the current result against ``truth`` (bool
    ``(I, J, K)``), drawn as a scribble on slices of ``axis`` (None: a ball, a click) over any earlier stroke there,
    and ``segment(strokes, clicks)`` → the new bool result, with ``strokes`` ``uint8`` (0, :data:`FOREGROUND`,
    :data:`BACKGROUND`): every stroke so far, and ``clicks`` every correction so far (their ``point`` and
    ``foreground``: what a click-based client sends). ``start``: the result before any stroke (None: nothing).

    Returns ``{"dice": [round 0 (start), 1, ...], "seconds": per call of segment, "max_far_drop": the largest fall of
    one round's Dice over the voxels farther than near_mm from every stroke}``.
    """
    result = start.copy() if start is not None else np.zeros(truth.shape, bool)
    strokes = np.zeros(truth.shape, np.uint8)
    scores, seconds, drops, clicks = [dice(result, truth)], [], [], []
    for _ in range(rounds):
        c = next_correction(result, truth, spacing)
        if c is None:
            scores.append(scores[-1])
            continue
        s = stroke(truth.shape, c, spacing) if axis is None else scribble(c, axis, spacing)
        strokes[s] = FOREGROUND if c.foreground else BACKGROUND
        clicks.append(Correction(c.foreground, c.point, c.region_voxels))
        t0 = time.perf_counter()
        new = segment(strokes, list(clicks))
        seconds.append(time.perf_counter() - t0)
        far = ndi.distance_transform_edt(strokes == 0, sampling=spacing) > near_mm
        if far.any() and (truth[far].any() or result[far].any()):
            drops.append(dice(result[far], truth[far]) - dice(new[far], truth[far]))
        result = new
        scores.append(dice(result, truth))
    return {"dice": scores, "seconds": seconds, "max_far_drop": max(drops, default=0.0)}


def shifted_draft(labels: np.ndarray, affine: np.ndarray, margin_mm: float = 3.0) -> np.ndarray:
    """A draft with the boundary errors of a slightly misplaced one, for a study that has no PRNet draft.

    Every structure of ``labels`` (``(I, J, K)`` integer ids, 0 background; ``affine`` voxel → RAS mm) is grown by
    ``margin_mm`` into the background on its patient-left half (world x above its centroid's) and shrunk by as
    much on its right half (mm, Euclidean from its border): the error of a draft placed a few mm off, the same in
    any stored orientation. Where two grown structures meet, the lower id keeps the voxel. Returns ``(I, J, K)`` of
    ``labels``' dtype.
    """
    affine = np.asarray(affine, float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    x_mm = np.einsum("n,nijk->ijk", affine[0, :3], np.indices(labels.shape, dtype=np.float32)) + affine[0, 3]
    draft = np.zeros_like(labels)
    for c in sorted(int(v) for v in np.unique(labels) if v != 0):
        m = labels == c
        left = x_mm >= x_mm[m].mean()
        grown = ~m & left & (labels == 0) & (ndi.distance_transform_edt(~m, sampling=spacing) <= margin_mm)
        shrunk = m & ~left & (ndi.distance_transform_edt(m, sampling=spacing) <= margin_mm)
        draft[((m & ~shrunk) | grown) & (draft == 0)] = c
    return draft
