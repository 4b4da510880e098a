"""Self-supervised PRNet training (paper Eq. 1–3).

Two points ``c0``, ``c1`` of the same unlabeled volume, patches ``x(c0)``, ``x(c1)``:

- Eq. 1: ``d10 = (c1 - c0) ∘ e`` — the true offset in mm (``e`` the spacing);
- Eq. 2: ``d'10 = r · tanh(p(c0) - p(c1))`` — the predicted offset, ``r`` (mm, per axis) covering the
  largest offset;
- Eq. 3: ``L = ⅓‖d10 − d'10‖² + (‖x(c0) − xʳ(c0)‖² + ‖x(c1) − xʳ(c1)‖²) / N``.

So the displacement from a point A to a point B is predicted as ``r · tanh(p(A) − p(B))`` (mm).
Volumes are ``(I, J, K)`` arrays normalised to [0, 1]; spacing in mm per axis.

Coarse to fine (as the reference code does): a *coarse* PRNet learns offsets across the whole volume
(independent pairs, ``r`` = the volume's extent), a *fine* PRNet learns short offsets (pairs within
``fine_max_offset_mm``, ``r = fine_r_mm``); propagation jumps with the coarse one, then refines with the
fine one, and DFD compares the fine one's decoder features. The coarse model's decoder is then unused, so
it trains on the offset term of Eq. 3 alone (4.5× the pairs/s on a CPU); without a fine model it trains on
the whole of Eq. 3. Pair centres ``c0`` are drawn inside the body (normalised intensity > ``body_min``):
a patch of air carries no position, and on an abdominal CT about half the grid is air.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lib.prnet.network import PRNet
from lib.prnet.patches import extract_patches


@dataclass(frozen=True)
class PRNetConfig:
    patch_size: tuple[int, int, int] = (32, 32, 32)
    base_channels: int = 8
    r_mm: tuple[float, float, float] = (400.0, 400.0, 400.0)  # must cover the largest offset
    batch_pairs: int = 4
    lr: float = 1e-4
    max_offset_mm: float | None = None  # None: independent pairs over the whole volume
    fine_r_mm: tuple[float, float, float] | None = (60.0, 60.0, 60.0)  # None: no fine model
    fine_max_offset_mm: float = 30.0
    body_min: float | None = 0.0  # c0 where the normalised intensity exceeds this; None: anywhere
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)  # the canonical frame's voxel (lib/frame.py): studies are
    # resampled to it for training and propagation, so a patch covers the same millimetres in every study
    fc_hidden: int = 256  # hidden units of the position head (lib/prnet/network.py)
    max_steps: int = 2000  # the trainer's budget: each step trains every model on one batch of pairs
    checkpoint_every: int = 50  # steps between checkpoints (and publications of the model)

    def stage(self, fine: bool) -> tuple[tuple[float, float, float], float | None, bool]:
        """``(r_mm, max_offset_mm, reconstruct)`` of the coarse or the fine model."""
        if fine:
            if self.fine_r_mm is None:
                raise ValueError("this configuration has no fine model (fine_r_mm is None)")
            return tuple(self.fine_r_mm), self.fine_max_offset_mm, True
        return tuple(self.r_mm), self.max_offset_mm, self.fine_r_mm is None


def sample_points(volume: np.ndarray, n: int, rng: np.random.Generator, body_min: float | None = None) -> np.ndarray:
    """``n`` voxel indices ``(n, 3)``, uniform over the voxels whose value exceeds ``body_min`` (rejection
    sampling, no index list in memory); uniform over the grid when ``body_min`` is None or too few qualify."""
    shape = np.asarray(volume.shape)
    if body_min is None:
        return rng.integers(0, shape, size=(n, 3))
    found = np.zeros((0, 3), int)
    for _ in range(20):
        c = rng.integers(0, shape, size=(4 * n, 3))
        found = np.concatenate([found, c[volume[tuple(c.T)] > body_min]])
        if len(found) >= n:
            return found[:n]
    return np.concatenate([found, rng.integers(0, shape, size=(n, 3))])[:n]


def sample_pairs(
    volume: np.ndarray,
    spacing: Sequence[float],
    n: int,
    rng: np.random.Generator,
    max_offset_mm: float | None = None,
    body_min: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` point pairs of ``volume``: ``(c0 (n, 3), c1 (n, 3), d10_mm (n, 3))`` (Eq. 1).

    ``max_offset_mm`` None: ``c1`` independent of ``c0``; else ``c1 = c0`` + uniform ±max_offset_mm per axis.
    ``body_min``: independent points are drawn where the volume exceeds it (:func:`sample_points`).
    """
    shape = np.asarray(volume.shape)
    c0 = sample_points(volume, n, rng, body_min)
    if max_offset_mm is None:
        c1 = sample_points(volume, n, rng, body_min)
    else:
        step = np.rint(rng.uniform(-1, 1, size=(n, 3)) * max_offset_mm / np.asarray(spacing)).astype(int)
        c1 = np.clip(c0 + step, 0, shape - 1)
    return c0, c1, ((c1 - c0) * np.asarray(spacing)).astype(np.float32)


