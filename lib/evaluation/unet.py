"""Train the segmentation UNet in process (the trainer task's loop, :meth:`lib.segmentation.train.SegTrainer.fit`)
and score it against the ground truth: what the noise and support benchmarks compare strategies with."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lib.evaluation.metrics import dice
from lib.segmentation.config import SegConfig
from lib.segmentation.data import Study
from lib.segmentation.postprocess import remove_fragments
from lib.segmentation.train import SegTrainer


def score_unet(trainer: SegTrainer, images: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray],
               names: Mapping[str, int], studies: Sequence[str], fraction: float | None = None) -> dict[str, float]:
    """``{organ: mean Dice over studies}`` of the trainer's predictions (``fraction``: the app's fragment removal,
    :func:`lib.segmentation.postprocess.remove_fragments`; None: plain argmax)."""
    preds = {}
    for s in studies:
        probs = trainer.predict(images[s])
        preds[s] = probs.argmax(0) if fraction is None else remove_fragments(probs, fraction)
    return {n: float(np.mean([dice(preds[s] == c, gt[s] == c) for s in studies])) for n, c in names.items()}


def train_and_score(cfg: SegConfig, studies: Sequence[Study], images: Mapping[str, np.ndarray],
                    gt: Mapping[str, np.ndarray], names: Mapping[str, int], seed: int,
                    scored: Mapping[str, Sequence[str]], fraction: float | None = None) -> dict[str, dict[str, float]]:
    """Train a UNet (``cfg``'s strategy and budget, ``seed``) on ``studies`` and score it on each set of ``scored``
    (``{"val": [...], "test": [...]}``): ``{set: {organ: mean Dice}}``."""
    trainer = SegTrainer(cfg, max(names.values()) + 1, seed=seed)
    trainer.fit(list(studies))
    return {k: score_unet(trainer, images, gt, names, ids, fraction) for k, ids in scored.items()}
