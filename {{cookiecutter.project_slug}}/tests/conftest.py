"""Shared fixtures. The package is found under src/, never named, so these tests run in any baked project."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = os.environ.get("FORGE_PKG") or next(p.parent.name for p in sorted((PROJECT_ROOT / "src").glob("*/cli.py")))

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def pkg():
    """The project's package module."""
    return importlib.import_module(PACKAGE)


@pytest.fixture(scope="session")
def pkg_name() -> str:
    return PACKAGE


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture()
def python() -> str:
    return sys.executable


# ----------------------------------------------------------------------------------------------------------------
# Tiny evaluation data, shared by test_evaluate, test_forecast and test_report: shards of a known analytic field,
# and a seeded tiny model file beside them.


class Tiny:
    """A 3-channel atmosphere on a 4 x 8 grid every 6 h, written as shards in the contract's layout."""

    CHANNELS = ["geopotential_500", "geopotential_850", "2m_temperature"]
    LAT = np.array([-67.5, -22.5, 22.5, 67.5])
    LON = np.arange(8) * 45.0
    HOUR = np.timedelta64(1, "h")

    @classmethod
    def truth_field(cls, times: np.ndarray) -> np.ndarray:
        """(T, C, H, W) float32 with a seasonal and a diurnal cycle plus a travelling wave: deterministic."""
        t = (times.astype("datetime64[h]").astype(np.int64)).astype(np.float64)  # hours since 1970
        day = 2 * np.pi * t / 24.0
        year = 2 * np.pi * t / (24.0 * 366)
        phase = np.deg2rad(cls.LON)[None, :] - 0.3 * t[:, None, None] / 6.0  # (T, 1, W) after broadcasting
        wave = np.cos(np.deg2rad(cls.LAT))[None, :, None] * np.sin(phase)
        base = np.array([5500.0, 1500.0, 280.0])
        amp = np.array([50.0, 30.0, 3.0])
        out = base[None, :, None, None] + amp[None, :, None, None] * (
            np.sin(year)[:, None, None, None] + 0.3 * np.sin(day)[:, None, None, None] + wave[:, None]
        )
        return out.astype(np.float32)

    @classmethod
    def write_shards(cls, root: Path, start: str, end: str, block: int = 300) -> Path:
        """Shards (zarr v3, (time, channel, lat, lon) float32, one step per chunk, no codec) in root/shards."""
        import xarray as xr

        times = np.arange(np.datetime64(start, "ns"), np.datetime64(end, "ns") + cls.HOUR, 6 * cls.HOUR)
        data = cls.truth_field(times)
        shards = root / "shards"
        shards.mkdir(parents=True)
        for k, i in enumerate(range(0, len(times), block)):
            ds = xr.Dataset(
                {"data": (("time", "channel", "latitude", "longitude"), data[i : i + block])},
                coords={
                    "time": times[i : i + block],
                    "channel": np.array(cls.CHANNELS, dtype=object),
                    "latitude": cls.LAT,
                    "longitude": cls.LON,
                },
                attrs={"channels": cls.CHANNELS, "provenance": "{}", "source": "test"},
            )
            chunks = (1, len(cls.CHANNELS), len(cls.LAT), len(cls.LON))
            ds.to_zarr(shards / f"block_{k:04d}.zarr", zarr_format=3, consolidated=False,
                       encoding={"data": {"chunks": chunks, "compressors": None}})  # fmt: skip
        return shards

    @classmethod
    def build_project(cls, pkg_name: str, root: Path, shards: Path, weight_std: float = 0.05) -> dict[str, Path]:
        """params.yaml, stats.json and models/model.pt (a tiny seeded U-Net, weights N(0, weight_std)) in `root`.

        With weight_std >= 0.3 the model's changes are large enough that float32 round-off differences (e.g. of
        a convolution batched differently) survive into the states."""
        import torch

        models = importlib.import_module(f"{pkg_name}.models")
        forcings = importlib.import_module(f"{pkg_name}.data.forcings")
        train_times = np.arange(np.datetime64("2000-01-01", "ns"), np.datetime64("2001-01-01", "ns"), 6 * cls.HOUR)
        x = cls.truth_field(train_times).astype(np.float64)
        stats = {
            "channels": cls.CHANNELS,
            "mean": x.mean(axis=(0, 2, 3)).tolist(),
            "std": x.std(axis=(0, 2, 3)).tolist(),
            "diff_std": np.diff(x, axis=0).std(axis=(0, 2, 3)).tolist(),
            "time_step_hours": 6,
            "train": ["2000-01-01", "2000-12-31T18:00"],
        }
        (root / "stats.json").write_text(json.dumps(stats))
        meta = {
            "model": {"name": "unet", "width": 8, "depth": 1, "patch_size": 4},
            "channels": cls.CHANNELS,
            "forcings": list(forcings.FORCING_NAMES),
            "latitude": cls.LAT.tolist(),
            "longitude": cls.LON.tolist(),
            "stats": stats,
            "time_step_hours": 6,
            "lead_hours": 6,
            "provenance": {"commit": "feedc0de" * 5, "dirty": False},
            "step": 7,
        }
        torch.manual_seed(0)
        net = models.model_from_meta(meta)
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0.0, weight_std)  # not the zero-initialized head: differs from persistence
        (root / "models").mkdir(exist_ok=True)
        models.save_model(root / "models" / "model.pt", meta, net.state_dict())
        (root / "params.yaml").write_text(
            "seed: 0\n"
            "data:\n"
            "  splits: {train: ['2000-01-01', '2000-12-31T18:00'], val: ['2001-01-01', '2001-01-05T18:00'],\n"
            "           test: ['2001-01-06', '2001-01-20T18:00']}\n"
            "evaluate:\n"
            "  max_lead_hours: 24\n"
            "  init_every_hours: 24\n"
            "  headline: [geopotential_500, 2m_temperature]\n"
            "  batch_size: 4\n"
            "  key_leads_hours: [6, 24, 72]\n"
            "  map_leads_hours: [24]\n"
            "  spectra: {band: [20, 70]}\n"  # the 4-row grid has no row in the default 30..60 band
            "  allow_dirty: true\n"
        )
        return {"params": root / "params.yaml", "model": root / "models" / "model.pt", "stats": root / "stats.json",
                "shards": shards}  # fmt: skip

    @staticmethod
    def argv(files: dict) -> list[str]:
        """The shared options of evaluate / forecast for a project made by build_project."""
        return ["--params", str(files["params"]), "--model", str(files["model"]), "--shards", str(files["shards"]),
                "--stats", str(files["stats"])]  # fmt: skip


@pytest.fixture(scope="session")
def tiny() -> type[Tiny]:
    return Tiny


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """Train: all of 2000 (a leap year: day of year 1..366); test: January 2001. Read-only: do not modify."""
    return Tiny.write_shards(tmp_path_factory.mktemp("tiny"), "2000-01-01", "2001-01-20T18:00")
