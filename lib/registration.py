"""Intensity-based refinement of an affine map between two CT volumes (global normalised cross-correlation).

Used by PRNet propagation (``lib/prnet/propagate.py``, step 2c): PRNet's points give a robust but
coarse affine map from the support to the query; maximising the NCC of the two images over the 12
affine parameters, starting from that map, sharpens it. PRNet supplies the initialisation (studies
with different fields of view, far outside the basin of a registration started from the identity);
the images supply the accuracy.

Volumes are ``(I, J, K)`` arrays in [0, 1] (already windowed), spacings in mm per axis; maps are
``(4, 3)`` matrices ``T`` on voxel indices, a moving voxel ``x`` mapping to the fixed voxel
``[x, 1] @ T`` (as :func:`lib.prnet.propagate.fit_robust_affine` returns). The optimisation runs
coarse to fine: at each level both volumes are average-pooled to about ``level_mm`` per voxel, the
fixed one's pooled voxel centres are carried into the moving one (exact voxel geometry: a pooled voxel
is the mean of its block, centred on the block's centre) and Adam updates the map, held as normalised
coordinates ``u = 2 x / (n − 1) − 1`` of the full-resolution volumes so that its 12 numbers have
comparable scales.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi


def global_ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of two tensors of the same shape, over all their elements (in [-1, 1])."""
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + 1e-8)


def _half_extent(shape: Sequence[int]) -> np.ndarray:
    return (np.asarray(shape, np.float64) - 1.0) / 2.0


def voxel_to_normalised(transform: np.ndarray, moving_shape: Sequence[int], fixed_shape: Sequence[int]) -> np.ndarray:
    """``(4, 3)`` voxel map moving → fixed to ``(3, 4)`` ``[A | c]``: fixed → moving in normalised
    coordinates, ``u_moving = A u_fixed + c`` (axis order ``(I, J, K)``)."""
    m = np.asarray(transform, np.float64)
    fwd = np.linalg.inv(m[:3].T)  # fixed voxel y -> moving voxel x = fwd (y - b)
    offset = -fwd @ m[3]
    hm, hf = _half_extent(moving_shape), _half_extent(fixed_shape)
    # x = fwd y + offset, y = hf (u_f + 1), u_m = x / hm - 1
    a = np.diag(1.0 / hm) @ fwd @ np.diag(hf)
    c = (fwd @ hf + offset) / hm - 1.0
    return np.c_[a, c]


