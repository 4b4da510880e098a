"""From support scribbles to a pseudo mask of a query study: propagate (Eq. 4), DFD (Eq. 5), GeoS (§3.4).

Every class of the support scribble map (the background is its own class) is subsampled with
``stride``, propagated to the query, filtered by DFD, and the kept points seed a multi-class GeoS.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from lib.geos import GeoSConfig, geos_segment, normalize_intensity
from lib.prnet.propagate import Localizer, Propagation, PropagationConfig, encode_support, fit_subset, propagate


@dataclass
class Prelabel:
    label: np.ndarray | None  # (I, J, K) uint8 class ids; None when no foreground point was kept
    points: dict[int, np.ndarray] = field(default_factory=dict)  # class id -> (N, 3) support points used
    propagation: dict[int, Propagation] = field(default_factory=dict)  # class id -> located / sim / keep
    warnings: list[str] = field(default_factory=list)
    geos: dict = field(default_factory=dict)

    def stats(self, names: Mapping[str, int]) -> dict:
        """Per class: points propagated, kept, mean DFD similarity; and the overall confidence."""
        by_id = {i: n for n, i in names.items()}
        classes = {
            by_id.get(c, str(c)): {"points": int(len(p.sim)), "kept": int(p.keep.sum()), "mean_sim": float(np.mean(p.sim)) if len(p.sim) else 0.0}
            for c, p in self.propagation.items()
        }
        sims = [v["mean_sim"] for v in classes.values()]
        return {"confidence": float(np.mean(sims)) if sims else 0.0, "classes": classes}

    def located(self, names: Mapping[str, int]) -> dict:
        """Per class name: the propagated points in the query, ``kept`` and ``rejected`` by DFD, each a list
        of ``[i, j, k]`` voxel indices (the query's axis order), e.g. for a viewer to show what DFD did."""
        by_id = {i: n for n, i in names.items()}
        return {by_id.get(c, str(c)): {"kept": p.located[p.keep].tolist(), "rejected": p.located[~p.keep].tolist()}
                for c, p in self.propagation.items()}


def support_points(
    scribbles: np.ndarray, class_ids: Sequence[int], stride: int, class_strides: Mapping[int, int] | None = None
) -> dict[int, np.ndarray]:
    """Every ``stride``-th scribble voxel ``(N, 3)`` of each class (empty classes included); ``class_strides``
    ``{class id: stride}`` overrides it per class."""
    per = class_strides or {}
    return {c: np.argwhere(scribbles == c)[:: max(1, int(per.get(c, stride)))] for c in class_ids}


def propagate_support(
    models: Localizer | None,
    support_hu: np.ndarray,
    scribbles: np.ndarray,
    names: Mapping[str, int],
    query_hu: np.ndarray,
    query_spacing: Sequence[float],
    window: tuple[Sequence[float], Sequence[float]],
    propagation: PropagationConfig = PropagationConfig(),
    stride: int = 2,
    device: str = "cpu",
    identity: bool = False,
    encodings: dict | None = None,
    support_spacing: Sequence[float] | None = None,
    class_strides: Mapping[str, int] | None = None,
) -> Prelabel:
    """Propagate every class's support points (``stride``-subsampled, or as ``class_strides`` ``{class name:
    stride}`` says for a class) to the query with ``models``; no mask yet.

    ``identity``: the query *is* the support study — its own scribbles are kept as they are.
    ``encodings``: a dict kept by the caller across queries of the same support, network and strides;
    the support points' encodings are stored in it (key ``"support"``) and reused.
    All classes are propagated together (:func:`propagate`'s spatial regularisation fits one map to all).
    Volumes ``(I, J, K)`` HU, normalised with ``window`` (HU knots, [0, 1] values); spacings in mm (the
    support's defaults to the query's).
    """
    out = Prelabel(label=None)
    pts = support_points(scribbles, names.values(), stride, {names[n]: s for n, s in (class_strides or {}).items() if n in names})
    classes = []
    for name, cid in sorted(names.items(), key=lambda kv: kv[1]):
        if len(pts[cid]) == 0:
            out.warnings.append(f"support class '{name}' (id {cid}) has no scribble voxels: skipped")
        else:
            classes.append(cid)
            out.points[cid] = pts[cid]
    if not classes:
        return out
    if identity:
        for cid in classes:
            n = len(pts[cid])
            out.propagation[cid] = Propagation(pts[cid], np.ones(n, np.float32), np.ones(n, bool))
        return out
    # every class in one call: the batches are full and the spatial regularisation sees all points
    every = np.concatenate([pts[c] for c in classes])
    s01 = normalize_intensity(support_hu, *window)
    q01 = normalize_intensity(query_hu, *window)
    enc = None
    if encodings is not None:
        if "support" not in encodings:
            encodings["support"] = encode_support(models, s01, every, propagation.batch_size, device, propagation.precision,
                                                  fit_subset(len(every), propagation))
        enc = encodings["support"]
    pr = propagate(models, s01, every, q01, query_spacing, propagation, device=device, encoded_support=enc,
                   support_spacing=support_spacing)
    start = 0
    for cid in classes:
        part = slice(start, start + len(pts[cid]))
        out.propagation[cid] = Propagation(pr.located[part], pr.sim[part], pr.keep[part])
        start = part.stop
    return out


def pseudo_mask(
    result: Prelabel,
    background_id: int,
    query_hu: np.ndarray,
    query_spacing: Sequence[float],
    geos: GeoSConfig = GeoSConfig(),
    tau: float | None = None,
) -> Prelabel:
    """GeoS from the kept points (``sim > tau`` when ``tau`` is given, else each propagation's ``keep``).

    Sets ``result.label`` (None when no foreground point is kept) and ``result.geos``; returns ``result``.
    """
    seeds = {}
    for cid, pr in result.propagation.items():
        keep = pr.keep if tau is None else pr.sim > tau
        mask = np.zeros(query_hu.shape, bool)
        mask[tuple(pr.located[keep].T)] = True
        seeds[cid] = mask
    fg = {c: m for c, m in seeds.items() if c != background_id and m.any()}
    result.label, result.geos = None, {}
    if fg:
        bg = seeds.get(background_id, np.zeros(query_hu.shape, bool))
        result.label, result.geos = geos_segment(query_hu, fg, bg, query_spacing, geos)
    return result


def pseudo_mask_geos(conf: Mapping) -> GeoSConfig:
    """The GeoS settings of the pseudo masks: the app's ``geos`` section, overridden by ``prnet.geos``."""
    return GeoSConfig.from_dict({**conf["geos"], **(conf.get("prnet", {}).get("geos") or {})})


def with_tau(cfg: PropagationConfig, tau: float) -> PropagationConfig:
    return replace(cfg, tau=float(tau))
