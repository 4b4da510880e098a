"""The segmentation network: MONAI's 3D UNet with instance normalisation (MCPM's virtual forward must not
update running statistics)."""

from __future__ import annotations

from monai.networks.nets import UNet

from lib.segmentation.config import SegConfig


def build_unet(cfg: SegConfig, num_classes: int):
    """UNet: ``(B, 1, I, J, K)`` image in [0, 1] → ``(B, num_classes, I, J, K)`` logits."""
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=num_classes,
        channels=tuple(cfg.channels),
        strides=tuple(cfg.strides),
        num_res_units=cfg.num_res_units,
        norm="instance",
    )
