"""Scribble propagation (paper Eq. 4) and dual-level feature denoising, DFD (Eq. 5), batched.

For every support point ``c0`` (its patch encoded once: ``p(c0)``, ``f2(c0)``, ``f4(c0)``):

1. *coarse jump* (Eq. 4): from ``K`` start points ``c1`` near the query's centre (encoded once, shared by
   all support points), ``c0' = c1 + r · tanh(p(c1) − p(c0)) / e``, averaged over the starts —
   closed-form per point, no forward pass per point;
2. *refinement*: ``c0' ← c0' + r · tanh(p(c0') − p(c0)) / e``, ``refine_steps`` times with the coarse
   model, then ``fine_steps`` times with the fine model and its own ``r`` (encoder only);
2b. *spatial regularisation* (not in the paper; ``regularize``): each point's estimate is noisy, but the
   correspondence between two bodies is smooth. A robust (trimmed least-squares) affine map from the
   support points to their estimates is fitted over all points at once, and every point is moved to its
   image under it. On the sample cohort this halves the localisation error of a CPU-trained PRNet
   (median 20 → 11 mm, ``scripts/bench_prnet.py``); points that the global map carries wrongly are
   what DFD then rejects. Since every point ends at its image under the map, steps 1–2 may run on
   only ``fit_points`` of them (a seeded random subset; 0 = all, this class's default; the app's is 128),
   the others carried by the map alone: their cost is then one DFD forward pass. Without step 2c it is
   faster and less accurate (the sample cohort, 4 studies, 256 of 804 points: 1.5× faster, median error
   11.8 → 13.1 mm); with it, 64, 128 or all 804 points end at the same 3.0 mm;
2c. *intensity refinement* (not in the paper; ``register_steps``, with ``regularize: affine``): the
   affine map is refined by maximising the normalised cross-correlation of the query and the support
   resampled through it (:func:`lib.registration.refine_affine`, a few seconds on a CPU), from three
   starts (:func:`register`: PRNet's map, the best translation of an exhaustive search and the bodies'
   centroids; the one that ends better aligned wins, its NCC is the propagation's ``ncc``). PRNet's map brings studies with
   different fields of view into the basin of the optimisation; the images make it precise: on the sample cohort the median localisation error
   falls from ≈ 11 mm to ≈ 3 mm. The sample cohort is one subject deformed by smooth, mostly affine
   warps, the case most favourable to a global map; between different patients the residual,
   non-affine part is larger;
3. *DFD* (Eq. 5): ``sim = cos(f2(c0), f2(c0')) · cos(f4(c0), f4(c0'))``, decoder features of the fine
   model (of the coarse one when there is no fine model); the point is kept when ``sim > τ``. Two
   details the paper leaves open: both patches of a pair show only what both studies show (where one
   study's field of view ends inside the patch, the other's patch is blanked there too:
   :func:`dfd_in_common_view`), and two all-zero ReLU feature vectors agree (:func:`feature_cosine`).
   On the development set with a 200-step PRNet, both together: the 20-slice slab's draft 0.65 → 0.82
   (mean Dice), a copy identical to the support keeps every point instead of 84 %.

All forward passes run in batches of ``batch_size`` patches, under bfloat16 autocast with ``precision``
``bf16`` (or ``auto`` on hardware with native bfloat16). Points are integer ``(I, J, K)`` voxel
indices; ``r`` is in mm, spacings in mm per axis. Both volumes are on canonical grids
(:mod:`lib.frame`: the same axis directions, voxel sizes chosen in mm): PRNet's patches are voxels,
so they must cover the same millimetres in the support and in the query. A point whose estimate falls
outside the query's grid is reported as not ``inside`` (a slab or a smaller scan does not show it)
and is never kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lib.prnet.network import PRNet
from lib.prnet.patches import changed_by_blanking, common_windows, extract_patches, patch_windows
from lib.registration import affine_ncc, centroid_map, refine_affine, translation_search


@dataclass(frozen=True)
class PropagationConfig:
    n_starts: int = 8
    start_spread: float = 0.1  # starts within ±10 % of the extent around the centre
    refine_steps: int = 2
    fine_steps: int = 2
    tau: float = 0.5
    batch_size: int = 32
    regularize: str = "affine"  # none | affine (step 2b)
    trim: float = 0.3  # the affine fit ignores this fraction of points with the largest residuals
    fit_points: int = 0  # with regularize affine: at most this many points are located to fit the map; 0 = all
    register_steps: int = 100  # with regularize affine: Adam steps per level of the intensity refinement (2c); 0 = off
    register_levels_mm: tuple[float, ...] = (12.0, 6.0)  # its pyramid: voxel size of each level (mm), coarse to fine
    precision: str = "fp32"  # PRNet forward passes: fp32 | bf16 (autocast) | auto (bf16 where the hardware has it)
    mirror_check_steps: int = 50  # with register_steps: Adam steps of the left-right check (:func:`mirror_check`); 0 = off
    mirror_margin: float = 0.02  # a query that aligns better mirrored by more than this NCC is reported as mirrored
    face_mm: float = 0.0  # a point that lands beyond a face of the query's grid by at most this (mm) is placed on the face

    def __post_init__(self):
        if self.regularize not in ("none", "affine"):
            raise ValueError(f"regularize must be 'none' or 'affine', got {self.regularize!r}")
        if not 0.0 <= self.trim < 1.0:
            raise ValueError(f"trim must be in [0, 1), got {self.trim}")
        if self.fit_points < 0 or 0 < self.fit_points < 12:
            raise ValueError(f"fit_points must be 0 (all) or at least 12 (an affine map has 12 parameters), got {self.fit_points}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {self.precision!r}")
        if not float(self.face_mm) >= 0:
            raise ValueError(f"face_mm must be >= 0 (mm), got {self.face_mm!r}")
        if self.register_steps < 0 or not self.register_levels_mm or any(float(v) <= 0 for v in self.register_levels_mm):
            raise ValueError(f"register_steps must be >= 0 and register_levels_mm a non-empty list of voxel sizes > 0 mm, "
                             f"got {self.register_steps} and {list(self.register_levels_mm)}")


@dataclass
class Localizer:
    """The trained PRNet(s): the coarse model and its ``r`` (mm per axis), optionally the fine one."""

    coarse: PRNet
    r_mm: tuple[float, float, float]
    fine: PRNet | None = None
    fine_r_mm: tuple[float, float, float] | None = None

    @property
    def features(self) -> PRNet:
        """The model whose decoder features DFD compares."""
        return self.fine if self.fine is not None else self.coarse


@dataclass
class Propagation:
    located: np.ndarray  # (N, 3) int voxel indices in the query (clipped to its grid)
    sim: np.ndarray  # (N,) DFD similarity (Eq. 5); -1 for a point outside the query (not computed)
    keep: np.ndarray  # (N,) bool, sim > tau (and inside the query)
    inside: np.ndarray | None = None  # (N,) bool: in the query's view: within its grid, or placed on a face (None: all)
    ncc: float | None = None  # how well the final affine map aligns the images (step 2c), None without it
    mirror_ncc: tuple[float, float] | None = None  # :func:`mirror_check`: (as stored, mirrored left-right)
    mirrored: bool = False  # the query aligns better mirrored (by more than ``mirror_margin``): a wrong header?
    beyond_mm: np.ndarray | None = None  # (N,) how far the estimate lay beyond the query's grid (mm; 0: within it)

    def __post_init__(self):
        if self.inside is None:
            self.inside = np.ones(len(self.sim), bool)
        if self.beyond_mm is None:
            self.beyond_mm = np.zeros(len(self.sim), np.float32)

    @property
    def at_face(self) -> np.ndarray:
        """(N,) bool: the points placed on a face of the query's grid (their estimate lay beyond it, within ``face_mm``)."""
        return self.inside & (self.beyond_mm > 0)


