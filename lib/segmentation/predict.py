"""Sliding-window prediction of the segmentation UNet: used by its infer task and by PLC's corrections."""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from lib.segmentation.config import SegConfig


@torch.no_grad()
def predict_probs(net: torch.nn.Module, image: np.ndarray, cfg: SegConfig, device: str | torch.device = "cpu") -> np.ndarray:
    """Sliding-window (MONAI, Gaussian-weighted) class probabilities ``(C, I, J, K)`` of ``image`` ``(I, J, K)``."""
    net.eval()
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32, device=device)[None, None]
    logits = sliding_window_inference(x, tuple(cfg.patch_size), cfg.sw_batch_size, net, overlap=cfg.sw_overlap, mode="gaussian")
    return torch.softmax(logits, dim=1)[0].cpu().numpy()
