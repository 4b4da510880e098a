"""Meta Corrupted Pixels Mining (MCPM, Wang et al., §3): per-voxel loss weights from a meta mask network,
learned by a one-step look-ahead on a small clean meta set.

- §3.2, the meta mask network ``R = G(L; Θ)``: two convolutions (3×3×3 and 5×5×5 here, in 3D) on the
  per-voxel loss map ``L``, their outputs fused with ``L`` by a 1×1×1 convolution; a sigmoid gives weights
  in (0, 1).
- §3.3, one iteration:
  Eq. 3 (virtual step)  ``W'(Θ) = W − α ∇_W mean(R(Θ) · L(W))``;
  Eq. 4 (meta step)     ``Θ ← Θ − β ∇_Θ L̂_meta(W'(Θ))`` on a clean batch;
  Eq. 5 (real step)     ``W ← W − α ∇_W mean(R(Θ_new) · L(W))``.

The virtual forward uses ``torch.func.functional_call`` with ``{name: W − α g}``; the segmentation
network must use instance (not batch) normalisation so the virtual forward changes no running stats.
The training forward is computed once and reused by the real step (Eq. 5 is taken at the same ``W``).
``scope="head"`` restricts the look-ahead to the network's last layer (a cheaper approximation, cf.
FaMUS, Xu et al. CVPR 2021); ``scope="all"`` is the paper's full look-ahead.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn as nn
from torch.func import functional_call

LossMap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> (B, 1, *spatial)
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> scalar


class MetaMaskNet(nn.Module):
    """``G(L; Θ)``: ``(B, 1, *spatial)`` loss map → ``(B, 1, *spatial)`` weights in (0, 1)."""

    def __init__(self, channels: int = 8, spatial_dims: int = 3):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.conv3 = nn.Sequential(conv(1, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.conv5 = nn.Sequential(conv(1, channels, 5, padding=2), nn.ReLU(inplace=True))
        self.fuse = conv(2 * channels + 1, 1, 1)
        nn.init.zeros_(self.fuse.weight)  # starts at R = sigmoid(b): every voxel weighs the same
        nn.init.constant_(self.fuse.bias, 2.0)

    def forward(self, loss_map: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fuse(torch.cat([loss_map, self.conv3(loss_map), self.conv5(loss_map)], dim=1)))


def lookahead_parameters(net: nn.Module, scope: Literal["all", "head"]) -> dict[str, torch.Tensor]:
    """The parameters the virtual step (Eq. 3) moves: all of them, or the output layer's (the last
    module, in registration order, that owns parameters)."""
    named = dict(net.named_parameters())
    if scope == "all":
        return named
    if scope != "head":
        raise ValueError(f"unknown MCPM scope '{scope}' (all | head)")
    owners = [(m, list(mod.named_parameters(recurse=False))) for m, mod in net.named_modules()]
    module, params = [(m, p) for m, p in owners if p][-1]
    return {f"{module}.{n}" if module else n: p for n, p in params}


def meta_gradients(
    net: nn.Module,
    mask_net: MetaMaskNet,
    x: torch.Tensor,
    y: torch.Tensor,
    L: torch.Tensor,
    extra: torch.Tensor | None,
    meta_x: torch.Tensor,
    meta_y: torch.Tensor,
    loss_map: LossMap,
    meta_loss: Loss,
    alpha: float,
    scope: Literal["all", "head"] = "all",
    method: Literal["autograd", "finite_difference"] = "finite_difference",
    fd_eps: float = 1e-2,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Eq. 3–4: gradients of the meta loss ``L̂(W'(Θ))`` w.r.t. the mask net's parameters Θ (nothing is stepped).

    Args:
        x, y: the noisy training batch, ``(B, 1, *spatial)`` image and labels.
        L: ``loss_map(net(x), y)``, ``(B, 1, *spatial)``, with its graph to ``net``'s parameters (kept:
            Eq. 5 reuses it).
        extra: an unweighted loss term of the same forward (e.g. Dice), or None.
        meta_x, meta_y: a clean batch, ``(M, 1, *spatial)``.
        alpha: the virtual step size α.
        method: ``autograd`` differentiates through the virtual step (``create_graph``, second order);
            ``finite_difference`` uses the chain rule ``∂L̂/∂R_i = −α/N · ⟨∇_W' L̂, ∇_W L_i⟩`` (the inner
            product of §3.4) with the per-voxel directional derivatives ``⟨∇_W L_i, v⟩`` taken by a central
            difference of two extra forwards at ``W ± ε v`` (as DARTS, Liu et al. ICLR 2019, Eq. 8), which
            avoids the double backward; ``ε = fd_eps / ‖v‖``.

    Returns:
        ``(grads, meta_loss_value)``: one gradient per mask-net parameter and the meta loss at ``W'``.
        The networks' ``.grad`` fields are not touched.
    """
    weights = mask_net(L.detach())
    params = lookahead_parameters(net, scope)
    extra = extra if extra is not None else 0.0
    if method == "autograd":
        inner = (weights * L).mean() + extra
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, retain_graph=True)
        fast = {n: p - alpha * g for (n, p), g in zip(params.items(), grads)}
        meta = meta_loss(functional_call(net, fast, (meta_x,)), meta_y)
        return list(torch.autograd.grad(meta, list(mask_net.parameters()))), meta.detach()
    if method != "finite_difference":
        raise ValueError(f"unknown MCPM meta-gradient method '{method}' (autograd | finite_difference)")
    inner = (weights.detach() * L).mean() + extra
    grads = torch.autograd.grad(inner, list(params.values()), retain_graph=True)
    fast = {n: (p - alpha * g).detach().requires_grad_(True) for (n, p), g in zip(params.items(), grads)}
    meta = meta_loss(functional_call(net, fast, (meta_x,)), meta_y)
    v = torch.autograd.grad(meta, list(fast.values()))  # ∇_W' L̂
    norm = torch.sqrt(sum((g * g).sum() for g in v))
    eps = fd_eps / float(norm.clamp_min(1e-12))
    with torch.no_grad():
        plus = loss_map(functional_call(net, {n: p + eps * g for (n, p), g in zip(params.items(), v)}, (x,)), y)
        minus = loss_map(functional_call(net, {n: p - eps * g for (n, p), g in zip(params.items(), v)}, (x,)), y)
        directional = (plus - minus) / (2 * eps)  # ⟨∇_W L_i, v⟩ per voxel
    d_weights = -alpha * directional / L.numel()  # ∂L̂/∂R_i through W'(R) = W − α/N Σ R_i ∇L_i
    return list(torch.autograd.grad(weights, list(mask_net.parameters()), grad_outputs=d_weights)), meta.detach()