def bf16_enabled(precision: str, device="cpu") -> bool:
    """Whether PRNet's forward passes run under bfloat16 autocast: ``bf16``; or ``auto`` on hardware with
    native bfloat16 (a CUDA GPU that supports it; a CPU with AVX-512 BF16 or AMX, as oneDNN reports it)."""
    if precision != "auto":
        return precision == "bf16"
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Group(Protocol):
    """Processes that share a computation (:class:`lib.distributed.Ranks` is one): this one is ``rank`` of
    ``world_size``; ``gather(obj)`` returns every process's ``obj`` in rank order."""

    rank: int
    world_size: int

    def gather(self, obj: Any) -> list[Any]: ...


@torch.no_grad()
def encode(
    net: PRNet, volume: np.ndarray, points: np.ndarray, batch_size: int, decode: bool, device="cpu", precision: str = "fp32",
    group: Group | None = None, windows: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Encode the patches around ``points`` ``(N, 3)``; returns ``p`` and, with ``decode``, ``f2``/``f4``
    (float32 on the CPU whatever ``precision`` the forward passes ran at). ``windows`` ``(N, 3, 2)``: each
    patch is zero outside its window (:func:`lib.prnet.patches.extract_patches`).

    ``group`` of several processes: each computes a contiguous block of the batches (the same batches as
    one process: the same numbers) and every process gets the whole result.
    """
    starts = list(range(0, len(points), batch_size))
    if group is not None and group.world_size > 1 and starts:
        block = np.array_split(np.asarray(starts), group.world_size)[group.rank]
        parts = [p for p in group.gather(_encode_batches(net, volume, points, block, batch_size, decode, device, precision,
                                                         windows)) if p]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return _encode_batches(net, volume, points, starts, batch_size, decode, device, precision, windows)


def _encode_batches(net: PRNet, volume: np.ndarray, points: np.ndarray, starts: Sequence[int], batch_size: int,
                    decode: bool, device, precision: str, windows: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """:func:`encode` of the batches ``points[s : s + batch_size]`` for ``s`` in ``starts`` (``{}`` for none)."""
    net.eval().to(memory_format=torch.channels_last_3d)  # the same numbers, ~1.2x faster convolutions on a CPU
    outs: dict[str, list[torch.Tensor]] = {}
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16_enabled(precision, device))
    for s in starts:
        part = slice(s, s + batch_size)
        x = torch.from_numpy(extract_patches(volume, points[part], net.patch_size, None if windows is None else windows[part]))[:, None]
        x = x.to(device, memory_format=torch.channels_last_3d)
        with autocast:
            o = net(x, decode=decode)
        for k in ("p", "f2", "f4") if decode else ("p",):
            outs.setdefault(k, []).append(o[k].float().cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


def fit_subset(n: int, cfg: "PropagationConfig", seed: int = 0) -> np.ndarray:
    """Indices of the support points that steps 1–2 locate one by one: all ``n``, or with the affine
    regularisation a seeded random subset of ``cfg.fit_points`` (sorted)."""
    if cfg.regularize == "affine" and 0 < cfg.fit_points < n:
        return np.sort(np.random.default_rng(seed).choice(n, size=cfg.fit_points, replace=False))
    return np.arange(n)


@torch.no_grad()
def encode_support(
    models: Localizer, volume: np.ndarray, points: np.ndarray, batch_size: int, device="cpu", precision: str = "fp32",
    located: np.ndarray | None = None, group: Group | None = None,
) -> dict[str, torch.Tensor]:
    """What propagation needs of the support points ``(N, 3)``: the DFD features ``f2`` / ``f4`` of every point,
    and the coordinates ``p`` of the coarse model (and ``p_fine`` of the fine one) of the points that are
    located one by one, the indices ``located`` (default: all; see :func:`fit_subset`), kept under
    ``"located"``. Depends on the support and the models only. ``group``: processes that share the work
    (:func:`encode`)."""
    located = np.arange(len(points)) if located is None else np.asarray(located)
    feats = encode(models.features, volume, points, batch_size, decode=True, device=device, precision=precision, group=group)
    out = {"f2": feats["f2"], "f4": feats["f4"], "located": torch.from_numpy(located)}
    if models.fine is None:
        out["p"] = feats["p"][located]
    else:
        out["p_fine"] = feats["p"][located]  # free: the DFD pass runs the fine model on every point
        out["p"] = encode(models.coarse, volume, points[located], batch_size, decode=False, device=device, precision=precision,
                          group=group)["p"]
    return out


def feature_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of feature vectors ``(N, C)``, with two silent vectors (every channel 0) counted as
    agreeing (1). The decoder's features are ReLU outputs: a narrow map (``f4`` has ``base_channels``
    channels) is all zero at some points of every patch, and the cosine of zero vectors is undefined
    (PyTorch gives 0). Measured with a 200-step PRNet on subject A: 203 of its 1 247 scribble points have a
    silent ``f4``, so a study identical to the support rejected 16 % of its points (kidney_right 34 of 62)
    at their exact positions. One silent and one active vector still score 0."""
    silent = (a.abs().amax(dim=1) == 0) & (b.abs().amax(dim=1) == 0)
    return torch.where(silent, torch.ones((), dtype=a.dtype), F.cosine_similarity(a, b, dim=1))


def dfd_similarity(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]) -> np.ndarray:
    """Eq. 5: ``sim = cos(f2(c0), f2(c0')) · cos(f4(c0), f4(c0'))`` for encoded support / located points
    (:func:`feature_cosine`)."""
    return (feature_cosine(src["f2"], dst["f2"]) * feature_cosine(src["f4"], dst["f4"])).numpy()


