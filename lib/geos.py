"""GeoS: geodesic image segmentation from seeds (PRNet paper §3.4; Criminisi et al., ECCV 2008).

Each class ``c`` (background 0 and one or more foreground classes) has a seed set ``S_c``. Plain
GeoS labels every voxel with its geodesically nearest seed, ``argmin_c D(x; S_c)``, where ``D`` is
GeodisTK's raster-scan geodesic distance on the image normalised to [0, 1] (local cost
``step_mm / ((1 - λ) + λ / |ΔI|)``: λ = 1 measures intensity change only, λ < 1 caps the cost of an
edge).

Plain GeoS under-segments large organs scribbled on a few slices: noise accumulates along long paths
inside the organ, while a background seed one edge away stays cheap. Measured on the sample cohort
(``scripts/bench_scribbles.py``), two additions fix most of it:

- **per-class intensity model**: ``P(c | I)`` from smoothed histograms of each class's seed
  intensities, refined once from the first segmentation (GrabCut-style), enters the decision as
  ``score_c(x) = D(x; S_c) / s − β · log P(c | I(x))`` with ``s`` the crop's median nearest-seed
  distance (so β means the same for a large and a small structure);
- **crop and box prior**: the computation runs on the ROI (or the seeds' bounding box plus a
  margin) and the crop's outer shell is background, as a box drawn around a structure means, except
  where the crop reaches the image's own edge (an organ cut by the field of view goes on beyond it).

A median filter (``median_filter`` voxels per side) denoises the crop first: it removes the noise
that accumulates along paths inside an organ and keeps the edges between organs. On the sample
cohort (non-contrast CT at 3 mm, neighbouring organs within ~30 HU of each other), GeoS from every
support scribble point at its true location in 4 of the pseudo-studies goes from mean Dice 0.688 to
0.730 with a 3×3×3 median (Gaussian smoothing of σ 2 / 3 mm: 0.695 / 0.686; a 5×5×5 median: 0.682;
docs/benchmarks.md), so PRNet's pseudo masks use it (``prnet.geos``). For one organ in a ROI (the
interactive task) it costs the small organs (mean 0.819 → 0.787, aorta 0.77 → 0.68; docs/benchmarks.md), so it is off by
default there. A structure thinner than the filter (≈ 1 voxel) is smoothed away.

Several foreground classes compete in one argmin (nearest seed wins). Post-processing, per class:
an optional morphological opening (``opening`` voxels, 6-connected structuring element) cuts the thin
leaks by which a geodesic front crosses a partial-volume fat plane into touching tissue of the same
intensity (spleen into the abdominal wall, pancreas into bowel loops; the cut voxels become
background), then the connected components that contain its seeds are kept and their holes filled.
On the sample cohort, GeoS from every support point at its true location in 8 pseudo-studies goes from
mean Dice 0.774 to 0.796 with a 1-voxel opening (pancreas 0.46 → 0.54), so PRNet's pseudo masks use it
(``prnet.geos``); a class that the opening would erase keeps its unopened region.

Arrays are ``(I, J, K)`` in the image's voxel order; ``spacing`` is mm per axis in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import GeodisTK
import numpy as np
from scipy import ndimage as ndi

from lib.intensity import normalize_intensity

Box = tuple[slice, slice, slice]
_CROSS = ndi.generate_binary_structure(3, 1)  # the 6-connected structuring element


@dataclass(frozen=True)
class GeoSConfig:
    """GeoS settings (defaults measured on the sample cohort, see ``scripts/bench_scribbles.py``).

    ``window_hu`` → ``window_out`` is the piecewise-linear intensity normalisation (HU knots to [0, 1]).
    """

    window_hu: Sequence[float] = (-500.0, -100.0, 200.0, 1500.0)
    window_out: Sequence[float] = (0.0, 0.2, 0.8, 1.0)
    lamb: float = 1.0
    iterations: int = 4
    margin_mm: float | tuple[float, float, float] = 30.0  # one value, or one per axis (I, J, K)
    intensity_weight: float = 1.5  # β; 0 gives plain nearest-seed GeoS
    median_filter: int = 0  # side of the median filter's cube, voxels (odd); 0 or 1 = none
    opening: int = 0  # per-class morphological opening after the argmin, voxels (iterations of a 6-connected element); 0 = none
    refine_iterations: int = 1
    histogram_bins: int = 48
    roi_border_background: bool = True
    # > 0: the crop's shell is background only where the intensity differs from the foreground seeds'
    # by more than this many of their standard deviations (a click deep in a large organ whose crop
    # ends inside the organ); 0: the whole shell
    border_similarity_sd: float = 0.0
    largest_component: bool = True
    fill_holes: bool = True

    @classmethod
    def from_dict(cls, d: Mapping) -> "GeoSConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown GeoS settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def __post_init__(self):
        try:
            margins = np.asarray(self.margin_mm, dtype=float)
        except (TypeError, ValueError):
            margins = np.array([-1.0])
        if margins.shape not in ((), (3,)) or (margins < 0).any():
            raise ValueError(f"margin_mm must be one number or three (I, J, K), each at least 0 mm, got {self.margin_mm!r}")
        if self.median_filter < 0 or (self.median_filter > 1 and self.median_filter % 2 == 0):
            raise ValueError(f"median_filter must be 0 (none) or an odd number of voxels, got {self.median_filter}")
        if self.opening < 0:
            raise ValueError(f"opening must be 0 (none) or a number of voxels, got {self.opening}")


def crop_box(
    shape: Sequence[int],
    seeds: np.ndarray,
    spacing: Sequence[float],
    margin_mm: float | Sequence[float],
    roi: Sequence[int] | None = None,
) -> Box:
    """The region GeoS runs on: ``roi`` ``[i0, i1, j0, j1, k0, k1]`` (voxels, clipped, either order)
    when given, else the bounding box of ``seeds > 0`` grown by ``margin_mm`` (mm; one value for every axis
    or one per axis (I, J, K), rounded up to whole voxels)."""
    if roi:
        if len(roi) != 6:
            raise ValueError(f"roi must have 6 values [i0, i1, j0, j1, k0, k1], got {list(roi)}")
        out = []
        for a in range(3):
            lo, hi = sorted((int(roi[2 * a]), int(roi[2 * a + 1])))
            lo, hi = max(lo, 0), min(hi, shape[a])
            if hi - lo < 2:
                raise ValueError(f"roi {list(roi)} is empty or outside the image of shape {tuple(shape)}")
            out.append(slice(lo, hi))
        return tuple(out)  # type: ignore[return-value]
    idx = np.argwhere(seeds > 0)
    if idx.size == 0:
        raise ValueError("no seeds")
    lo, hi = idx.min(0), idx.max(0) + 1
    m = [int(np.ceil(mm / s)) for mm, s in zip(np.broadcast_to(np.asarray(margin_mm, float), (3,)), spacing)]
    return tuple(slice(int(max(0, lo[a] - m[a])), int(min(shape[a], hi[a] + m[a]))) for a in range(3))  # type: ignore


def geodesic_distance(
    image: np.ndarray, seeds: np.ndarray, spacing: Sequence[float], lamb: float, iterations: int
) -> np.ndarray:
    """GeodisTK raster-scan geodesic distance to ``seeds`` (bool ``(I, J, K)``).

    ``image``: ``(I, J, K)`` or ``(I, J, K, C)`` float in [0, 1]. Returns float32 ``(I, J, K)`` in
    mm × intensity units (λ = 1) — comparable only between maps computed on the same image.
    """
    img = np.ascontiguousarray(image, dtype=np.float32)
    s = np.ascontiguousarray(seeds, dtype=np.uint8)
    return GeodisTK.geodesic3d_raster_scan(img, s, [float(x) for x in spacing], float(lamb), int(iterations))


def class_posteriors(image01: np.ndarray, seeds: Mapping[int, np.ndarray], bins: int) -> dict[int, np.ndarray]:
    """``P(c | I)`` per class from smoothed histograms of each class's seed intensities (equal priors).

    ``image01``: ``(I, J, K)`` in [0, 1]; returns one float32 ``(I, J, K)`` map per class, summing to 1.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(image01, edges) - 1, 0, bins - 1)
    likelihoods = {}
    for c, m in seeds.items():
        h, _ = np.histogram(image01[m], bins=edges)
        h = ndi.gaussian_filter1d(h.astype(np.float64), sigma=1.5) + 1e-3
        likelihoods[c] = h / h.sum()
    total = sum(likelihoods.values())
    return {c: (lh / total)[idx].astype(np.float32) for c, lh in likelihoods.items()}


