"""Correcting a label with scribbles or clicks, instead of segmenting again from scratch.

An annotator opens a draft (PRNet's ``original``, a saved ``final``, the UNet's prediction) and marks
only where it is wrong: a foreground stroke of class ``k`` where ``k`` is missing, a background stroke
where a structure leaks. Each correction set ``S`` (the strokes of one class, or the background
strokes) claims the voxels it reaches *cheaply*:

    claim_S(x) = D(x; S) + w · E(x; S) + π_S(x) < δ     and     E(x; S) ≤ ``radius_mm``

with ``D`` GeodisTK's geodesic distance on the normalised image (λ = 1: the intensity change summed
along the best path, [0, 1] units, as in :mod:`lib.geos`; a CT study through ``window_hu``, whose first knot is
air's -1000 HU, not the soft-tissue window's -500 HU: the wall between the stomach's gas and the colon's, a few
hundred HU at 3 mm, is an edge), ``E`` the Euclidean distance in mm and
``w`` = ``spatial_weight``: a stroke reaches at most δ / w mm (15 mm), however flat the tissue (with λ = 1
alone a stroke in the stomach's gas claimed a lung's air through a gap in the wall, 4 000 voxels). ``π_S``
is the intensity penalty: ``intensity_weight`` × (log P(I | the class the label holds at x) − log P(I | S's
class) − ``intensity_tolerance``) where positive, from histograms of the label's classes in the crop; a
stroke in a kidney's fatty hilum may not take the fat around it, which the label already calls background.
Once the segmentation UNet is trained, its posteriors ``log P(c | x)`` take the histograms' place in ``π_S`` for
the classes it knows (issue "correct, don't redraw", item 2): the strokes still decide where they lie, the model
only says how far their claim may go.
Where several sets claim a voxel the lowest score wins (GeoS between the corrections). Every voxel no
correction claims keeps its starting label, so a stroke changes only its own neighbourhood. A class keeps
its id; a background claim removes only the classes it may (``removable``: the corrected structure, or
every foreground class).

Two rules keep a stroke from taking what nobody argued about, and let it take what it did:

- **rivals**: the starting label's regions that a set would change (for a foreground stroke the other
  foreground classes, and the background where its intensity clearly says background: ``π_S`` > 0 by the
  histograms; the removable classes for a background stroke), eroded by one voxel (a part thinner than that
  competes whole), are seeds too where they lie farther than ``exclusion_mm`` from the strokes or deeper inside
  the region than the strokes reach (its core: a lesion smaller than ``exclusion_mm`` still competes); a voxel
  nearer to them than to the strokes (``D + w · E``) is not claimed (a background stroke in a leak stops where
  the organ itself begins, even without an edge; a background stroke in the border of a small lesion drafted
  a few mm off takes that border, not the lesion; a foreground stroke stops midway to the fat the label calls
  background, even where the tissue fades into it; a part of the organ the label misses looks like the
  organ and stays free for the stroke);
- **islands**: a connected region of the label that a stroke lies in, that is not its class's largest
  region, holds at most ``island_max_fraction`` of that region's voxels and lies wholly within ``radius_mm``
  of the stroke and within the crop is argued as a whole (a background stroke on a false-positive island removes it all, however
  noisy its intensities), and is no rival. A larger secondary region is the organ split in two, argued by
  the geodesics like the rest.

In other words this is GeoS (Criminisi et al. 2008) in which the starting label is one more seed set
whose distance is the constant δ everywhere: "the draft, unless a correction is nearer than δ".
The claim is decided on the same working voxels as :func:`lib.geos.geos_segment`, in a crop of the strokes'
box plus δ / w + ``exclusion_mm`` (or ``radius_mm``), and its boundary again per stored voxel
(:func:`lib.geos.refine_boundary`).

Arrays are ``(I, J, K)`` in the image's voxel order; ``spacing`` is mm per axis in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse.csgraph import connected_components

from lib.geos import (Box, GeoSConfig, block_reduce, components_touching, geodesic_distances, intensity_likelihoods,
                      refine_boundary, whole_voxels, working_image)

KEEP = 255  # the working label "no correction claims this voxel"
MODEL_FLOOR = 0.01  # a model's posteriors count from this up: its log-ratios lie within ±4.6
ClassPrior = Callable[[tuple[slice, slice, slice]], Mapping[int, np.ndarray]]
"""A trained model's class probabilities for a correction: given a box (three slices of the stored grid), ``{class
id: log P(c | x)}`` float ``(box shape)`` for the classes it knows, in the starting label's ids (0: background)."""
_CROSS = ndi.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class CorrectionConfig:
    """How far a correction reaches (configuration section ``correction``).

    ``delta``: the geodesic distance (summed intensity change on the [0, 1] normalised image) a correction
    may travel; ``radius_mm``: and no farther than this from its strokes (Euclidean, mm); ``exclusion_mm``: the
    starting label's regions a correction would take compete with it from farther than this from its strokes
    (except a region the strokes lie in that lies wholly within ``radius_mm`` and holds at most ``island_max_fraction``
    of its class's largest region: an island, argued as a whole);
    ``enabled``: the interactive tasks correct a starting label when the study has one (a request's ``correct: false``
    turns it off); ``sources``: where the starting label comes from, in order (datastore label tags, and
    ``segmentation`` for the published UNet's prediction); ``model_prior``: once a segmentation model is published,
    its posteriors take the histograms' place in the intensity penalty for the classes it knows (a request's
    ``model_prior: false`` turns it off); ``iterations``: GeodisTK's raster-scan passes of the correction's geodesics (GeoS
    from scratch takes ``geos.iterations``; one pass costs a round about a quarter less and a little Dice);
    ``window_hu`` → ``window_out``: a CT study's intensity normalisation for
    the geodesics and histograms (HU knots to [0, 1], as ``geos.window_hu``; an MR study brings its own window).
    """

    enabled: bool = True
    delta: float = 0.3
    radius_mm: float = 60.0
    exclusion_mm: float = 10.0
    island_max_fraction: float = 0.25
    intensity_weight: float = 0.2
    intensity_tolerance: float = 1.0
    spatial_weight: float = 0.02
    sources: Sequence[str] = ("final", "original", "segmentation")
    model_prior: bool = True
    iterations: int = 2
    window_hu: Sequence[float] = (-1000.0, -100.0, 200.0, 1500.0)
    window_out: Sequence[float] = (0.0, 0.2, 0.8, 1.0)

    def __post_init__(self):
        if not float(self.delta) > 0 or not float(self.radius_mm) > 0:
            raise ValueError(f"delta and radius_mm must be > 0, got {self.delta!r} and {self.radius_mm!r}")
        if int(self.iterations) < 1:
            raise ValueError(f"iterations must be at least 1 (raster-scan passes), got {self.iterations!r}")
        hu, out = np.asarray(self.window_hu, float), np.asarray(self.window_out, float)
        if hu.ndim != 1 or hu.shape != out.shape or hu.size < 2 or (np.diff(hu) <= 0).any() or (np.diff(out) < 0).any():
            raise ValueError(f"window_hu and window_out must be knots of one length (at least 2), window_hu increasing "
                             f"and window_out not decreasing, got {self.window_hu!r} and {self.window_out!r}")