def dfd_in_common_view(
    net: PRNet, support: np.ndarray, support_points: np.ndarray, query: np.ndarray, located: np.ndarray,
    encoded: dict[str, torch.Tensor], rows: np.ndarray, cfg: PropagationConfig, device="cpu",
) -> np.ndarray:
    """Eq. 5 for support points ``(N, 3)`` and their located points in the query ``(N, 3)``, each pair of
    patches seeing the same part of the patch window: where one study's field of view ends inside the
    window (a slab, a scan's first and last slices), the other study's patch is blanked there too
    (:func:`lib.prnet.patches.common_windows`), so that DFD compares anatomy with anatomy and not with the
    zeros beyond a volume's edge. ``encoded``: :func:`encode_support`'s features, rows ``rows`` of it
    belonging to these points; a support point whose patch loses part of its window is encoded again.
    Measured on a 20-slice slab of subject A (60 mm of a 96 mm patch): without it, every point near a
    boundary scored low and kidney_right kept none of its 12 points inside the slab."""
    s_win = patch_windows(support.shape, support_points, net.patch_size)
    common = common_windows(patch_windows(query.shape, located, net.patch_size), s_win)
    dst = encode(net, query, located, cfg.batch_size, decode=True, device=device, precision=cfg.precision, windows=common)
    rows_t = torch.from_numpy(np.asarray(rows))
    src = {"f2": encoded["f2"][rows_t].clone(), "f4": encoded["f4"][rows_t].clone()}
    cut = np.flatnonzero((common != s_win).any(axis=(1, 2)))
    # encoded again only where blanking changes the patch (not where the window ends in air, 0 already)
    cut = cut[changed_by_blanking(support, support_points[cut], net.patch_size, common[cut])]
    if len(cut):
        again = encode(net, support, support_points[cut], cfg.batch_size, decode=True, device=device, precision=cfg.precision,
                       windows=common[cut])
        for k in ("f2", "f4"):
            src[k][torch.from_numpy(cut)] = again[k]
    return dfd_similarity(src, dst)