def mcpm_step(
    net: nn.Module,
    mask_net: MetaMaskNet,
    optimizer: torch.optim.Optimizer,
    mask_optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    meta_x: torch.Tensor,
    meta_y: torch.Tensor,
    loss_map: LossMap,
    extra_loss: Loss | None,
    meta_loss: Loss,
    alpha: float,
    scope: Literal["all", "head"] = "all",
    method: Literal["autograd", "finite_difference"] = "finite_difference",
) -> dict[str, float]:
    """One MCPM iteration (Eq. 3–5) on a training batch ``x (B, 1, *spatial)``, ``y (B, 1, *spatial)``.

    ``extra_loss`` (e.g. Dice) is added unweighted to the weighted per-voxel loss in Eq. 3 and Eq. 5.
    """
    logits = net(x)
    L = loss_map(logits, y)
    extra = extra_loss(logits, y) if extra_loss is not None else None
    grads, meta = meta_gradients(net, mask_net, x, y, L, extra, meta_x, meta_y, loss_map, meta_loss, alpha, scope, method)
    mask_optimizer.zero_grad(set_to_none=True)
    for p, g in zip(mask_net.parameters(), grads):
        p.grad = g
    mask_optimizer.step()
    with torch.no_grad():
        weights = mask_net(L.detach())  # R(Θ_new), Eq. 5
    loss = (weights * L).mean() + (extra if extra is not None else 0.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "meta_loss": float(meta), "weight_mean": float(weights.mean())}
