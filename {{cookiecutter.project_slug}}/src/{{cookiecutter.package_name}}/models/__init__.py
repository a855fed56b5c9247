"""Model registry and the one-step update rule (the saved-model format is modelfile.ModelFile).

A model maps cat(z_t, forcings_t) [B, C+F, lat, lon] to the unit-variance normalized change [B, C, lat, lon];
`rollout_step` turns that into the next normalized state (see NORMALIZATION in data/stats.py).
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


def rollout_step(model: nn.Module, z: torch.Tensor, forcing: torch.Tensor, delta_scale: Any) -> torch.Tensor:
    """One model step in normalized space: z_next = z + model(cat(z, forcing)) * delta_scale (per channel)."""
    if not isinstance(delta_scale, torch.Tensor):
        delta_scale = torch.as_tensor(np.asarray(delta_scale))
    scale = delta_scale.to(device=z.device, dtype=z.dtype)
    delta = model(torch.cat([z, forcing.to(z.dtype)], dim=1))
    return z + delta.to(z.dtype) * scale[:, None, None]


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """models/model.pt (or a training checkpoint) -> (network in eval mode, every field but the weights).

    A thin wrapper over modelfile.ModelFile, the file's contract; a damaged file raises IntegrityError.
    """
    from ..modelfile import ModelFile  # lazily: modelfile imports this package

    saved = ModelFile.load(path, map_location=map_location)
    return saved.build(map_location), saved.meta()


__all__ = ["ModelError", "REGISTRY", "register", "build_model", "rollout_step", "load_model"]
