"""Online Easy Example Mining (OEEM, Li et al. MICCAI 2022, §2.2, Eq. 6).

Eq. 6, normalised loss: ``W = sm(−L) / mean(sm(−L))`` where ``sm`` is the softmax over the voxels of one
patch and ``L`` its per-voxel cross-entropy map (no gradient through the weights). Low-loss (easy, likely
clean) voxels weigh more. A patch whose pseudo label holds a single class is left unweighted (``W = 1``).
The loss is ``mean(W · CE)``.

The paper segments two classes (gland / not). With several organs in a patch, one softmax over all its
voxels hands nearly all the weight to the class learnt first (background): an organ whose voxels still
have a high loss gets ``exp(−ΔL)`` of its cross-entropy, learns slower, keeps its high loss, and can
vanish. ``per_class=True`` applies Eq. 6 within each class of the patch's pseudo label instead (each
class keeps its share of the loss, mean weight 1 over its voxels; within it, easy voxels still weigh more).
"""

from __future__ import annotations

import torch


def oeem_weights(loss_map: torch.Tensor, labels: torch.Tensor, per_class: bool = False) -> torch.Tensor:
    """Eq. 6 per patch (``per_class``: per class of each patch).

    Args:
        loss_map: per-voxel loss ``(B, *spatial)`` (detached inside).
        labels: the (pseudo) labels ``(B, *spatial)``, integer classes.
        per_class: normalise within each class of the patch's labels instead of over the whole patch.

    Returns:
        weights ``(B, *spatial)``, mean 1 over each patch (``per_class``: over each class of it).
    """
    b = loss_map.shape[0]
    flat = -loss_map.detach().reshape(b, -1)
    lab = labels.reshape(b, -1)
    if per_class:
        w = torch.ones_like(flat)
        for c in torch.unique(lab):
            member = lab == c
            sm = torch.softmax(flat.masked_fill(~member, float("-inf")), dim=1)  # NaN in a row without c: unused
            w = torch.where(member, sm * member.sum(dim=1, keepdim=True), w)
    else:
        sm = torch.softmax(flat, dim=1)
        w = sm / sm.mean(dim=1, keepdim=True)
    single = (lab == lab[:, :1]).all(dim=1)
    w = torch.where(single[:, None], torch.ones_like(w), w)
    return w.reshape(loss_map.shape)