def prnet_loss(
    net: PRNet, x0: torch.Tensor, x1: torch.Tensor, d10_mm: torch.Tensor, r_mm: torch.Tensor, reconstruct: bool = True
) -> dict:
    """Eq. 2–3 on a batch: ``x0``, ``x1`` ``(B, 1, *patch)``, ``d10_mm`` ``(B, 3)``, ``r_mm`` ``(3,)``.

    ``reconstruct`` False: the offset term only (the decoder is not run).
    """
    x = torch.cat([x0, x1])
    out = net(x, decode=reconstruct)
    b = x0.shape[0]
    p0, p1 = out["p"][:b], out["p"][b:]
    pred = r_mm * torch.tanh(p0 - p1)
    l_dis = F.mse_loss(pred, d10_mm)  # mean over the 3 axes and the batch: the ⅓‖·‖² of Eq. 3
    # (‖·‖² + ‖·‖²) / N, averaged over the batch
    l_rec = F.mse_loss(out["recon"], x) * 2 if reconstruct else torch.zeros((), device=x.device)
    return {"loss": l_dis + l_rec, "dis": l_dis.detach(), "rec": l_rec.detach(), "err_mm": (pred - d10_mm).detach().abs().mean()}


def train_prnet(
    net: PRNet | torch.nn.Module,
    volumes: Sequence[np.ndarray],
    spacings: Sequence[Sequence[float]],
    cfg: PRNetConfig,
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    callback: Callable[[int, dict], bool | None] | None = None,
    fine: bool = False,
    part: slice = slice(None),
) -> torch.optim.Optimizer:
    """``steps`` Adam steps of Eq. 3 on random pairs; ``callback(step, stats)`` returning True stops early.

    ``fine``: train ``net`` as the fine model (short pairs, ``cfg.fine_r_mm``), else as the coarse one.
    ``part``: the pairs of each batch of ``cfg.batch_pairs`` this process computes, for data-parallel
    training (:meth:`lib.distributed.Ranks.split_batch`; ``net`` then a DDP module, which averages the
    gradients): every process draws a batch from its ``seed`` and takes its part.
    Returns the optimizer (its state carries on across calls, e.g. after a resume).
    """
    net.to(device).train()
    optimizer = optimizer or torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(seed)
    r_mm, max_offset, reconstruct = cfg.stage(fine)
    r = torch.tensor(r_mm, dtype=torch.float32, device=device)
    for step in range(steps):
        v = int(rng.integers(len(volumes)))
        c0, c1, d = sample_pairs(volumes[v], spacings[v], cfg.batch_pairs, rng, max_offset, cfg.body_min)
        c0, c1, d = c0[part], c1[part], d[part]
        x0 = torch.from_numpy(extract_patches(volumes[v], c0, cfg.patch_size))[:, None].to(device)
        x1 = torch.from_numpy(extract_patches(volumes[v], c1, cfg.patch_size))[:, None].to(device)
        parts = prnet_loss(net, x0, x1, torch.from_numpy(d).to(device), r, reconstruct)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        if callback is not None and callback(step, {k: float(v.detach()) for k, v in parts.items()}):
            break
    return optimizer