def correct_label(
    image_hu: np.ndarray,
    start: np.ndarray,
    corrections: Mapping[int, np.ndarray],
    spacing: Sequence[float],
    geos: GeoSConfig = GeoSConfig(),
    cfg: CorrectionConfig = CorrectionConfig(),
    removable: Collection[int] | None = None,
    window: tuple[Sequence[float], Sequence[float]] | None = None,
    prior: ClassPrior | None = None,
) -> tuple[np.ndarray, dict]:
    """``start`` corrected by the strokes in ``corrections``.

    Args:
        image_hu: ``(I, J, K)`` CT in HU (or MR with its ``window``).
        start: ``(I, J, K)`` integer class ids (0 = background): the label to correct.
        corrections: ``{class id: bool (I, J, K)}``; id 0 holds the background strokes, any other id the
            foreground strokes of that class (it may be a class ``start`` does not hold yet).
        spacing: mm per axis.
        geos: the GeoS settings used for the geodesics (λ, working voxels, filters, histogram bins; not its passes
            nor its window: ``cfg``'s).
        cfg: how far a correction reaches.
        removable: the class ids a background claim may remove (default: every foreground class).
        window: the study's intensity knots ``(window_in, window_out)`` (an MR study's); default ``cfg``'s CT window
            (``window_hu`` → ``window_out``).
        prior: a model's class probabilities (:data:`ClassPrior`: ``box → {class id: log P(c | x)}`` on the stored
            voxels of a box, for the classes it knows, with ``start``'s ids): where it knows both the class the
            label holds at a voxel and a set's class, its log-ratio takes the place of the histograms' in the
            intensity penalty (:func:`_intensity_penalty`).

    Returns:
        ``(label, stats)``: the corrected label (``start``'s dtype, a new array) and a dict with the crop,
        the working voxel size (mm) and per correction set the voxels it changed.
    """
    sets = {int(c): np.asarray(m, bool) for c, m in corrections.items() if np.any(m)}
    if not sets:
        raise ValueError("no correction stroke")
    if start.shape != image_hu.shape or any(m.shape != image_hu.shape for m in sets.values()):
        raise ValueError(f"the label and the strokes must have the image's shape {list(image_hu.shape)}")
    out = np.array(start, copy=True)
    crops = [_correct_crop(out, image_hu, start, {c: m for c, m in sets.items() if m[box].any()}, box, spacing, geos, cfg,
                           removable, window, prior)
             for box in stroke_crops(np.logical_or.reduce(list(sets.values())), spacing, _crop_mm(cfg))]
    changed: dict[int, int] = {}
    for c in crops:
        for k, n in c["changed_voxels"].items():
            changed[k] = changed.get(k, 0) + n
    heard = sorted({k for c in crops for k in c["heard"]})
    first = [min(c["crop"][a][0] for c in crops) for a in range(3)]
    last = [max(c["crop"][a][1] for c in crops) for a in range(3)]
    stats = {"crop": [[a, b] for a, b in zip(first, last)], "working_spacing_mm": crops[0]["working_spacing_mm"],
             "changed_voxels": changed, "delta": float(cfg.delta), "radius_mm": float(cfg.radius_mm),
             "intensity_model": "histograms" if not heard else f"model for correction sets {heard}, else histograms"}
    if len(crops) > 1:
        stats["crops"] = [{k: c[k] for k in ("crop", "working_spacing_mm")} for c in crops]
    return out, stats


