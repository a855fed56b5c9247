"""models/model.pt: the one contract between training and everything that uses a trained model.

The file is a `torch.save` of ModelFile's fields as a plain dict (tensors, numbers, strings, lists, dicts), so
`torch.load(weights_only=True)` reads it without unpickling code, plus a "sha256" of that content checked on every
load (integrity.py). A training checkpoint is a ModelFile plus the training state (checkpoint.py), so a checkpoint
loads here too (train.init_from, or evaluating a checkpoint).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ModelConfig
from .errors import IntegrityError
from .fileio import atomic_path
from .integrity import verified, with_checksum

MODEL_FIX = ("restore the file with `dvc checkout models/model.pt` (or `dvc pull models/model.pt`), or retrain it "
             "(`dvc repro train`)")


TENSOR_FIELDS = ("state_dict", "static_fields")


@dataclass
class ModelFile:
    """A trained (or, with an empty state_dict, a to-be-trained) network and what it needs to be used."""

    model: dict[str, Any]  # ModelConfig fields: name, width, depth, patch_size
    channels: list[str]  # predicted variables, in model order
    forcings: list[str]  # extra inputs computed from time and grid (data/forcings.py)
    latitude: list[float]
    longitude: list[float]
    stats: dict[str, Any]  # stats.json the model was trained with: the Normalizer (data/stats.py)
    time_step_hours: int  # of the data
    lead_hours: int  # one model step
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    step: int = 0  # optimizer steps trained
    provenance: dict[str, Any] = field(default_factory=dict)  # provenance.collect() of the training run
    static: list[str] = field(default_factory=list)  # static input fields (data.static), after state and forcings
    # Their normalized values [S, lat, lon] in training (from static.zarr): what evaluation checks the shards' own
    # static.zarr against, since a network fed other fixed fields than it learnt from is silently wrong.
    static_fields: torch.Tensor = field(default_factory=lambda: torch.zeros(0), repr=False)

    def config(self) -> ModelConfig:
        """The architecture; keys a file lacks take ModelConfig's defaults (config.py is their one source)."""
        return ModelConfig(**self.model)

    def network(self) -> nn.Module:
        """An untrained network with this architecture, channels and grid: inputs state + forcings + static
        (in that order), outputs the state's channels only (static fields are never predicted)."""
        from .models import build_model

        n_out, n_in = len(self.channels), len(self.channels) + len(self.forcings) + len(self.static)
        return build_model(self.config(), n_in, n_out, len(self.latitude), len(self.longitude))

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained network on `device`, in eval mode."""
        net = self.network()
        net.load_state_dict(self.state_dict)
        return net.to(device).eval()

    def meta(self) -> dict[str, Any]:
        """Every field but the tensors (the weights and the static fields' values): plain values to compare or
        print."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in TENSOR_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def with_weights(self, state_dict: dict[str, torch.Tensor], step: int, provenance: dict) -> ModelFile:
        return replace(self, state_dict=state_dict, step=step, provenance=provenance)

    @classmethod
    def from_dict(cls, blob: dict, path: Path | str) -> ModelFile:
        """The ModelFile fields of a loaded dict (a checkpoint has more keys: they are left out)."""
        names = [f.name for f in fields(cls)]
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in blob]
        if missing:
            raise IntegrityError(f"{path}: not a model file of this project (missing {', '.join(missing)}). "
                                 f"Fix: {MODEL_FIX}.")
        return cls(**{n: blob[n] for n in names if n in blob})

    def save(self, path: Path | str) -> None:
        """Write atomically (a reader sees the old file or the new one), with the checksum."""
        save_checked(self.to_dict(), path)

    @classmethod
    def load(cls, path: Path | str, map_location: str | torch.device = "cpu", fix: str = MODEL_FIX) -> ModelFile:
        """Read and verify `path` (models/model.pt or a checkpoint); a damaged file is an IntegrityError."""
        return cls.from_dict(load_checked(path, map_location, fix), path)


def save_checked(payload: dict, path: Path | str) -> None:
    """torch.save `payload` with its checksum to a temp file, fsync, rename over `path`."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save(with_checksum(payload), tmp)


def load_checked(path: Path | str, map_location: str | torch.device = "cpu", fix: str = MODEL_FIX) -> dict:
    """torch.load(weights_only=True) and verify the checksum; any failure is an IntegrityError naming `path`."""
    try:
        blob = torch.load(Path(path), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: not found. Fix: {fix}.") from None
    except Exception as exc:  # noqa: BLE001 - truncated or garbled: every failure to parse means "damaged"
        raise IntegrityError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:200]}); the file is damaged. "
                             f"Fix: {fix}.") from None
    return verified(blob, path, fix)