def fit_robust_affine(
    source: np.ndarray, target: np.ndarray, spacing: Sequence[float], trim: float, iterations: int = 3
) -> np.ndarray:
    """The affine map that best carries ``source`` onto ``target``, as a ``(4, 3)`` matrix ``T``:
    a point ``x`` maps to ``[x, 1] @ T``.

    ``source``, ``target``: ``(N, 3)`` voxel coordinates (support, query). Least squares, refitted
    ``iterations`` times on the ``1 − trim`` fraction of points with the smallest residuals (measured in
    mm with the query ``spacing``). With fewer than 12 points, or points that do not span 3D, only the
    median translation is fitted.
    """
    src = np.asarray(source, np.float64)
    dst = np.asarray(target, np.float64)
    centred = src - src.mean(axis=0)
    if len(src) < 12 or np.linalg.matrix_rank(centred, tol=1e-6 * max(1.0, np.abs(centred).max())) < 3:
        return np.vstack([np.eye(3), np.median(dst - src, axis=0)])
    design = np.c_[src, np.ones(len(src))]
    inliers = np.ones(len(src), bool)
    for _ in range(iterations):
        transform, *_ = np.linalg.lstsq(design[inliers], dst[inliers], rcond=None)
        residual = np.linalg.norm((design @ transform - dst) * np.asarray(spacing), axis=1)
        inliers = residual <= np.quantile(residual, 1.0 - trim)
    return transform


