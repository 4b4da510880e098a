"""Intensity-based refinement of an affine map between two CT volumes (global normalised cross-correlation).

Used by PRNet propagation (``lib/prnet/propagate.py``, step 2c): PRNet's points give a robust but
coarse affine map from the support to the query; maximising the NCC of the two images over the 12
affine parameters, starting from that map, sharpens it. PRNet supplies the initialisation (studies
with different fields of view, far outside the basin of a registration started from the identity);
the images supply the accuracy.

Volumes are ``(I, J, K)`` arrays in [0, 1] (already windowed); maps are ``(4, 3)`` matrices ``T`` on
voxel indices, a moving voxel ``x`` mapping to the fixed voxel ``[x, 1] @ T`` (as
:func:`lib.prnet.propagate.fit_robust_affine` returns). Optimisation runs coarse to fine on
average-pooled copies (``levels``: pooling factors), with Adam on ``theta``, PyTorch's normalised
``affine_grid`` parameters (fixed → moving, axis order ``(K, J, I)``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# (I, J, K) <-> (K, J, I): torch's grid coordinates list the last tensor axis first
_FLIP = np.eye(3)[::-1]


def global_ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of two tensors of the same shape, over all their elements (in [-1, 1])."""
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + 1e-8)


def _scales(shape: Sequence[int]) -> np.ndarray:
    return np.asarray(shape, np.float64) - 1.0


def voxel_to_theta(transform: np.ndarray, moving_shape: Sequence[int], fixed_shape: Sequence[int]) -> np.ndarray:
    """``(4, 3)`` voxel map moving → fixed to ``affine_grid``'s ``(3, 4)`` ``theta`` (fixed → moving,
    normalised coordinates with ``align_corners=True``, torch axis order)."""
    m = np.asarray(transform, np.float64)
    fwd = np.linalg.inv(m[:3].T)  # fixed voxel y -> moving voxel x = fwd @ (y - b)
    offset = -fwd @ m[3]
    sm, sf = _scales(moving_shape), _scales(fixed_shape)
    # x = fwd y + offset with y = (u_f + 1) sf / 2 and u_m = 2 x / sm - 1
    a = np.diag(2.0 / sm) @ fwd @ np.diag(sf / 2.0)
    c = np.diag(2.0 / sm) @ (fwd @ (sf / 2.0) + offset) - 1.0
    return np.c_[_FLIP @ a @ _FLIP, _FLIP @ c]


def theta_to_voxel(theta: np.ndarray, moving_shape: Sequence[int], fixed_shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`voxel_to_theta`."""
    theta = np.asarray(theta, np.float64)
    a, c = _FLIP @ theta[:, :3] @ _FLIP, _FLIP @ theta[:, 3]
    sm, sf = _scales(moving_shape), _scales(fixed_shape)
    fwd = np.diag(sm / 2.0) @ a @ np.diag(2.0 / sf)  # fixed voxel -> moving voxel
    offset = np.diag(sm / 2.0) @ (c + 1.0 - a @ np.ones(3))
    inv = np.linalg.inv(fwd)
    return np.vstack([inv.T, -(inv @ offset)])


def refine_affine(
    moving: np.ndarray,
    fixed: np.ndarray,
    transform: np.ndarray,
    steps: int = 100,
    levels: Sequence[int] = (4, 2),
    lr: float = 0.01,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Refine ``transform`` (``(4, 3)``, moving voxel → fixed voxel) by maximising the global NCC of
    ``fixed`` and ``moving`` resampled through it; ``steps`` Adam steps per pyramid level.

    Returns the refined ``(4, 3)`` map. The NCC is computed over the whole fixed volume (outside the
    moving one the resampled image is 0).
    """
    if steps <= 0:
        return np.asarray(transform, np.float64)
    theta = torch.tensor(voxel_to_theta(transform, moving.shape, fixed.shape), dtype=torch.float32, device=device)
    theta.requires_grad_(True)
    mov = torch.from_numpy(np.ascontiguousarray(moving, np.float32))[None, None].to(device)
    fix = torch.from_numpy(np.ascontiguousarray(fixed, np.float32))[None, None].to(device)
    for factor in levels:
        if factor > 1 and min(*moving.shape, *fixed.shape) // factor < 4:
            continue  # a volume this small has nothing to register at this level
        m, f = (F.avg_pool3d(mov, factor), F.avg_pool3d(fix, factor)) if factor > 1 else (mov, fix)
        opt = torch.optim.Adam([theta], lr=lr)
        for _ in range(steps):
            grid = F.affine_grid(theta[None], list(f.shape), align_corners=True)
            loss = -global_ncc(F.grid_sample(m, grid, align_corners=True), f)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return theta_to_voxel(theta.detach().cpu().numpy(), moving.shape, fixed.shape)
