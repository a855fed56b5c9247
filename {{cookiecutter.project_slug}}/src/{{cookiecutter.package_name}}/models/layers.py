"""Building blocks shared by the architectures: periodic-in-longitude convolution, grid padding, checkpointing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def pad_periodic(x: torch.Tensor, pad: int, lat_mode: str = "replicate") -> torch.Tensor:
    """Pad [B, C, lat, lon]: wrap around in longitude (the globe is periodic), `lat_mode` at the poles."""
    if pad == 0:
        return x
    x = F.pad(x, (pad, pad, 0, 0), mode="circular")
    if lat_mode == "zeros":
        return F.pad(x, (0, 0, pad, pad))
    return F.pad(x, (0, 0, pad, pad), mode="replicate")


class PeriodicConv2d(nn.Conv2d):
    """A 'same' convolution that wraps around in longitude; at the poles it zero-pads (default: done inside the
    convolution, so only the longitude wrap costs a copy, which matters on CPU; inputs are normalized, so zero is
    the climatological mean) or replicates the polar row (`lat_mode="replicate"`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, lat_mode: str = "zeros"):
        if lat_mode not in ("zeros", "replicate"):
            raise ValueError(f"lat_mode must be 'zeros' or 'replicate', not {lat_mode!r}")
        pad = kernel_size // 2
        super().__init__(in_channels, out_channels, kernel_size, padding=(pad if lat_mode == "zeros" else 0, 0))
        self.pad = pad
        self.lat_mode = lat_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lat_mode == "zeros":
            p = self.pad  # one cat is cheaper on CPU than F.pad(mode="circular")
            return super().forward(torch.cat([x[..., -p:], x, x[..., :p]], dim=-1) if p else x)
        return super().forward(pad_periodic(x, self.pad, "replicate"))


def pad_grid(x: torch.Tensor, mult_lat: int, mult_lon: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the grid up to multiples (latitude: replicate at the poles, longitude: wrap); return the original size."""
    nlat, nlon = x.shape[-2:]
    plat, plon = -nlat % mult_lat, -nlon % mult_lon
    if plon:
        x = F.pad(x, (0, plon, 0, 0), mode="circular")
    if plat:
        x = F.pad(x, (0, 0, plat // 2, plat - plat // 2), mode="replicate")
    return x, (nlat, nlon)


def crop_grid(x: torch.Tensor, size: tuple[int, int], mult_lat: int) -> torch.Tensor:
    """Undo pad_grid. Returns a new tensor, not a view (FSDP warns about views returned from a sharded module)."""
    nlat, nlon = size
    if tuple(x.shape[-2:]) == (nlat, nlon):
        return x
    top = (-nlat % mult_lat) // 2
    return x[..., top : top + nlat, :nlon].clone()


def maybe_checkpoint(module: nn.Module, x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """Run `module`, recomputing its activations in backward when `enabled` (trades compute for memory)."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(module, x, use_reentrant=False)
    return module(x)
