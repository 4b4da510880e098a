"""Online Easy Example Mining (OEEM, Li et al. MICCAI 2022, §2.2, Eq. 6).

Eq. 6, normalised loss: ``W = sm(−L) / mean(sm(−L))`` where ``sm`` is the softmax over the voxels of one
patch and ``L`` its per-voxel cross-entropy map (no gradient through the weights). Low-loss (easy, likely
clean) voxels weigh more. A patch whose pseudo label holds a single class is left unweighted (``W = 1``).
The loss is ``mean(W · CE)``.
"""

from __future__ import annotations

import torch


def oeem_weights(loss_map: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 6 per patch.

    Args:
        loss_map: per-voxel loss ``(B, *spatial)`` (detached inside).
        labels: the (pseudo) labels ``(B, *spatial)``, integer classes.

    Returns:
        weights ``(B, *spatial)``, mean 1 over each patch.
    """
    b = loss_map.shape[0]
    flat = -loss_map.detach().reshape(b, -1)
    sm = torch.softmax(flat, dim=1)
    w = sm / sm.mean(dim=1, keepdim=True)
    lab = labels.reshape(b, -1)
    single = (lab == lab[:, :1]).all(dim=1)
    w = torch.where(single[:, None], torch.ones_like(w), w)
    return w.reshape(loss_map.shape)
