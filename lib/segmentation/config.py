"""Settings of the segmentation network and its training (``configs/app.yaml``, section ``segmentation``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lib.noise.plc import PLCSchedule

STRATEGIES = ("none", "plc", "oeem", "mcpm")  # noise strategies, cheapest first
LR_DECAYS = ("poly", "none")


@dataclass(frozen=True)
class MCPMConfig:
    meta_lr: float = 1e-3  # β of Eq. 4 (Adam on the mask net)
    alpha: float | None = None  # α of the virtual step (Eq. 3); None: the segmentation learning rate
    mask_channels: int = 8
    scope: str = "all"  # all: the paper's look-ahead; head: last layer only (cheaper)
    meta_batch: int = 2  # clean patches per meta step (on CPU, PyTorch's batch-1 conv3d path is slower than batch 2)
    meta_every: int = 2  # update the mask net every n-th step (1: every step, the paper); other steps reuse it
    method: str = "finite_difference"  # meta-gradient: finite_difference (no double backward) | autograd


@dataclass(frozen=True)
class OEEMConfig:
    per_class: bool = True  # Eq. 6 within each class of a patch (lib/noise/oeem.py); False: over the whole patch, the paper


@dataclass(frozen=True)
class SegConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    patch_size: tuple[int, int, int] = (48, 48, 48)  # voxels of the canonical frame (R, A, S); multiples of the total stride
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)  # the canonical frame (lib/frame.py) it trains and infers in
    batch_size: int = 2
    lr: float = 1e-3
    lr_decay: str = "poly"  # poly: lr · (1 − step / (epochs · steps_per_epoch))^0.9 (nnU-Net's schedule); none: constant
    epochs: int = 20
    steps_per_epoch: int = 50
    background_ratio: float = 1.0  # patch centres: background with this weight, each organ with weight 1
    dice_weight: float = 1.0  # loss = CE (per-voxel, reweighted by the strategy) + dice_weight · Dice
    noise_strategy: str = "none"
    sw_batch_size: int = 4
    sw_overlap: float = 0.25
    # inference: per class, fragments below this fraction of its largest component take their next class
    # (lib/segmentation/postprocess.py); 0 = plain argmax
    min_component_fraction: float = 0.25
    plc: PLCSchedule = field(default_factory=PLCSchedule)
    mcpm: MCPMConfig = field(default_factory=MCPMConfig)
    oeem: OEEMConfig = field(default_factory=OEEMConfig)
