"""PRNet (paper Fig. 3): encoder, fully connected head to an anatomical coordinate, decoder.

- encoder: 4 blocks (two Conv3d-InstanceNorm-ReLU) each followed by 2×2×2 max-pooling, then a
  bottleneck block — its output is ``m0``;
- FC head: the flattened ``m0`` → 3 numbers ``p(c)`` (the patch's anatomical coordinate);
- decoder: 4 blocks, each a 2×2×2 trilinear upsampling, concatenation with the encoder's skip and
  two convolutions; ``m_i`` is the map after ``i`` upsamplings, ``m4`` at input resolution;
- reconstruction head: 1×1×1 convolution + sigmoid on ``m4`` (input intensities are in [0, 1]).

``f2`` / ``f4`` are the centre feature vectors of ``m2`` / ``m4`` (DFD, Eq. 5).

Patches are ``(B, 1, D0, D1, D2)`` with every size a multiple of 16 and ≥ 32, in the volume's ``(I, J, K)``
axis order.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        Convolution(3, cin, cout, kernel_size=3, norm="INSTANCE", act="RELU"),
        Convolution(3, cout, cout, kernel_size=3, norm="INSTANCE", act="RELU"),
    )


class PRNet(nn.Module):
    def __init__(self, patch_size: Sequence[int] = (32, 32, 32), base_channels: int = 16, fc_hidden: int = 256):
        super().__init__()
        if any(s % 16 or s < 32 for s in patch_size):
            raise ValueError(
                f"patch size {tuple(patch_size)}: each size must be a multiple of 16 and at least 32 "
                "(4 downsamplings; instance norm needs a bottleneck larger than one voxel)"
            )
        self.patch_size = tuple(int(s) for s in patch_size)
        c = [base_channels * m for m in (1, 2, 4, 8, 8)]  # enc1..enc4, bottleneck
        self.enc = nn.ModuleList([_block(1, c[0]), _block(c[0], c[1]), _block(c[1], c[2]), _block(c[2], c[3])])
        self.pool = nn.MaxPool3d(2)
        self.bottleneck = _block(c[3], c[4])
        n_bottleneck = c[4] * int(torch.prod(torch.tensor([s // 16 for s in self.patch_size])))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(n_bottleneck, fc_hidden), nn.ReLU(inplace=True), nn.Linear(fc_hidden, 3))
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.dec = nn.ModuleList([_block(c[4] + c[3], c[3]), _block(c[3] + c[2], c[2]), _block(c[2] + c[1], c[1]), _block(c[1] + c[0], c[0])])
        self.recon = nn.Sequential(nn.Conv3d(c[0], 1, kernel_size=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, decode: bool = True) -> dict[str, torch.Tensor]:
        """``x`` ``(B, 1, *patch_size)`` in [0, 1].

        Returns ``p`` ``(B, 3)``; with ``decode``: ``recon`` (like ``x``), ``f2`` ``(B, C2)`` and
        ``f4`` ``(B, C4)`` (centre feature vectors of ``m2`` and ``m4``).
        """
        skips = []
        h = x
        for enc in self.enc:
            h = enc(h)
            skips.append(h)
            h = self.pool(h)
        m = self.bottleneck(h)  # m0
        out = {"p": self.fc(m)}
        if not decode:
            return out
        maps = []
        for dec, skip in zip(self.dec, reversed(skips)):
            m = dec(torch.cat([self.up(m), skip], dim=1))
            maps.append(m)  # m1..m4
        out["recon"] = self.recon(maps[3])
        out["f2"] = _centre(maps[1])
        out["f4"] = _centre(maps[3])
        return out


def _centre(m: torch.Tensor) -> torch.Tensor:
    """Feature vector at the centre voxel of ``m`` ``(B, C, D0, D1, D2)`` → ``(B, C)``."""
    return m[:, :, m.shape[2] // 2, m.shape[3] // 2, m.shape[4] // 2]
