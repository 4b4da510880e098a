"""PRNet's published model file (``prnet.pt``): what it records and how it is read back.

A plain ``torch.save`` dict: the coarse model's ``state_dict`` (and the fine one's, ``fine_state_dict``,
unless the configuration has none), the :class:`~lib.prnet.train.PRNetConfig` it was trained with (its
canonical frame ``spacing_mm``, ``r_mm``, the network's sizes), the intensity ``window`` the studies were
normalised with (CT: HU knots → [0, 1] values; MR studies use their own range) and the training ``step``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import torch

from lib.config import from_section
from lib.prnet.network import PRNet
from lib.prnet.propagate import Localizer
from lib.prnet.train import PRNetConfig

NAME = "prnet"  # the model's files are <NAME>.pt, <NAME>_checkpoint.pt, ... (lib.tasks.models.ModelFiles)
STATE_KEYS = {"coarse": "state_dict", "fine": "fine_state_dict"}


@dataclass(frozen=True)
class PublishedPRNet:
    """A loaded ``prnet.pt``: the model(s), their settings, the intensity window and the step they reached."""

    localizer: Localizer
    config: PRNetConfig
    window: tuple[tuple[float, ...], tuple[float, ...]] | None  # None: written before the window was recorded
    step: int


def build_prnet(cfg: PRNetConfig) -> PRNet:
    """An untrained PRNet of ``cfg``'s sizes."""
    return PRNet(cfg.patch_size, cfg.base_channels, cfg.fc_hidden)


def prnet_state(nets: dict[str, PRNet], cfg: PRNetConfig, window: Sequence[Sequence[float]], step: int) -> dict[str, Any]:
    """The contents of ``prnet.pt`` for ``nets`` (``{"coarse": ..., "fine": ...}``)."""
    blob: dict[str, Any] = {STATE_KEYS[k]: n.state_dict() for k, n in nets.items()}
    blob.update({"config": asdict(cfg), "fc_hidden": cfg.fc_hidden, "window": [list(w) for w in window], "step": step})
    return blob


def load_prnet(path: str, device: str = "cpu") -> PublishedPRNet:
    """The published PRNet model(s) on ``device``, in eval mode."""
    blob = torch.load(path, map_location=device, weights_only=False)
    config = dict(blob["config"])
    config.setdefault("fc_hidden", int(blob.get("fc_hidden", 256)))  # files written before it was a setting
    cfg = from_section(PRNetConfig, config, f"the settings recorded in {path}")
    if STATE_KEYS["fine"] not in blob:
        cfg = replace(cfg, fine_r_mm=None)

    def build(state: dict) -> PRNet:
        net = build_prnet(cfg)
        net.load_state_dict(state)
        return net.to(device).eval()

    fine = build(blob[STATE_KEYS["fine"]]) if cfg.fine_r_mm is not None else None
    window = tuple(tuple(float(x) for x in w) for w in blob["window"]) if blob.get("window") else None
    return PublishedPRNet(Localizer(build(blob[STATE_KEYS["coarse"]]), cfg.r_mm, fine, cfg.fine_r_mm), cfg, window,
                          int(blob.get("step", 0)))
