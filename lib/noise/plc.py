"""Progressive Label Correction (PLC), as used by the PRNet paper (§3.4) to train on noisy pseudo masks.

Paper: "For each point c_i, if the prediction of f_θ is different from its pseudo mask l(c_i) and its
confidence is above the threshold, f_θ(c_i) > δ, the label l(c_i) is flipped to the prediction of f_θ";
δ = 0.95 at the start, × 0.99 every epoch, down to 0.85. Never uses ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PLCSchedule:
    delta0: float = 0.95
    decay: float = 0.99  # per epoch
    floor: float = 0.85
    warmup_epochs: int = 0  # epochs trained before the first correction (an untrained net is confidently wrong)

    def delta(self, epoch: int) -> float | None:
        """δ used after epoch ``epoch`` (0-based): ``max(floor, delta0 · decay^(epoch − warmup))``, or None
        (no correction) during the warm-up epochs."""
        if epoch < self.warmup_epochs:
            return None
        return max(self.floor, self.delta0 * self.decay ** (epoch - self.warmup_epochs))


def plc_correct(label: np.ndarray, probs: np.ndarray, delta: float) -> tuple[np.ndarray, int]:
    """One PLC pass over a volume.

    Args:
        label: current (pseudo) label ``(I, J, K)``, integer class ids ``0..C-1``.
        probs: the network's class probabilities ``(C, I, J, K)`` (softmax over axis 0).
        delta: confidence threshold δ.

    Returns:
        ``(corrected, n_flipped)``: a voxel takes the predicted class where the prediction differs from
        ``label`` and its probability exceeds ``delta``; every other voxel keeps its label.
    """
    if probs.shape[1:] != label.shape:
        raise ValueError(f"probabilities {probs.shape} do not match the label {label.shape}")
    pred = probs.argmax(axis=0)
    conf = np.take_along_axis(probs, pred[None], axis=0)[0]
    flip = (pred != label) & (conf > delta)
    out = np.where(flip, pred, label).astype(label.dtype)
    return out, int(flip.sum())
