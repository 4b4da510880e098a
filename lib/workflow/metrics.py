"""Dice per organ between label volumes ``(I, J, K)`` of class ids."""

from __future__ import annotations

from typing import Mapping

import numpy as np


def dice_per_organ(pred: np.ndarray, truth: np.ndarray, names: Mapping[str, int],
                   pred_names: Mapping[str, int] | None = None) -> dict[str, float]:
    """``{organ: Dice}``; ``pred_names`` maps the organ names to the prediction's ids (default: ``names``).

    An organ absent from both volumes scores 1; absent from one of them, 0.
    """
    pred_names = pred_names or names
    out = {}
    for organ, tid in names.items():
        t = truth == tid
        p = pred == pred_names[organ] if organ in pred_names else np.zeros_like(t)
        denom = int(t.sum() + p.sum())
        out[organ] = 1.0 if denom == 0 else float(2 * (t & p).sum() / denom)
    return out


def mean_dice(rows: list[Mapping[str, float]]) -> dict[str, float]:
    """Per-organ mean over studies and ``"mean"`` over organs."""
    organs = list(rows[0]) if rows else []
    out = {o: float(np.mean([r[o] for r in rows])) for o in organs}
    out["mean"] = float(np.mean(list(out.values()))) if out else 0.0
    return out
