"""Sliding-window prediction of the segmentation UNet: used by its infer task and by PLC's corrections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from lib.frame import View
from lib.intensity import normalise_study
from lib.segmentation.config import SegConfig


@torch.no_grad()
def predict_probs(net: torch.nn.Module, image: np.ndarray, cfg: SegConfig, device: str | torch.device = "cpu") -> np.ndarray:
    """Sliding-window (MONAI, Gaussian-weighted) class probabilities ``(C, I, J, K)`` of ``image`` ``(I, J, K)``."""
    net.eval()
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32, device=device)[None, None]
    logits = sliding_window_inference(x, tuple(cfg.patch_size), cfg.sw_batch_size, net, overlap=cfg.sw_overlap, mode="gaussian")
    return torch.softmax(logits, dim=1)[0].cpu().numpy()


@dataclass(frozen=True)
class StudyProbabilities:
    """The UNet's class probabilities of one study, kept on the model's canonical grid (small) and brought onto the
    study's own grid one box at a time: ``probs`` float ``(C, *view.shape)`` (channel = class id), ``view`` the
    study's canonical view (:class:`lib.frame.View`), ``names`` ``{class name: id}`` of the model."""

    probs: np.ndarray
    view: View
    names: dict[str, int]

    def log_probs(self, box: Sequence[slice], ids: Sequence[int], floor: float = 1e-4) -> np.ndarray:
        """``log P(c | x)`` float32 ``(len(ids), *box shape)`` of the classes ``ids`` on the stored voxels of
        ``box`` (nearest canonical voxel; probabilities floored at ``floor``)."""
        p = self.view.to_native(self.probs[list(ids)], box).astype(np.float32)
        return np.log(np.maximum(p, np.float32(floor)))


def study_probabilities(model, vol, device: str | torch.device = "cpu") -> StudyProbabilities:
    """A published UNet's (:class:`lib.segmentation.checkpoint.PublishedUNet`) class probabilities of a study
    (:class:`lib.io.Volume`): the study seen in the model's frame (RAS axes, its voxel size; :mod:`lib.frame`),
    normalised on its own (CT: the model's window), sliding-window prediction; float32."""
    view = vol.view(model.config.spacing_mm)
    image = normalise_study(view.image(vol.array), *model.window)[0]
    probs = predict_probs(model.net, image, model.config, device)
    return StudyProbabilities(probs, view, dict(model.label_names))