def normalised_to_voxel(theta: np.ndarray, moving_shape: Sequence[int], fixed_shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`voxel_to_normalised`."""
    theta = np.asarray(theta, np.float64)
    a, c = theta[:, :3], theta[:, 3]
    hm, hf = _half_extent(moving_shape), _half_extent(fixed_shape)
    fwd = np.diag(hm) @ a @ np.diag(1.0 / hf)  # fixed voxel -> moving voxel
    offset = hm * (c + 1.0 - a @ np.ones(3))
    inv = np.linalg.inv(fwd)
    return np.vstack([inv.T, -(inv @ offset)])


def _pool(volume: torch.Tensor, spacing: Sequence[float], level_mm: float) -> tuple[torch.Tensor, np.ndarray]:
    """``volume`` ``(1, 1, I, J, K)`` average-pooled by about ``level_mm / spacing`` voxels per axis, and the factors."""
    factors = np.array([min(max(1, int(round(level_mm / s))), n) for s, n in zip(spacing, volume.shape[2:])])
    return (F.avg_pool3d(volume, tuple(int(f) for f in factors)) if factors.max() > 1 else volume), factors


def _centres(pooled_shape: Sequence[int], factors: np.ndarray, full_shape: Sequence[int], device) -> torch.Tensor:
    """Normalised full-resolution coordinates ``(n0, n1, n2, 3)`` of the centres of the pooled voxels."""
    axes = [torch.as_tensor((np.arange(n) * f + (f - 1) / 2.0) / h - 1.0, dtype=torch.float32, device=device)
            for n, f, h in zip(pooled_shape, factors, _half_extent(full_shape))]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def refine_affine(
    moving: np.ndarray,
    fixed: np.ndarray,
    transform: np.ndarray,
    moving_spacing: Sequence[float],
    fixed_spacing: Sequence[float],
    steps: int = 100,
    levels_mm: Sequence[float] = (12.0, 6.0),
    lr: float = 0.01,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Refine ``transform`` (``(4, 3)``, moving voxel → fixed voxel) by maximising the global NCC of
    ``fixed`` and ``moving`` resampled through it; ``steps`` Adam steps at each pyramid level
    (``levels_mm``: voxel size of each level, coarse to fine; a level where either pooled volume is
    thinner than 4 voxels is skipped).

    Returns the refined ``(4, 3)`` map. The NCC is computed over the whole fixed volume (outside the
    moving one the resampled image is 0).
    """
    if steps <= 0:
        return np.asarray(transform, np.float64)
    theta = torch.tensor(voxel_to_normalised(transform, moving.shape, fixed.shape), dtype=torch.float32, device=device)
    theta.requires_grad_(True)
    mov = torch.from_numpy(np.ascontiguousarray(moving, np.float32))[None, None].to(device)
    fix = torch.from_numpy(np.ascontiguousarray(fixed, np.float32))[None, None].to(device)
    hm = torch.as_tensor(_half_extent(moving.shape), dtype=torch.float32, device=device)
    for level_mm in levels_mm:
        m, gm = _pool(mov, moving_spacing, level_mm)
        f, gf = _pool(fix, fixed_spacing, level_mm)
        if min(*m.shape[2:], *f.shape[2:]) < 4:
            continue
        u_fixed = _centres(f.shape[2:], gf, fixed.shape, device)
        # full-resolution normalised moving coordinates -> normalised coordinates of the pooled moving volume
        n_m = torch.as_tensor(m.shape[2:], dtype=torch.float32, device=device)
        g = torch.as_tensor(gm, dtype=torch.float32, device=device)
        opt = torch.optim.Adam([theta], lr=lr)
        for _ in range(steps):
            u_moving = u_fixed @ theta[:, :3].T + theta[:, 3]
            x = (u_moving + 1.0) * hm  # moving voxels
            u_pooled = 2.0 * (x - (g - 1.0) / 2.0) / (g * (n_m - 1.0)) - 1.0
            grid = u_pooled.flip(-1)[None]  # grid_sample lists the last tensor axis first
            loss = -global_ncc(F.grid_sample(m, grid, align_corners=True), f)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return normalised_to_voxel(theta.detach().cpu().numpy(), moving.shape, fixed.shape)


@torch.no_grad()
def affine_ncc(
    moving: np.ndarray,
    fixed: np.ndarray,
    transform: np.ndarray,
    moving_spacing: Sequence[float],
    fixed_spacing: Sequence[float],
    level_mm: float = 6.0,
    device: str | torch.device = "cpu",
) -> float:
    """Global NCC of ``fixed`` and ``moving`` resampled through ``transform`` (``(4, 3)``, moving voxel →
    fixed voxel), both average-pooled to about ``level_mm``: how well the map aligns the two images
    (1 = perfectly; a map that carries the support onto the wrong anatomy or off the query scores low)."""
    theta = torch.tensor(voxel_to_normalised(transform, moving.shape, fixed.shape), dtype=torch.float32, device=device)
    mov = torch.from_numpy(np.ascontiguousarray(moving, np.float32))[None, None].to(device)
    fix = torch.from_numpy(np.ascontiguousarray(fixed, np.float32))[None, None].to(device)
    m, gm = _pool(mov, moving_spacing, level_mm)
    f, gf = _pool(fix, fixed_spacing, level_mm)
    u_fixed = _centres(f.shape[2:], gf, fixed.shape, device)
    hm = torch.as_tensor(_half_extent(moving.shape), dtype=torch.float32, device=device)
    n_m = torch.as_tensor(m.shape[2:], dtype=torch.float32, device=device)
    g = torch.as_tensor(gm, dtype=torch.float32, device=device)
    x = (u_fixed @ theta[:, :3].T + theta[:, 3] + 1.0) * hm
    grid = (2.0 * (x - (g - 1.0) / 2.0) / (g * (n_m - 1.0)) - 1.0).flip(-1)[None]
    return float(global_ncc(F.grid_sample(m, grid, align_corners=True), f))


def centroid_map(moving: np.ndarray, fixed: np.ndarray, moving_spacing: Sequence[float], fixed_spacing: Sequence[float],
                 threshold: float = 0.05) -> np.ndarray:
    """The ``(4, 3)`` map (moving voxel → fixed voxel) that lays the two bodies' intensity centroids on each
    other, at true size and without rotation: the prior of two studies in the same canonical frame (RAS
    axes, :mod:`lib.frame`). ``threshold``: voxels above it (of [0, 1] volumes) make up a body."""
    def centroid(v: np.ndarray) -> np.ndarray:
        w = np.where(v > threshold, v, 0.0)
        return np.asarray(ndi.center_of_mass(w)) if w.sum() > 0 else (np.asarray(v.shape) - 1) / 2.0

    scale = np.asarray(moving_spacing, float) / np.asarray(fixed_spacing, float)
    return np.vstack([np.diag(scale), centroid(fixed) - centroid(moving) * scale])


@torch.no_grad()
def translation_search(moving: np.ndarray, fixed: np.ndarray, moving_spacing: Sequence[float], fixed_spacing: Sequence[float],
                       level_mm: float = 12.0, device: str | torch.device = "cpu") -> tuple[np.ndarray, float]:
    """The translation (true size, no rotation) that best lays ``moving`` on ``fixed``, by an exhaustive search.

    Both volumes are average-pooled to about ``level_mm`` per voxel (the moving one then resampled to the
    fixed one's pooled voxel size) and the global NCC of ``fixed`` with the shifted ``moving`` (0 outside
    it, as :func:`refine_affine` scores) is computed for every shift in whole pooled voxels that keeps the
    fixed volume's centre within the moving one: one 3D cross-correlation (``conv3d``), a fraction of a
    second on a CPU. It finds a slab of a few centimetres inside a longer support, where laying the two
    bodies' centroids on each other (:func:`centroid_map`) starts the refinement 10 cm away from it.

    Returns ``(map, its NCC at the search level)``, the ``(4, 3)`` map moving voxel → fixed voxel.
    """
    ms, fs = np.asarray(moving_spacing, float), np.asarray(fixed_spacing, float)
    f, gf = _pool(torch.from_numpy(np.ascontiguousarray(fixed, np.float32))[None, None].to(device), fs, level_mm)
    m, gm = _pool(torch.from_numpy(np.ascontiguousarray(moving, np.float32))[None, None].to(device), ms, level_mm)
    step = fs * gf  # mm per voxel of the search grid (the fixed volume's pooled voxels)
    size = [max(1, int(round(n * s / p))) for n, s, p in zip(m.shape[2:], ms * gm, step)]
    m = F.interpolate(m, size=size, mode="trilinear", align_corners=False)  # same extent, ``step`` mm voxels
    half = np.asarray(f.shape[2:]) // 2
    padded = F.pad(m, [int(half[a]) for a in (2, 2, 1, 1, 0, 0)])  # F.pad lists the last axis first
    f0 = f - f.mean()
    n = float(f.numel())
    ones = torch.ones_like(f)
    s1, s2 = F.conv3d(padded, ones), F.conv3d(padded * padded, ones)
    ncc = F.conv3d(padded, f0) / (f0.norm() * (s2 - s1 * s1 / n).clamp_min(0.0).sqrt() + 1e-8)
    best = int(torch.argmax(ncc))
    # output index o: the fixed volume's first voxel face at (o - half) * step mm from the moving one's
    corner = (np.array(np.unravel_index(best, ncc.shape[2:])) - half) * step
    # moving voxel x (centre (x + 1/2) ms mm from its corner) -> fixed voxel ((x + 1/2) ms - corner) / fs - 1/2
    scale = ms / fs
    return np.vstack([np.diag(scale), (0.5 * ms - corner) / fs - 0.5]), float(ncc.flatten()[best])
