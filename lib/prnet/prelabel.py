"""From support scribbles to a pseudo mask of a query study: propagate (Eq. 4), DFD (Eq. 5), GeoS (§3.4).

Every class of the support scribble map (the background is its own class) is subsampled with
``stride``, propagated to the query, filtered by DFD, and the kept points seed a multi-class GeoS.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from lib.config import from_section
from lib.frame import View, axcodes
from lib.geos import GeoSConfig, geos_segment
from lib.intensity import normalize_intensity, study_window
from lib.io import Volume
from lib.prnet.propagate import Group, Localizer, Propagation, PropagationConfig, encode_support, fit_subset, propagate


@dataclass
class Prelabel:
    label: np.ndarray | None  # (I, J, K) uint8 class ids; None when no foreground point was kept
    points: dict[int, np.ndarray] = field(default_factory=dict)  # class id -> (N, 3) support points used
    propagation: dict[int, Propagation] = field(default_factory=dict)  # class id -> located / sim / keep
    warnings: list[str] = field(default_factory=list)
    geos: dict = field(default_factory=dict)
    view: View | None = None  # the query's canonical view when the arrays above are on it (:func:`prelabel`)
    native_label: np.ndarray | None = None  # ``label`` on the query's own grid (:func:`prelabel`)
    frame: dict = field(default_factory=dict)  # what the frame was: orientations, spacings, modalities

    @property
    def mirrored(self) -> bool:
        """The query aligned better with the support mirrored left-right (:func:`~lib.prnet.propagate.mirror_check`)."""
        return any(p.mirrored for p in self.propagation.values())

    def stats(self, names: Mapping[str, int]) -> dict:
        """Per class: points propagated, landed inside the query (``at_face`` of them placed on a face of its grid,
        :attr:`~lib.prnet.propagate.PropagationConfig.face_mm`), kept; mean DFD similarity of those inside;
        and the overall confidence: the mean over classes of their mean similarity, halved when the query
        aligns better mirrored (:attr:`mirrored`: its draft's sides are probably swapped, so it comes first
        in ``prnet_confidence``)."""
        by_id = {i: n for n, i in names.items()}
        classes = {
            by_id.get(c, str(c)): {"points": int(len(p.sim)), "inside": int(p.inside.sum()),
                                   "at_face": int(p.at_face.sum()), "kept": int(p.keep.sum()),
                                   "mean_sim": float(np.mean(p.sim[p.inside])) if p.inside.any() else 0.0}
            for c, p in self.propagation.items()
        }
        sims = [v["mean_sim"] for v in classes.values()]
        ncc = next((p.ncc for p in self.propagation.values() if p.ncc is not None), None)
        mirror = next((p.mirror_ncc for p in self.propagation.values() if p.mirror_ncc is not None), None)
        confidence = (float(np.mean(sims)) if sims else 0.0) * (0.5 if self.mirrored else 1.0)
        return {"confidence": confidence, "classes": classes,
                "registration_ncc": None if ncc is None else round(float(ncc), 4),
                "mirror_check_ncc": None if mirror is None else [round(float(x), 4) for x in mirror],
                "mirrored": self.mirrored}

    def located(self, names: Mapping[str, int]) -> dict:
        """Per class name: the propagated points in the query, ``kept`` and ``rejected`` by DFD, each a list
        of ``[i, j, k]`` voxel indices of the query as it is stored, e.g. for a viewer to show what DFD did
        (points outside the query's field of view are left out)."""
        by_id = {i: n for n, i in names.items()}

        def native(pts: np.ndarray) -> list:
            if self.view is None:
                return pts.tolist()
            ijk = np.rint(self.view.world_to_native(self.view.to_world(pts))).astype(int)
            return np.clip(ijk, 0, np.asarray(self.view.native_shape) - 1).tolist()

        return {by_id.get(c, str(c)): {"kept": native(p.located[p.keep]), "rejected": native(p.located[~p.keep & p.inside])}
                for c, p in self.propagation.items()}


def support_points(
    scribbles: np.ndarray, class_ids: Sequence[int], stride: int, class_strides: Mapping[int, int] | None = None,
    min_points: int = 0,
) -> dict[int, np.ndarray]:
    """Every ``stride``-th scribble voxel ``(N, 3)`` of each class (empty classes included); ``class_strides``
    ``{class id: stride}`` overrides it per class. A class whose stride would leave fewer than ``min_points``
    points takes the largest stride that leaves that many (every voxel of a class scribbled with fewer)."""
    per = class_strides or {}
    out = {}
    for c in class_ids:
        voxels = np.argwhere(scribbles == c)
        step = max(1, int(per.get(c, stride)))
        if -(-len(voxels) // step) < min_points:
            step = max(1, len(voxels) // max(1, int(min_points)))
        out[c] = voxels[::step]
    return out


def named_support_points(scribbles: np.ndarray, names: Mapping[str, int], stride: int,
                         class_strides: Mapping[str, int] | None = None, min_points: int = 0) -> dict[int, np.ndarray]:
    """:func:`support_points` of every class of ``names`` ``{class name: id}``, with ``class_strides`` given per
    class name (as ``prnet.prelabel.class_strides``; names the support does not have are ignored)."""
    per = {names[n]: int(s) for n, s in (class_strides or {}).items() if n in names}
    return support_points(scribbles, names.values(), stride, per, min_points)


@dataclass(frozen=True)
class SupportSampling:
    """Which support scribble voxels are propagated (:func:`support_points`): every ``stride``-th voxel of a class,
    ``class_strides`` ``{class name: stride}`` for a class that differs, and at least ``min_points`` a class."""

    stride: int = 2
    class_strides: Mapping[str, int] = field(default_factory=dict)
    min_points: int = 0

    def points(self, scribbles: np.ndarray, names: Mapping[str, int]) -> dict[int, np.ndarray]:
        """``{class id: (N, 3)}`` stored voxel indices of ``scribbles`` ``(I, J, K)`` for every class of ``names``."""
        return named_support_points(scribbles, names, self.stride, self.class_strides, self.min_points)


def ordered_points(points: Mapping[int, np.ndarray], names: Mapping[str, int]) -> tuple[list[int], np.ndarray]:
    """The classes that have points, by id, and their points ``(N, 3)`` one after the other: the order in
    which every class is propagated in one call (the batches are full and the spatial regularisation sees
    all points)."""
    classes = [c for c in sorted(names.values()) if len(points.get(c, ())) > 0]
    every = np.concatenate([points[c] for c in classes]) if classes else np.zeros((0, 3), int)
    return classes, every


def encode_support_points(models: Localizer, support01: np.ndarray, every: np.ndarray, propagation: PropagationConfig,
                          device: str = "cpu", group: Group | None = None) -> dict:
    """:func:`~lib.prnet.propagate.encode_support` of the support points ``every`` ``(N, 3)`` (``support01``
    ``(I, J, K)`` in [0, 1]) with the subset that ``propagation`` locates one by one: what
    :func:`propagate_support` keeps in its ``encodings`` (key ``"support"``). ``group``: processes that
    share the work (each encodes its part of the points, all get every encoding)."""
    return encode_support(models, support01, every, propagation.batch_size, device, propagation.precision,
                          fit_subset(len(every), propagation), group=group)


@dataclass
class CanonicalSupport:
    """The support study in the canonical frame: ``hu`` ``(I, J, K)`` HU on ``view``'s grid, its intensity
    ``window`` (knots, values, modality; :func:`lib.intensity.study_window`) and ``points`` ``{class id:
    (N, 3)}``, the scribble voxels of :func:`support_points` carried to the nearest canonical voxels."""

    view: View
    hu: np.ndarray
    window: tuple
    points: dict[int, np.ndarray]


def canonical_support(support: Volume, scribbles: np.ndarray, names: Mapping[str, int], geos: GeoSConfig,
                      spacing_mm: Sequence[float], sampling: SupportSampling = SupportSampling(),
                      modality: str | None = None) -> CanonicalSupport:
    """The support seen as :func:`prelabel` sees it (``scribbles`` ``(I, J, K)`` on the stored grid; the points
    ``sampling`` takes of it)."""
    view = support.view(spacing_mm)
    hu = view.image(support.array)
    native = sampling.points(scribbles, names)
    return CanonicalSupport(view, hu, study_window(hu, geos.window_hu, geos.window_out, modality),
                            {c: canonical_points(view, p) for c, p in native.items()})


def support_encodings(models: Localizer, support: CanonicalSupport, names: Mapping[str, int],
                      propagation: PropagationConfig, device: str = "cpu", group: Group | None = None) -> dict:
    """The ``encodings`` dict :func:`prelabel` fills on its first query, computed ahead (``group``: by
    several processes together, e.g. the ranks of a cohort's pre-labeling)."""
    _, every = ordered_points(support.points, names)
    s01 = normalize_intensity(support.hu, *support.window[:2])
    return {"support": encode_support_points(models, s01, every, propagation, device, group)}


def propagate_support(
    models: Localizer | None,
    support_hu: np.ndarray,
    scribbles: np.ndarray,
    names: Mapping[str, int],
    query_hu: np.ndarray,
    query_spacing: Sequence[float],
    window: tuple[Sequence[float], Sequence[float]],
    propagation: PropagationConfig = PropagationConfig(),
    sampling: SupportSampling = SupportSampling(),
    device: str = "cpu",
    identity: bool = False,
    encodings: dict | None = None,
    support_spacing: Sequence[float] | None = None,
    points: Mapping[int, np.ndarray] | None = None,
    query_window: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Prelabel:
    """Propagate every class's support points (those ``sampling`` takes of ``scribbles``) to the query with
    ``models``; no mask yet.

    ``identity``: the query *is* the support study — its own scribbles are kept as they are.
    ``encodings``: a dict kept by the caller across queries of the same support, network and sampling;
    the support points' encodings are stored in it (key ``"support"``) and reused.
    All classes are propagated together (:func:`propagate`'s spatial regularisation fits one map to all).
    Volumes ``(I, J, K)`` HU, normalised with ``window`` (knots, [0, 1] values; the query with
    ``query_window`` when given, e.g. each MR study with its own); spacings in mm (the support's defaults
    to the query's). ``points``: the support points ``{class id: (N, 3)}`` when the caller chose them
    (:func:`prelabel` maps the stored scribbles into the canonical frame), instead of ``scribbles``.
    """
    out = Prelabel(label=None)
    if points is None:
        pts = sampling.points(scribbles, names)
    else:
        pts = {c: np.asarray(points.get(c, np.zeros((0, 3), int)), int).reshape(-1, 3) for c in names.values()}
    classes, every = ordered_points(pts, names)
    by_id = {i: n for n, i in names.items()}
    out.warnings += [f"support class '{by_id[c]}' (id {c}) has no scribble voxels: skipped"
                     for c in sorted(names.values()) if c not in classes]
    out.points = {c: pts[c] for c in classes}
    if not classes:
        return out
    if identity:
        for cid in classes:
            n = len(pts[cid])
            out.propagation[cid] = Propagation(pts[cid], np.ones(n, np.float32), np.ones(n, bool))
        return out
    s01 = normalize_intensity(support_hu, *window)
    q01 = normalize_intensity(query_hu, *(query_window or window))
    enc = None
    if encodings is not None:
        if "support" not in encodings:
            encodings["support"] = encode_support_points(models, s01, every, propagation, device)
        enc = encodings["support"]
    pr = propagate(models, s01, every, q01, query_spacing, propagation, device=device, encoded_support=enc,
                   support_spacing=support_spacing)
    start = 0
    for cid in classes:
        part = slice(start, start + len(pts[cid]))
        out.propagation[cid] = Propagation(pr.located[part], pr.sim[part], pr.keep[part], pr.inside[part], pr.ncc,
                                           pr.mirror_ncc, pr.mirrored, pr.beyond_mm[part])
        start = part.stop
    return out


def pseudo_mask(
    result: Prelabel,
    background_id: int,
    query_hu: np.ndarray,
    query_spacing: Sequence[float],
    geos: GeoSConfig = GeoSConfig(),
    tau: float | None = None,
    window: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Prelabel:
    """GeoS from the kept points (``sim > tau`` and inside when ``tau`` is given, else each propagation's
    ``keep``); ``window``: the query's intensity knots (default the HU window of ``geos``).

    Sets ``result.label`` (None when no foreground point is kept) and ``result.geos``; returns ``result``.
    """
    seeds = {}
    for cid, pr in result.propagation.items():
        keep = pr.keep if tau is None else (pr.sim > tau) & pr.inside
        mask = np.zeros(query_hu.shape, bool)
        mask[tuple(pr.located[keep].T)] = True
        seeds[cid] = mask
    fg = {c: m for c, m in seeds.items() if c != background_id and m.any()}
    result.label, result.geos = None, {}
    if fg:
        bg = seeds.get(background_id, np.zeros(query_hu.shape, bool))
        result.label, result.geos = geos_segment(query_hu, fg, bg, query_spacing, geos, window=window)
    return result


@dataclass(frozen=True)
class PrelabelConfig:
    """What of the support is propagated, and how the pseudo masks grow (configuration ``prnet.prelabel``)."""

    stride: int = 2  # every n-th support scribble voxel of a class is propagated
    class_strides: Mapping[str, int] = field(default_factory=dict)  # {support class name: n}, overrides ``stride``
    min_points: int = 32  # a class the strides would leave with fewer points keeps this many (all of a smaller one)
    geos: Mapping[str, object] = field(default_factory=dict)  # GeoSConfig keys of the pseudo masks that differ from ``geos``

    def __post_init__(self):
        if int(self.stride) < 1 or any(int(v) < 1 for v in dict(self.class_strides).values()):
            raise ValueError(f"stride and class_strides must be at least 1, got {self.stride} and {dict(self.class_strides)}")
        if int(self.min_points) < 0:
            raise ValueError(f"min_points must be 0 (none) or a number of points, got {self.min_points}")

    @property
    def sampling(self) -> SupportSampling:
        """The support points this section propagates."""
        return SupportSampling(int(self.stride), {str(k): int(v) for k, v in dict(self.class_strides).items()},
                               int(self.min_points))

    def pseudo_mask_geos(self, geos: GeoSConfig) -> GeoSConfig:
        """``geos`` (the interactive tasks' settings) with this section's ``geos`` keys, checked and typed."""
        overrides = dict(self.geos)
        typed = from_section(GeoSConfig, overrides, "prnet.prelabel.geos")
        return replace(geos, **{k: getattr(typed, k) for k in overrides})


def with_tau(cfg: PropagationConfig, tau: float) -> PropagationConfig:
    return replace(cfg, tau=float(tau))


def canonical_points(view: View, native_points: np.ndarray) -> np.ndarray:
    """Stored voxel indices ``(N, 3)`` of a study → the nearest voxels of its canonical ``view`` (duplicates
    removed, first occurrence kept)."""
    if len(native_points) == 0:
        return np.zeros((0, 3), int)
    can = np.rint(view.from_world(view.native_to_world(native_points))).astype(int)
    can = np.clip(can, 0, np.asarray(view.shape) - 1)
    _, first = np.unique(can, axis=0, return_index=True)
    return can[np.sort(first)]


def prelabel(
    models: Localizer | None,
    support: Volume,
    scribbles: np.ndarray,
    names: Mapping[str, int],
    query: Volume,
    background_id: int,
    geos: GeoSConfig,
    propagation: PropagationConfig = PropagationConfig(),
    spacing_mm: Sequence[float] = (3.0, 3.0, 3.0),
    sampling: SupportSampling = SupportSampling(),
    device: str = "cpu",
    identity: bool = False,
    encodings: dict | None = None,
    support_modality: str | None = None,
    query_modality: str | None = None,
) -> Prelabel:
    """The draft of ``query`` from the scribbles of ``support``, in one physical frame.

    Both studies are seen in the canonical frame (:mod:`lib.frame`: RAS axes, voxels of ``spacing_mm``,
    the PRNet's training frame); the stored scribbles ``(I, J, K)`` of ``support`` (the points ``sampling``
    takes: :func:`support_points`) are carried there through world
    coordinates, propagated (:func:`propagate_support`; a point that lands outside the query's field of
    view is dropped), and GeoS expands the kept points on the query's canonical grid.
    ``result.native_label`` is the draft on the query's own grid and orientation. Intensities are
    normalised per study (:func:`lib.intensity.study_window`: the HU window of ``geos`` for CT, the
    study's own range for MR); a support and a query of different modalities raise ``ValueError``
    (PRNet's features do not carry across modalities).
    """
    sup = canonical_support(support, scribbles, names, geos, spacing_mm, sampling, support_modality)
    sview, s_hu, s_win = sup.view, sup.hu, sup.window
    qview = sview if identity else query.view(spacing_mm)
    q_hu = s_hu if identity else qview.image(query.array)
    q_win = s_win if identity else study_window(q_hu, geos.window_hu, geos.window_out, query_modality)
    if s_win[2] != q_win[2]:
        raise ValueError(f"the support study is {s_win[2]} and this study {q_win[2]}: PRNet propagation needs a support "
                         f"of the same modality (scribble a {q_win[2]} study as the support of {q_win[2]} studies)")
    result = propagate_support(
        models, s_hu, scribbles, names, q_hu, qview.spacing, s_win[:2], propagation, sampling, device,
        identity=identity, encodings=encodings, support_spacing=sview.spacing, points=sup.points, query_window=q_win[:2],
    )
    if result.mirrored:
        as_stored, flipped = next(p.mirror_ncc for p in result.propagation.values() if p.mirror_ncc is not None)
        result.warnings.append(f"this study aligns with the support better mirrored left-right (NCC {flipped:.2f} against "
                               f"{as_stored:.2f} as stored): its orientation header may flip left and right, and then the "
                               "draft's sides are swapped; check the study's orientation before trusting its draft")
    by_id = {i: n for n, i in names.items()}
    for cid, pr in result.propagation.items():
        if len(pr.inside) and not pr.inside.any():
            result.warnings.append(f"none of the {len(pr.inside)} support points of '{by_id.get(cid, cid)}' falls inside this "
                                   f"study's field of view (or within {propagation.face_mm:g} mm of it): no draft for it")
    pseudo_mask(result, background_id, q_hu, qview.spacing, geos, window=q_win[:2])
    result.view = qview
    result.native_label = None if result.label is None else qview.to_native(result.label)
    result.frame = {"support_orientation": axcodes(sview.native_affine), "orientation": axcodes(qview.native_affine),
                    "support_spacing_mm": [round(x, 3) for x in sview.native_spacing],
                    "spacing_mm": [round(x, 3) for x in qview.native_spacing],
                    "frame_spacing_mm": [round(x, 3) for x in qview.spacing], "modality": q_win[2]}
    return result