def stroke_crops(strokes: np.ndarray, spacing: Sequence[float], margin_mm: float, max_groups: int = 1000) -> list[Box]:
    """The crops a correction works in: the strokes' (bool ``(I, J, K)``) connected groups, each group's bounding box
    grown by ``margin_mm`` (whole voxels of ``spacing`` per axis, clipped to the image), groups merged while their
    grown boxes overlap; disjoint, in index order. A stroke's claim and the rivals it competes with lie within
    ``margin_mm`` of it, so strokes in boxes apart cannot affect one another: each box is corrected on its own (its
    crop, working grid, histograms), and a round's work grows with the strokes drawn, not with the span between
    them. More than ``max_groups`` separate strokes (a spray of dots) share one crop."""
    along = [np.flatnonzero(strokes.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    if any(x.size == 0 for x in along):
        raise ValueError("no correction stroke")
    lo0, hi0 = np.array([x[0] for x in along]), np.array([x[-1] + 1 for x in along])
    reach = np.asarray(whole_voxels(margin_mm, spacing))
    shape = np.asarray(strokes.shape)
    lab, n = ndi.label(strokes[tuple(slice(a, b) for a, b in zip(lo0, hi0))], np.ones((3, 3, 3), bool))
    if n > max_groups:
        lo, hi = lo0[None], hi0[None]
    else:
        boxes = ndi.find_objects(lab)
        lo = np.array([[s.start for s in b] for b in boxes]) + lo0  # (groups, 3) first voxel, last + 1
        hi = np.array([[s.stop for s in b] for b in boxes]) + lo0
    while True:  # merging two groups grows their box, which may then overlap a third
        glo, ghi = np.maximum(0, lo - reach), np.minimum(shape, hi + reach)
        overlap = (np.maximum(glo[:, None], glo[None]) < np.minimum(ghi[:, None], ghi[None])).all(-1)
        k, which = connected_components(overlap, directed=False)
        if k == len(lo):
            break
        lo = np.stack([lo[which == g].min(0) for g in range(k)])
        hi = np.stack([hi[which == g].max(0) for g in range(k)])
    return [tuple(slice(int(a), int(b)) for a, b in zip(glo[g], ghi[g])) for g in np.lexsort(glo.T[::-1])]


def _correct_crop(out: np.ndarray, image_hu: np.ndarray, start: np.ndarray, sets: Mapping[int, np.ndarray], box: Box,
                  spacing: Sequence[float], geos: GeoSConfig, cfg: CorrectionConfig, removable: Collection[int] | None,
                  window: tuple[Sequence[float], Sequence[float]] | None, prior: ClassPrior | None) -> dict:
    """:func:`correct_label` in one crop ``box`` of :func:`stroke_crops` (``sets``: the strokes lying in it): writes the
    claims into ``out[box]``; returns the crop, its working voxel size, the voxels changed per set and the sets
    that heard the model."""
    crop_hu = image_hu[box]
    open_faces = [(s.start > 0, s.stop < n) for s, n in zip(box, image_hu.shape)]  # crop faces inside the image
    w_in, w_out = window or (cfg.window_hu, cfg.window_out)

    img, f, work_spacing = working_image(crop_hu, spacing, geos, (w_in, w_out))
    coarse = any(x > 1 for x in f)
    work = {c: block_reduce(m[box], f, "any") if coarse else m[box] for c, m in sets.items()}
    taken = np.zeros(img.shape, bool)  # a block holding strokes of two sets belongs to the first
    for c in work:
        work[c] = work[c] & ~taken
        taken |= work[c]

    ids = np.array([KEEP, *work], dtype=np.uint8)
    # the starting label on the working grid: the class at each block's centre (a partial block at the crop's end
    # takes its last voxel)
    centres = [np.minimum(np.arange(m) * x + x // 2, n - 1) for m, x, n in zip(img.shape, f, crop_hu.shape)]
    start_work = start[box][np.ix_(*centres)]
    model, heard = None, set()
    if prior is not None and cfg.intensity_weight > 0:
        model = {int(c): np.asarray(lp, np.float32)[np.ix_(*centres)] for c, lp in prior(box).items()}
        heard = {c for c, m in work.items() if c in model and _model_doubts_label(model, start_work, m, c)}
    penalty = _intensity_penalty(img, start_work, work, geos.histogram_bins, cfg.intensity_weight,
                                 cfg.intensity_tolerance, model, heard)
    # the histograms' penalty alone decides where the background is a rival (not a model's: it already stops a
    # claim through the penalty, and a rival spreading from a same-HU neighbour would cut the claim short)
    histogram_penalty = penalty if not heard else _intensity_penalty(
        img, start_work, work, geos.histogram_bins, cfg.intensity_weight, cfg.intensity_tolerance)
    # what each set competes with (_contested): the starting label's own regions that it would take (other
    # foreground classes, and background that looks like it, for a foreground set; the removable classes for the
    # background), their interiors, away from the strokes or deeper than the strokes reach (_core)
    seeds, competitors = list(work.values()), []
    near = [ndi.distance_transform_edt(~m, sampling=work_spacing) for m in seeds]  # mm from each set's strokes
    for (c, m), mm in zip(work.items(), near):
        take = _contested(start_work, c, removable, histogram_penalty[c] > 0) & ~_islands(
            start_work, m, c, removable, work_spacing, cfg.radius_mm, cfg.island_max_fraction, open_faces)
        interior = ndi.binary_erosion(take, _CROSS)
        interior |= take & ~ndi.binary_dilation(interior, _CROSS)  # parts thinner than the erosion compete whole
        competitors.append(interior & ((mm > cfg.exclusion_mm) | _core(take, m, work_spacing)))
    dists = geodesic_distances(img, seeds + [m for m in competitors if m.any()], work_spacing, geos.lamb, int(cfg.iterations))
    rival = iter(dists[len(seeds):])
    scores = [np.full(img.shape, cfg.delta, np.float32)]
    eps = np.float32(cfg.spatial_weight)  # the distance term: geodesic + weight x mm from the seeds (Euclidean)
    for (c, d), mm, comp in zip(zip(work, dists), near, competitors):
        lost = mm > cfg.radius_mm  # beyond its reach
        if comp.any():
            lost |= d + eps * mm >= next(rival) + eps * ndi.distance_transform_edt(~comp, sampling=work_spacing)
        scores.append(np.where(lost, np.float32(1e6), d + eps * mm + penalty[c]).astype(np.float32))
    scores = np.stack(scores)
    choice = ids[np.argmin(scores, axis=0)]
    for c, m in work.items():  # each set's claim: the part connected to its own strokes
        region = choice == c
        choice[region & ~components_touching(region, m)] = KEEP
    if coarse:
        choice = refine_boundary(choice, scores, None, ids, f, crop_hu, (w_in, w_out), 0.0)
    for c, m in sets.items():  # every stroke voxel belongs to its own set, and so does an island it lies in
        choice[_islands(start[box], m[box], c, removable, spacing, cfg.radius_mm, cfg.island_max_fraction, open_faces)] = c
        choice[m[box]] = c

    crop = out[box]
    allowed_bg = _takes(crop, 0, removable)
    changed = {}
    for c in work:
        claim = choice == c
        if c == 0:
            claim &= allowed_bg
        changed[int(c)] = int(np.count_nonzero(claim & (crop != c)))
        crop[claim] = c
    return {"crop": [[s.start, s.stop] for s in box], "working_spacing_mm": [round(s, 3) for s in work_spacing],
            "changed_voxels": changed, "heard": sorted(heard)}


def window_strokes(sets: Mapping[int, np.ndarray]) -> list[np.ndarray]:
    """The strokes an MR study's correction window centres on (:func:`lib.intensity.seed_window`): the foreground
    sets' (the structure's intensities), or the background's when there is none (``sets``: ``{class id: bool
    mask}``, 0 the background)."""
    return [m for c, m in sets.items() if c] or list(sets.values())


def _crop_mm(cfg: CorrectionConfig) -> float:
    """How far (mm) around the strokes the correction looks: ``radius_mm``, or with a spatial term no farther than a
    claim can reach (``delta / spatial_weight``) plus ``exclusion_mm`` for the rivals that compete there."""
    if cfg.spatial_weight <= 0:
        return float(cfg.radius_mm)
    return float(min(cfg.radius_mm, cfg.delta / cfg.spatial_weight + cfg.exclusion_mm))


def _intensity_penalty(img: np.ndarray, start: np.ndarray, sets: Mapping[int, np.ndarray], bins: int,
                       weight: float, tolerance: float, model: Mapping[int, np.ndarray] | None = None,
                       heard: Collection[int] = ()) -> dict[int, np.ndarray]:
    """Per correction set ``c``, what its score pays where the voxel's intensity is clearly less likely under
    ``c`` than under the class the starting label holds there: ``weight · max(0, log P(I | start) − log P(I | c)
    − tolerance)`` per working voxel (≥ 0; zeros with ``weight`` 0). A stroke keeps its full reach into tissue
    that looks like its class or could; it cannot flood tissue that looks like what the label already says
    it is (a foreground stroke in a kidney's fatty hilum into the fat around it).

    Each class's ``P(I | c)`` is the smoothed histogram (:func:`lib.geos.intensity_likelihoods`) of the
    normalised image in that class's region of the starting label in the crop, with its strokes, floored at
    1/20 of a flat histogram (one class's empty bins do not decide alone).

    ``model``: ``{class id: log P(c | x)}`` of a trained model on ``img``'s grid, for the classes it knows. For the
    sets in ``heard``, where it knows both the class the label holds at a voxel and ``c``, the log-ratio of its posteriors (floored at
    :data:`MODEL_FLOOR`) replaces the histograms' there: the model tells apart tissues of one intensity (a liver
    leak into a neighbour of the same HU) that no histogram can."""
    if weight <= 0:
        return {c: np.zeros(img.shape, np.float32) for c in sets}
    keys = sorted({int(c) for c in np.unique(start)} | {int(c) for c in sets})
    masks = {c: (start == c) | (sets[c] if c in sets else False) for c in keys}
    logl = np.log(np.maximum(intensity_likelihoods(img, masks, bins), 0.05 / bins)).astype(np.float32)
    idx = np.clip((img * bins).astype(np.int64), 0, bins - 1)
    lut = np.zeros(int(max(keys)) + 1, np.int64)
    lut[keys] = np.arange(len(keys))
    here = logl[lut[start], idx]
    ratios = {c: here - logl[lut[c]][idx] for c in sets}
    if model:
        floor = np.float32(np.log(MODEL_FLOOR))
        model = {c: np.maximum(lp, floor) for c, lp in model.items()}
        known = np.isin(start, list(model))
        here_model = np.zeros(img.shape, np.float32)
        for k, lp in model.items():
            at = start == k
            here_model[at] = lp[at]
        for c in sets:
            if c in model and c in heard:
                ratios[c] = np.where(known, here_model - model[c], ratios[c])
    return {c: np.float32(weight) * np.maximum(0, r - np.float32(tolerance)) for c, r in ratios.items()}


def _model_doubts_label(model: Mapping[int, np.ndarray], start: np.ndarray, strokes: np.ndarray, c: int) -> bool:
    """Whether the model agrees with the annotator's strokes of set ``c``: where they change the label (a voxel the
    label gives another class the model knows), the model's mean posterior of that label is below 1/2. A model that
    believes the label exactly where the annotator says it is wrong learnt the draft's error (a UNet trained on
    these drafts): it is not heard for this set. True when the strokes change nothing the model knows."""
    argued = strokes & (start != c) & np.isin(start, list(model))
    if not argued.any():
        return True
    p = np.zeros(int(argued.sum()), np.float32)
    for k, lp in model.items():
        at = start[argued] == k
        p[at] = np.exp(lp[argued][at])
    return float(p.mean()) < 0.5


def _contested(start: np.ndarray, c: int, removable: Collection[int] | None, unlike: np.ndarray) -> np.ndarray:
    """The voxels of ``start`` whose label competes with set ``c`` (its rivals, away from the strokes): for the
    background the removable classes; for a foreground class every other foreground class, and the background where
    it clearly looks like background rather than like ``c`` (``unlike``: bool, ``start.shape``, where the intensity
    penalty of ``c`` is positive): a foreground stroke takes only what lies nearer to it than to the fat or gas the
    label calls background, but tissue that looks like its class (a part of the organ the label misses) stays
    free for it."""
    if c == 0:
        return _takes(start, 0, removable)
    return _takes(start, c, removable) | ((start == 0) & unlike)


def _core(take: np.ndarray, strokes: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """The part of the contested region ``take`` (bool) deeper inside it than any stroke of ``strokes`` (bool) lies,
    by more than one voxel (``spacing`` mm per axis; depth: the Euclidean distance to the region's border, mm).

    A stroke argues about the region's border as deep as it reaches, not about the core beyond: a background stroke
    in the border of a structure smaller than ``exclusion_mm`` (a lesion, a tumour) competes with that structure's
    core, which would otherwise lie wholly inside the exclusion zone and be taken along a weak edge. A stroke outside
    the region argues about none of it but its one-voxel rim."""
    if not take.any():
        return take
    depth = ndi.distance_transform_edt(take, sampling=spacing)
    under = strokes & take
    reach = float(depth[under].max()) if under.any() else 0.0
    return depth > reach + float(min(spacing))


def _takes(start: np.ndarray, c: int, removable: Collection[int] | None) -> np.ndarray:
    """The voxels of ``start`` that set ``c`` would change: removable classes for the background (0), other
    foreground classes for a foreground class."""
    if c == 0:
        return np.isin(start, list(removable)) if removable is not None else start > 0
    return (start > 0) & (start != c)


def _islands(start: np.ndarray, strokes: np.ndarray, c: int, removable: Collection[int] | None,
             spacing: Sequence[float], radius_mm: float, max_fraction: float,
             open_faces: Sequence[tuple[bool, bool]] = ((False, False),) * 3) -> np.ndarray:
    """The connected regions of the starting label that the strokes of set ``c`` lie in, that are not their
    class's largest region (the structure itself), hold at most ``max_fraction`` of its voxels (a part about the
    organ's own size is the organ, split) and that lie wholly within ``radius_mm`` of the strokes: an
    island of a removable class under a background stroke, of another foreground class under a foreground
    stroke; the stroke argues about each as a whole. Bool, ``start.shape`` (in the crop: a class's largest
    region there). ``open_faces``: per axis, whether the crop's low / high face lies inside the image; a region
    touching such a face goes on beyond the crop and is no island."""
    take = _takes(start, c, removable)
    out = np.zeros(start.shape, bool)
    if not (take & strokes).any():
        return out
    near = None  # mm from the strokes, computed once a region is a candidate (most strokes lie in no island)
    cut = np.zeros(start.shape, bool)
    for axis, (low, high) in enumerate(open_faces):
        for side, is_open in ((0, low), (-1, high)):
            if is_open:
                index = [slice(None)] * 3
                index[axis] = side
                cut[tuple(index)] = True
    for cls in np.unique(start[strokes & take]):
        lab, n = ndi.label(start == cls)
        if n < 2:
            continue  # the class is one region: the structure itself, never an island
        sizes = np.bincount(lab.ravel())
        main = int(np.argmax(sizes[1:])) + 1
        for k in np.unique(lab[strokes & (start == cls)]):
            if not k or k == main or sizes[k] > max_fraction * sizes[main]:
                continue
            region = lab == k
            if (region & cut).any():
                continue
            if near is None:
                near = ndi.distance_transform_edt(~strokes, sampling=spacing)
            if near[region].max() <= radius_mm:
                out |= region
    return out