def apply_affine(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` ``(N, 3)`` under a ``(4, 3)`` map from :func:`fit_robust_affine`; float ``(N, 3)``."""
    pts = np.asarray(points, np.float64)
    return np.c_[pts, np.ones(len(pts))] @ transform


def robust_affine(
    source: np.ndarray, target: np.ndarray, spacing: Sequence[float], trim: float, iterations: int = 3
) -> np.ndarray:
    """The image of ``source`` under :func:`fit_robust_affine` ``(source, target, ...)``: float ``(N, 3)``
    query voxel coordinates."""
    return apply_affine(fit_robust_affine(source, target, spacing, trim, iterations), source)


def plausible(transform: np.ndarray, support_spacing: Sequence[float], query_spacing: Sequence[float]) -> bool:
    """Whether a ``(4, 3)`` voxel map (support → query) stretches the body 0.5–2× per axis, in mm: two
    bodies in the canonical frame differ in size, not by a factor of two (a degenerate PRNet map, all
    points collapsed, or a refinement that ran away, does)."""
    in_mm = np.diag(query_spacing) @ np.asarray(transform)[:3].T @ np.diag(1.0 / np.asarray(support_spacing, float))
    stretch = np.linalg.svd(in_mm, compute_uv=False)
    return bool(stretch.min() > 0.5 and stretch.max() < 2.0)


def register(
    support: np.ndarray, query: np.ndarray, prnet_map: np.ndarray, support_spacing: Sequence[float],
    query_spacing: Sequence[float], cfg: PropagationConfig, device="cpu",
) -> tuple[np.ndarray, float]:
    """Step 2c from three starts: PRNet's affine map (when :func:`plausible`), the best translation of an
    exhaustive search (:func:`lib.registration.translation_search`) and the bodies' centroids laid on each
    other (:func:`lib.registration.centroid_map`); both studies are in the canonical frame (same axes, true
    size). Each is refined by NCC; the better aligned plausible one is kept. The search finds a slab inside
    a longer support (a 40-slice slab of subject A: the centroids start 109 mm off and the refinement runs
    away, the search starts 0 mm off); the centroids' start is the one from which the refinement undoes a
    header that swaps two axes; both keep a weakly trained PRNet (a degenerate map) from ruining a study.
    Returns ``(map, its NCC)``."""
    best = None
    starts = [translation_search(support, query, support_spacing, query_spacing, max(cfg.register_levels_mm), device)[0],
              centroid_map(support, query, support_spacing, query_spacing)]
    if plausible(prnet_map, support_spacing, query_spacing):
        starts.insert(0, prnet_map)
    for start in starts:
        refined = refine_affine(support, query, start, support_spacing, query_spacing, cfg.register_steps,
                                cfg.register_levels_mm, device=device)
        score = affine_ncc(support, query, refined, support_spacing, query_spacing, min(cfg.register_levels_mm), device)
        if not plausible(refined, support_spacing, query_spacing):
            score = -1.0 - (1.0 - score)  # a map that ran away loses to every plausible one
        if best is None or score > best[1]:
            best = (refined, score)
    return best


def mirror_check(
    support: np.ndarray, query: np.ndarray, support_spacing: Sequence[float], query_spacing: Sequence[float],
    cfg: PropagationConfig, device="cpu",
) -> tuple[float, float]:
    """How well ``query`` aligns with ``support`` as it is stored and mirrored left-right (canonical axis 0 flipped):
    the NCC of :func:`register` from the translation search and the centroids (not PRNet's map), at the coarsest
    level only (``cfg.mirror_check_steps`` steps), for each. A study whose header flips left and right (a
    conversion error) aligns better mirrored: PRNet's drafts of it are mirrored too. On the development set and
    the sample cohort (``scripts/bench_mirror.py``; support subject A, CT, and mr_b, MR): every correctly stored
    study aligns better as stored (by 0.05–0.37), the mirrored copy of subject A better mirrored (by 0.07); a
    chest CT against the abdominal support ties (0.000). 0.2–1.6 s for both on one CPU core."""
    coarse = replace(cfg, register_levels_mm=(max(cfg.register_levels_mm),), register_steps=cfg.mirror_check_steps)
    none = np.zeros((4, 3))  # not plausible: the two image-based starts only
    return tuple(register(support, q, none, support_spacing, query_spacing, coarse, device)[1]  # type: ignore[return-value]
                 for q in (query, np.ascontiguousarray(query[::-1])))


def propagate(
    models: Localizer,
    support: np.ndarray,
    support_points: np.ndarray,
    query: np.ndarray,
    query_spacing: Sequence[float],
    cfg: PropagationConfig = PropagationConfig(),
    seed: int = 0,
    device="cpu",
    encoded_support: dict[str, torch.Tensor] | None = None,
    support_spacing: Sequence[float] | None = None,
) -> Propagation:
    """Locate ``support_points`` ``(N, 3)`` of ``support`` in ``query`` (both ``(I, J, K)`` in [0, 1]).

    ``query_spacing`` / ``support_spacing``: mm per axis (the support's defaults to the query's; only the
    intensity refinement of the affine map uses it).

    ``encoded_support``: :func:`encode_support` of these support points, when already computed
    (it depends on the support and the models only, not on the query); made for another subset of
    located points (another ``fit_points`` or ``regularize``), it is computed again.
    """
    pts = np.asarray(support_points, int)
    if len(pts) == 0:
        return Propagation(np.zeros((0, 3), int), np.zeros(0), np.zeros(0, bool), np.zeros(0, bool))
    shape = np.asarray(query.shape)
    e = torch.tensor(query_spacing, dtype=torch.float32)
    r = torch.tensor(models.r_mm, dtype=torch.float32)
    # the points located one by one: all of them, or with the affine regularisation a subset to fit it
    located_ids = fit_subset(len(pts), cfg, seed)
    src = encoded_support
    if src is None or not np.array_equal(src["located"].numpy(), located_ids):
        src = encode_support(models, support, pts, cfg.batch_size, device, cfg.precision, located_ids)
    net = models.coarse

    rng = np.random.default_rng(seed)
    spread = np.maximum(1, np.rint(shape * cfg.start_spread)).astype(int)
    starts = np.clip(shape // 2 + rng.integers(-spread, spread + 1, size=(cfg.n_starts, 3)), 0, shape - 1)
    p_starts = encode(net, query, starts, cfg.batch_size, decode=False, device=device, precision=cfg.precision)["p"]  # (K, 3)
    jump = r * torch.tanh(p_starts[None, :, :] - src["p"][:, None, :]) / e  # (n, K, 3) voxels
    located = (torch.from_numpy(starts).float()[None] + jump).mean(dim=1)

    def clip(x: torch.Tensor) -> np.ndarray:
        return np.clip(np.rint(x.numpy()), 0, shape - 1).astype(int)

    stages = [(net, r, "p")] * cfg.refine_steps
    if models.fine is not None:
        stages += [(models.fine, torch.tensor(models.fine_r_mm, dtype=torch.float32), "p_fine")] * cfg.fine_steps
    for model, r_stage, key in stages:
        p_cur = encode(model, query, clip(located), cfg.batch_size, decode=False, device=device, precision=cfg.precision)["p"]
        located = torch.from_numpy(clip(located)).float() + r_stage * torch.tanh(p_cur - src[key]) / e
    ncc, mirror = None, None
    if cfg.regularize == "affine":
        transform = fit_robust_affine(pts[located_ids], located.numpy(), query_spacing, cfg.trim)
        if cfg.register_steps:
            transform, ncc = register(support, query, transform, support_spacing or query_spacing, query_spacing, cfg, device)
            if cfg.mirror_check_steps:
                mirror = mirror_check(support, query, support_spacing or query_spacing, query_spacing, cfg, device)
        located = torch.from_numpy(apply_affine(transform, pts))
    final = clip(located)
    # a point whose estimate falls beyond the query's grid (by more than half a voxel) lies outside its field of
    # view: the query does not show it (a slab, a smaller scan); DFD never keeps it. Within ``face_mm`` of a face it
    # is placed on the face (``final`` is clipped), where the structure it marks goes on into the view (the aorta
    # runs through every slab; a slab between two scribbled slices holds none of their points), and DFD decides.
    beyond = located.numpy() - np.clip(located.numpy(), -0.5, shape - 0.5)
    beyond_mm = np.abs(beyond * np.asarray(query_spacing, np.float32)).max(axis=1).astype(np.float32)
    inside = beyond_mm <= cfg.face_mm
    # DFD (the decoder pass, most of a study's time) for those inside only: a slab or a smaller scan skips the rest
    sim = np.full(len(final), -1.0, np.float32)  # the lowest Eq. 5 can give: below every tau
    if inside.any():
        sim[inside] = dfd_in_common_view(models.features, support, pts[inside], query, final[inside], src, np.flatnonzero(inside),
                                         cfg, device)
    mirrored = mirror is not None and mirror[1] > mirror[0] + cfg.mirror_margin
    return Propagation(final, sim, (sim > cfg.tau) & inside, inside, ncc, mirror, mirrored, beyond_mm)
