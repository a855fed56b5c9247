"""Model registry, the one-step update rule, and the saved-model format (models/model.pt).

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


class _Config:
    """ModelConfig-like attribute bag rebuilt from a saved dict (no pydantic needed to load a model)."""

    def __init__(self, values: dict):
        self.name, self.width, self.depth, self.patch_size = "unet", 32, 2, 4
        self.__dict__.update(values)


def model_from_meta(meta: dict) -> nn.Module:
    """An untrained model with the architecture, channels and grid described by a saved file's metadata."""
    n_in = len(meta["channels"]) + len(meta["forcings"])
    return build_model(
        _Config(meta["model"]), n_in, len(meta["channels"]), len(meta["latitude"]), len(meta["longitude"])
    )


def save_model(path: str | Path, meta: dict, state_dict: dict) -> None:
    """Write models/model.pt atomically: meta keys (see the contract) plus the weights."""
    from ..checkpoint import atomic_save

    atomic_save({**meta, "state_dict": state_dict}, Path(path))


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load models/model.pt (or a training checkpoint) -> (model in eval mode, metadata without the weights)."""
    blob = torch.load(Path(path), map_location=map_location, weights_only=True)
    if "state_dict" not in blob:
        raise ValueError(f"{path}: not a saved model (no 'state_dict'); expected the output of train.py")
    meta = {k: v for k, v in blob.items() if k not in ("state_dict", "optimizer", "scheduler", "rng", "sampler")}
    model = model_from_meta(meta)
    model.load_state_dict(blob["state_dict"])
    return model.to(map_location).eval(), meta


__all__ = ["ModelError", "REGISTRY", "register", "build_model", "rollout_step", "model_from_meta", "save_model",
           "load_model"]
