"""A small UNet on the longitude-periodic grid.

Tuned for CPU speed (the default must train in minutes on 2 cores): one 3x3 convolution per level on the way
down and up, two at the coarsest level, channel count doubling per level; on the way up a 1x1 convolution at the
coarse resolution, nearest upsampling and an added (not concatenated) skip connection, which halves the cost of a
concatenating decoder. Average-pool down and nearest up, so a longitude roll by a multiple of 2**depth cells
commutes with the network. No batch norm: its batch
statistics would make 1 process and N processes with the same global batch train differently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .layers import PeriodicConv2d, crop_grid, maybe_checkpoint, pad_grid


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, convs: int = 1):
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [PeriodicConv2d(in_channels if i == 0 else out_channels, out_channels), nn.GELU()]
        super().__init__(*layers)


class UNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, nlat: int, nlon: int, width: int = 32, depth: int = 2):
        super().__init__()
        self.depth = depth
        self.mult = 2**depth
        if nlon % self.mult:
            raise ModelError(
                f"params.yaml: unet: the grid has {nlon} longitudes, not a multiple of 2**model.depth = {self.mult}; "
                f"fix: lower model.depth in params.yaml or coarsen the data so nlon is a multiple of {self.mult}"
            )
        widths = [width * 2**level for level in range(depth + 1)]
        self.stem = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList(
            ConvBlock(widths[lvl], widths[lvl + 1], convs=2 if lvl == depth - 1 else 1) for lvl in range(depth)
        )
        self.lateral = nn.ModuleList(nn.Conv2d(widths[lvl + 1], widths[lvl], 1) for lvl in range(depth))
        self.up = nn.ModuleList(ConvBlock(widths[lvl], widths[lvl]) for lvl in range(depth))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        # Start as persistence (zero change): stable first steps, and the loss starts at the variance of the change.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.checkpointing = False

    def fsdp_units(self) -> list[nn.Module]:
        """Submodules that FSDP shards one by one (their parameters are gathered just in time)."""
        return [self.stem, *self.down, *self.up]  # the small 1x1 laterals stay with the root

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_grid(x, self.mult, self.mult)
        x = maybe_checkpoint(self.stem, x, self.checkpointing)
        skips = [x]
        for block in self.down:
            x = maybe_checkpoint(block, F.avg_pool2d(x, 2), self.checkpointing)
            skips.append(x)
        skips.pop()
        for lateral, block in zip(reversed(self.lateral), reversed(self.up), strict=True):
            x = F.interpolate(lateral(x), scale_factor=2.0, mode="nearest") + skips.pop()
            x = maybe_checkpoint(block, x, self.checkpointing)
        return crop_grid(self.head(x), size, self.mult)
