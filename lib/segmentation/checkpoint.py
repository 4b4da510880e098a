"""The segmentation UNet's published model file (``segmentation.pt``): what it records and how it is read back.

A plain ``torch.save`` dict: the UNet's ``state_dict``, the :class:`~lib.segmentation.config.SegConfig` it was
trained with (its canonical frame ``spacing_mm``, the network's sizes), ``num_classes`` and the classes'
``label_names`` (``{name: id}``), the intensity ``window`` (CT: HU knots → [0, 1] values), the noise strategy
and the epoch reached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch

from lib.config import from_section
from lib.segmentation.config import SegConfig
from lib.segmentation.network import build_unet

NAME = "segmentation"  # the model's files are <NAME>.pt, <NAME>_checkpoint.pt, ... (lib.tasks.models.ModelFiles)


@dataclass(frozen=True)
class PublishedUNet:
    """A loaded ``segmentation.pt``."""

    net: torch.nn.Module
    config: SegConfig
    label_names: dict[str, int]
    window: tuple[tuple[float, ...], tuple[float, ...]]
    noise_strategy: str
    epoch: int


def unet_state(net: torch.nn.Module, cfg: SegConfig, num_classes: int, label_names: Mapping[str, int],
               window: Sequence[Sequence[float]], epoch: int) -> dict[str, Any]:
    """The contents of ``segmentation.pt``."""
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    return {"state_dict": net.state_dict(), "config": config, "num_classes": int(num_classes),
            "label_names": dict(label_names), "window": [list(w) for w in window],
            "noise_strategy": cfg.noise_strategy, "epoch": int(epoch)}


def load_unet(path: str, device: str = "cpu") -> PublishedUNet:
    """The published UNet on ``device``, in eval mode, with what its file records."""
    blob = torch.load(path, map_location=device, weights_only=False)
    cfg = from_section(SegConfig, blob["config"], f"the settings recorded in {path}")
    net = build_unet(cfg, int(blob["num_classes"]))
    net.load_state_dict(blob["state_dict"])
    window = tuple(tuple(float(x) for x in w) for w in blob["window"])
    return PublishedUNet(net.to(device).eval(), cfg, dict(blob["label_names"]), window,
                         str(blob.get("noise_strategy", cfg.noise_strategy)), int(blob.get("epoch", 0)))
