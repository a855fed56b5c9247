"""Model registry and the one-step update rule (the saved-model format is modelfile.ModelFile).

A network maps cat(z_t, forcings_t, static) [B, C+F+S, lat, lon] to the unit-variance normalized change
[B, C, lat, lon]; `rollout_step` turns that into the next normalized state (see NORMALIZATION in data/stats.py).
The static fields (data.static) are constant, so they are not carried by the data: `with_static` wraps the network
so that every call appends the same [S, lat, lon] tensor to its input, and the rollout passes cat(z_t, forcings_t).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .unet import UNet
from .vit import ViT

# name -> constructor(cfg, in_channels, out_channels, nlat, nlon); model.name in params.yaml picks one.
REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "unet": lambda cfg, cin, cout, nlat, nlon: UNet(cin, cout, nlat, nlon, width=cfg.width, depth=cfg.depth),
    "vit": lambda cfg, cin, cout, nlat, nlon: ViT(
        cin, cout, nlat, nlon, width=cfg.width, depth=cfg.depth, patch_size=cfg.patch_size
    ),
}


def register(name: str, constructor: Callable[..., nn.Module]) -> None:
    """Add an architecture (also add its name to ModelConfig.name in config.py)."""
    REGISTRY[name] = constructor


def build_model(cfg: Any, in_channels: int, out_channels: int, nlat: int, nlon: int) -> nn.Module:
    """Build `cfg.name` (a ModelConfig, or anything with its attributes) for this many channels and this grid."""
    if cfg.name not in REGISTRY:
        raise ModelError(f"params.yaml: model.name {cfg.name!r} is not a registered model. Fix: use one of "
                         f"{sorted(REGISTRY)}.")
    return REGISTRY[cfg.name](cfg, in_channels, out_channels, nlat, nlon)


class WithStatic(nn.Module):
    """`net` with the static fields appended to every input: forward(x) = net(cat(x, static expanded over the
    batch)). The fields are a buffer (moved with .to(), never trained) and not in the state_dict, so the weights'
    names are the network's own."""

    def __init__(self, net: nn.Module, static: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("static", static, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        static = self.static.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        return self.net(torch.cat([x, static], dim=1))


def with_static(net: nn.Module, static: Any) -> nn.Module:
    """`net` fed the static fields `static` [S, lat, lon] (normalized) after its other inputs; `net` itself when
    there are none (S = 0), so a model without static fields runs exactly as before."""
    static = torch.as_tensor(static)
    if static.numel() == 0:
        return net
    if static.dim() != 3:
        raise ModelError(f"static fields must be [S, lat, lon], got shape {tuple(static.shape)}")
    return WithStatic(net, static.to(torch.float32))


def rollout_step(model: nn.Module, z: torch.Tensor, forcing: torch.Tensor, delta_scale: Any) -> torch.Tensor:
    """One model step in normalized space: z_next = z + model(cat(z, forcing)) * delta_scale (per channel)."""
    if not isinstance(delta_scale, torch.Tensor):
        delta_scale = torch.as_tensor(np.asarray(delta_scale))
    scale = delta_scale.to(device=z.device, dtype=z.dtype)
    delta = model(torch.cat([z, forcing.to(z.dtype)], dim=1))
    return z + delta.to(z.dtype) * scale[:, None, None]


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """models/model.pt (or a training checkpoint) -> (network in eval mode, every field but the weights).

    A thin wrapper over modelfile.ModelFile, the file's contract; a damaged file raises IntegrityError. The network
    is bare: one trained with static fields needs them appended (inference.load_forecaster does, from the shards).
    """
    from ..modelfile import ModelFile  # lazily: modelfile imports this package

    saved = ModelFile.load(path, map_location=map_location)
    return saved.build(map_location), saved.meta()


__all__ = ["ModelError", "REGISTRY", "register", "build_model", "rollout_step", "load_model", "WithStatic",
           "with_static"]
