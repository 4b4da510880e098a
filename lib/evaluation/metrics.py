"""Overlap metrics of label volumes ``(I, J, K)`` (class ids or bool masks), and choosing a setting without
looking at the scan it is scored on. One definition each: the workflow, the benchmarks and the tests use these."""

from __future__ import annotations

from typing import Mapping

import numpy as np


def dice_per_organ(pred: np.ndarray | None, truth: np.ndarray, names: Mapping[str, int],
                   pred_names: Mapping[str, int] | None = None, present_only: bool = False) -> dict[str, float]:
    """``{organ: Dice}``; ``pred_names`` maps the organ names to the prediction's ids (default: ``names``);
    ``pred`` None: nothing predicted.

    An organ absent from both volumes scores 1 (:func:`dice`), unless ``present_only``: then only the organs in
    ``truth`` (the study's field of view) are scored.
    """
    pred_names = pred_names or names
    out = {}
    for organ, tid in names.items():
        t = truth == tid
        if present_only and not t.any():
            continue
        p = pred == pred_names[organ] if pred is not None and organ in pred_names else np.zeros_like(t)
        out[organ] = dice(p, t)
    return out


def mean_dice(rows: list[Mapping[str, float]]) -> dict[str, float]:
    """Per-organ mean over studies and ``"mean"`` over organs."""
    organs = list(rows[0]) if rows else []
    out = {o: float(np.mean([r[o] for r in rows])) for o in organs}
    out["mean"] = float(np.mean(list(out.values()))) if out else 0.0
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks; two empty masks agree (1)."""
    s = int(a.sum() + b.sum())
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)


def leave_one_group_out(scores: Mapping[str, Mapping[tuple, float]], groups: Mapping[tuple, str]) -> dict:
    """Choose a setting without looking at the scan it is scored on.

    ``scores``: ``{setting: {case: score}}`` over the same cases; ``groups``: ``{case: group}`` (a subject
    and the scans derived from it). For each group, the setting with the best mean over the OTHER groups
    (each group weighing the same) is chosen and scored on this group. Returns ``{"chosen": {group:
    setting}, "score": {group: its mean with the chosen setting}, "mean": mean over groups}``.
    """
    names = sorted(set(groups.values()))

    def group_mean(setting: str, g: str) -> float:
        return float(np.mean([v for c, v in scores[setting].items() if groups[c] == g]))

    chosen, score = {}, {}
    for g in names:
        others = [h for h in names if h != g] or [g]
        chosen[g] = max(scores, key=lambda s: np.mean([group_mean(s, h) for h in others]))
        score[g] = group_mean(chosen[g], g)
    return {"chosen": chosen, "score": score, "mean": float(np.mean(list(score.values())))}