def geos_segment(
    image_hu: np.ndarray,
    seeds: Mapping[int, np.ndarray],
    background: np.ndarray,
    spacing: Sequence[float],
    cfg: GeoSConfig = GeoSConfig(),
    roi: Sequence[int] | None = None,
    window: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[np.ndarray, dict]:
    """Multi-class GeoS: every voxel of the crop takes the class of its geodesically nearest seed.

    Args:
        image_hu: ``(I, J, K)`` CT in HU (or MR, with its ``window``).
        seeds: ``{class_id: bool (I, J, K)}`` foreground seeds, one entry per class (ids > 0).
        background: bool ``(I, J, K)`` background seeds (may be empty when a ROI is given).
        spacing: mm per axis.
        cfg: settings.
        roi: optional ``[i0, i1, j0, j1, k0, k1]`` voxel box; outside it the result is 0.
        window: the study's intensity knots ``(window_in, window_out)`` to [0, 1]
            (:func:`lib.intensity.study_window`; an MR study's come from its own range); default the
            HU window of ``cfg``.

    Returns:
        ``(label, stats)``: uint8 ``(I, J, K)`` with class ids (0 = background) and a dict with the
        crop box and its size.
    """
    if not seeds or not any(m.any() for m in seeds.values()):
        raise ValueError("no foreground seeds")
    all_seeds = np.zeros(image_hu.shape, bool)
    for m in seeds.values():
        all_seeds |= m
    box = crop_box(image_hu.shape, all_seeds | background, spacing, cfg.margin_mm, roi)

    img = normalize_intensity(image_hu[box], *(window or (cfg.window_hu, cfg.window_out)))
    if cfg.median_filter > 1:
        img = ndi.median_filter(img, size=cfg.median_filter, mode="nearest")
    fg = {c: m[box] for c, m in seeds.items() if m[box].any()}
    if not fg:
        raise ValueError("every foreground seed lies outside the ROI")
    bg = background[box].copy()
    for m in fg.values():
        bg &= ~m
    if cfg.roi_border_background or not bg.any():
        shell = _crop_shell(bg.shape, box, image_hu.shape, keep_image_edges=bg.any())
        for m in fg.values():
            shell &= ~m
        if cfg.border_similarity_sd > 0:
            shell &= ~_like_seeds(img, fg.values(), cfg.border_similarity_sd)
        bg |= shell

    classes = {0: bg, **fg}
    ids = np.array(list(classes.keys()), dtype=np.uint8)
    dists = np.stack([geodesic_distance(img, classes[c], spacing, cfg.lamb, cfg.iterations) for c in classes])
    crop_label = ids[np.argmin(dists, axis=0)]
    if cfg.intensity_weight > 0:
        scaled = dists / (float(np.median(dists.min(axis=0))) + 1e-6)
        models = classes
        for _ in range(1 + cfg.refine_iterations):
            post = class_posteriors(img, models, cfg.histogram_bins)
            score = scaled - cfg.intensity_weight * np.log(np.stack([post[c] for c in classes]))
            crop_label = ids[np.argmin(score, axis=0)]
            models = {c: crop_label == c for c in classes}
            models = {c: m if m.any() else classes[c] for c, m in models.items()}

    if cfg.largest_component or cfg.fill_holes or cfg.opening:
        for c, m in fg.items():
            region = crop_label == c
            if cfg.opening:
                opened = ndi.binary_opening(region, _CROSS, iterations=cfg.opening)
                if (opened & m).any():  # else the class is thinner than the opening: left as it is
                    region = opened
            if cfg.largest_component:
                region = _components_touching(region, m)
            if cfg.fill_holes:
                region = ndi.binary_fill_holes(region)
            crop_label[(crop_label == c) & ~region] = 0
            crop_label[region & (crop_label == 0)] = c

    label = np.zeros(image_hu.shape, np.uint8)
    label[box] = crop_label
    stats = {"crop": [[s.start, s.stop] for s in box], "crop_voxels": int(np.prod(crop_label.shape))}
    return label, stats


def _crop_shell(shape: Sequence[int], box: Box, image_shape: Sequence[int], keep_image_edges: bool) -> np.ndarray:
    """The one-voxel outer shell of a crop of ``shape``, without the faces that lie on the image's own edge
    (a structure cut by the field of view goes on beyond it: that face is no evidence of background),
    unless ``keep_image_edges`` is False (no other background seed: the whole shell)."""
    shell = np.zeros(shape, bool)
    for axis in range(3):
        for end, on_edge in ((0, box[axis].start == 0), (-1, box[axis].stop == image_shape[axis])):
            if on_edge and keep_image_edges:
                continue
            index = [slice(None)] * 3
            index[axis] = end
            shell[tuple(index)] = True
    return shell


def _like_seeds(img: np.ndarray, seeds, n_sd: float) -> np.ndarray:
    """Voxels within ``n_sd`` standard deviations of the intensity of any class's seeds."""
    like = np.zeros(img.shape, bool)
    for m in seeds:
        values = img[m]
        like |= np.abs(img - values.mean()) <= n_sd * max(float(values.std()), 1e-3)
    return like


def _components_touching(region: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The connected components of ``region`` that contain a seed."""
    lab, n = ndi.label(region)
    if n <= 1:
        return region
    keep = np.unique(lab[seeds & region])
    return np.isin(lab, keep[keep > 0])


def seeds_from_points(
    shape: Sequence[int], points: Sequence[Sequence[int]], spacing: Sequence[float], radius_mm: float
) -> np.ndarray:
    """Bool ``(I, J, K)`` balls of ``radius_mm`` around voxel ``points`` ``[[i, j, k], ...]``."""
    out = np.zeros(shape, bool)
    r = [max(0, int(np.floor(radius_mm / s))) for s in spacing]
    grid = np.stack(np.meshgrid(*[np.arange(-x, x + 1) for x in r], indexing="ij"), -1)
    ball = ((grid * np.asarray(spacing)) ** 2).sum(-1) <= radius_mm**2 + 1e-6
    offsets = np.argwhere(ball) - np.asarray(r)
    for p in points:
        q = offsets + np.asarray(p, int)
        ok = np.all((q >= 0) & (q < np.asarray(shape)), axis=1)
        q = q[ok]
        out[q[:, 0], q[:, 1], q[:, 2]] = True
    return out
