"""Shared fixtures. The package is found under src/, never named, so these tests run in any baked project."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
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
        _module("integrity").write_json_with_checksum(root / "stats.json", stats)
        spec = _module("modelfile").ModelFile(
            model={"name": "unet", "width": 8, "depth": 1, "patch_size": 4}, channels=cls.CHANNELS,
            forcings=list(_module("data.forcings").FORCING_NAMES), latitude=cls.LAT.tolist(),
            longitude=cls.LON.tolist(), stats=stats, time_step_hours=6, lead_hours=6,
        )
        torch.manual_seed(0)
        net = spec.network()
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0.0, weight_std)  # not the zero-initialized head: differs from persistence
        provenance = {"commit": "feedc0de" * 5, "dirty": False}
        spec.with_weights(net.state_dict(), step=7, provenance=provenance).save(root / "models" / "model.pt")
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
            "  key_leads_hours: [6, 24]\n"  # within max_lead_hours (config refuses leads beyond it)
            "  map_leads_hours: [24]\n"
            "  spectra: {band: [20, 70]}\n"  # the 4-row grid has no row in the default 30..60 band
            "  allow_dirty: true\n"
        )
        files = {"params": root / "params.yaml", "model": root / "models" / "model.pt", "stats": root / "stats.json",
                 "shards": shards}  # fmt: skip
        files["climatology"] = cls.climatology(files, root / "data" / "climatology.zarr")
        return files

    @staticmethod
    def climatology(files: dict, out: Path) -> Path:
        """The climatology stage's output for a project made by build_project, linked at `out` (evaluate's default
        data/climatology.zarr when run from the project's root). The stage runs once per shards directory, beside
        it: build_project always writes the same params, so the store fits every such project."""
        shards = files["shards"]
        made = shards.parent / f"{shards.name}-climatology.zarr"
        if not made.exists():
            argv = ["--params", str(files["params"]), "--shards", str(shards), "--out", str(made)]
            assert _module("climatology").main(argv) == 0
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.is_symlink():  # a second build_project in the same root keeps its link
            out.symlink_to(made, target_is_directory=True)
        return out

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


# Training helpers shared by test_train*.py, test_models.py and test_launch.py: tiny shards written straight to the
# SHARDS format, params files, running train in this process or as a command, model files, processes.
# The package is imported inside each helper so that collecting the data tests never imports torch.

CHANNELS = ["geopotential_500", "geopotential_850", "temperature_500", "temperature_850", "2m_temperature"]


def _module(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


def make_dataset(root: Path, nlat: int = 8, nlon: int = 16, ntimes: int = 96, channels=CHANNELS,
                 block: int = 40) -> dict:
    """Tiny deterministic shards (SHARDS format: zarr v3, data (time, channel, lat, lon), one step per chunk,
    uncompressed) and stats.json, independent of the synthetic generator so the golden losses only move when
    training changes. Waves travel eastward (so persistence is beatable) plus a little seeded noise."""
    import numpy as np
    import xarray as xr

    rng = np.random.default_rng(0)
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    t = np.arange(ntimes)[:, None, None]
    phase = np.deg2rad(lon)[None, None, :] * 2 - 0.3 * t
    base = np.cos(np.deg2rad(lat))[None, :, None] * np.cos(phase) + 0.5 * np.sin(np.deg2rad(lat))[None, :, None]
    data = np.stack([(1 + 0.2 * c) * base + 0.1 * c + 0.05 * rng.standard_normal(base.shape)
                     for c in range(len(channels))], axis=1).astype(np.float32)
    data = data * np.array([100.0 + 10 * c for c in range(len(channels))], np.float32)[None, :, None, None]
    times = np.datetime64("2000-01-01T00:00", "ns") + np.arange(ntimes) * np.timedelta64(6, "h")
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(range(0, ntimes, block)):
        ds = xr.Dataset(
            {"data": (("time", "channel", "latitude", "longitude"), data[s:s + block])},
            coords={"time": times[s:s + block], "channel": list(channels), "latitude": lat, "longitude": lon},
            attrs={"channels": list(channels), "provenance": json.dumps({"test": True}), "source": "test"},
        )
        ds.to_zarr(shards / f"block_{i:04d}.zarr", mode="w", zarr_format=3, consolidated=False,
                   encoding={"data": {"chunks": (1, len(channels), nlat, nlon), "compressors": None}})
    n_train = int(ntimes * 0.75)
    train_data = data[:n_train]
    stats = {
        "channels": list(channels),
        "mean": train_data.mean(axis=(0, 2, 3)).tolist(),
        "std": train_data.std(axis=(0, 2, 3)).tolist(),
        "diff_std": np.diff(train_data, axis=0).std(axis=(0, 2, 3)).tolist(),
        "time_step_hours": 6,
        "train": [str(times[0])[:16], str(times[n_train - 1])[:16]],
    }
    _module("integrity").write_json_with_checksum(root / "stats.json", stats)
    return {"shards": shards, "stats": root / "stats.json", "times": times, "n_train": n_train}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Tiny shards and stats.json shared by the tests of one module (make_dataset's defaults)."""
    return make_dataset(tmp_path_factory.mktemp("data"))


def write_params(root: Path, data: dict, model: dict | None = None, **train_kw) -> Path:
    """A params.yaml for the tiny data: template defaults except the grid-independent knobs passed in."""
    import yaml

    times = data["times"]
    iso = lambda t: str(t)[:16]  # noqa: E731
    n = data["n_train"]
    params = {
        "seed": 0,
        "data": {
            "source": "synthetic",
            "start": iso(times[0]),
            "end": iso(times[-1]),
            "splits": {"train": [iso(times[0]), iso(times[n - 1])], "val": [iso(times[n]), iso(times[n + 4])],
                       "test": [iso(times[n + 5]), iso(times[-1])]},
        },
        "model": {"name": "unet", **(model or {})},
        "train": {"batch_size": 4, "max_steps": 6, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 2,
                  "allow_dirty": True, **train_kw},
        "wandb": {"enabled": False},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def cli_args(root: Path, data: dict, params: Path, run: str = "run") -> list[str]:
    return ["--params", str(params), "--shards", str(data["shards"]), "--stats", str(data["stats"]),
            "--run-dir", str(root / run), "--out", str(root / run / "model.pt"), "--log", str(root / run / "log.csv")]


def run_main(root: Path, data: dict, params: Path, run: str = "run") -> int:
    """train.main in this process (fast); put back the global torch settings it changes."""
    import torch

    cwd = os.getcwd()
    deterministic = torch.are_deterministic_algorithms_enabled()
    os.chdir(root)
    try:
        return _module("train").main(cli_args(root, data, params, run))
    finally:
        os.chdir(cwd)
        torch.use_deterministic_algorithms(deterministic)


def subprocess_env(threads: int = 1) -> dict:
    """Environment for `python -m PKG.train` / torchrun children: this package importable, 1 thread, offline."""
    env = dict(os.environ)
    package_file = Path(importlib.import_module(PACKAGE).__file__)  # where this run imports it from
    env["PYTHONPATH"] = os.pathsep.join([str(package_file.parent.parent), str(package_file.resolve().parent.parent),
                                         env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS=str(threads), WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    return env


def train_command(root: Path, data: dict, params: Path, run: str = "run", nproc: int = 0) -> list[str]:
    """`python -m PKG.train ...`, or under torchrun with `nproc` processes."""
    if nproc:
        # `--`: torchrun's parser would otherwise take --log for an abbreviation of its --log-dir
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                    "-m", f"{PACKAGE}.train", "--"]
    else:
        launcher = [sys.executable, "-m", f"{PACKAGE}.train"]
    return launcher + cli_args(root, data, params, run)


def launch_command(root: Path, data: dict, params: Path, run: str = "run", nproc: int = 2) -> list[str]:
    """`python -m PKG.cli launch --nproc-per-node N -- <train args>`: the launcher the workflow uses."""
    return [sys.executable, "-m", f"{PACKAGE}.cli", "launch", "--nproc-per-node", str(nproc), "--",
            *cli_args(root, data, params, run)]


def run_cli(root: Path, data: dict, params: Path, run: str = "run", nproc: int = 0, timeout: int = 300):
    return subprocess.run(train_command(root, data, params, run, nproc), cwd=root, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def weights(path: Path) -> dict:
    """The weights of a model file or checkpoint (checksum verified)."""
    return _module("modelfile").ModelFile.load(path).state_dict


def read_log(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def last_logged_step(path: Path) -> int:
    """The newest step in a training log being written (0 if none yet)."""
    try:
        lines = path.read_text().strip().splitlines()
    except FileNotFoundError:
        return 0
    return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0


def seeded_random():
    """A random.Random for tests that draw moments or steps: seeded (FORGE_TEST_SEED, default 0) so a failure can
    be replayed, and the seed printed (pytest shows it with the failure)."""
    import random

    seed = int(os.environ.get("FORGE_TEST_SEED", "0"))
    print(f"random draws from seed {seed} (set FORGE_TEST_SEED to replay or to vary them)")
    return random.Random(seed)


def pids_mentioning(text: str) -> list[int]:
    """Live processes (not zombies) whose command line contains `text`, e.g. a test's run folder."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def model_file(name: str = "unet", channels: int = 5, nlat: int = 8, nlon: int = 16, seed: int = 0, **model_kw):
    """A small ModelFile with random (non-persistence) weights, built the way training builds one."""
    import torch

    forcings = _module("data.forcings")
    spec = _module("modelfile").ModelFile(
        model={"name": name, "width": 8, "depth": 2, **model_kw},
        channels=[f"c{i}" for i in range(channels)],
        forcings=list(forcings.FORCING_NAMES),
        latitude=[float(v) for v in torch.linspace(-80, 80, nlat)],
        longitude=[float(v) for v in torch.arange(nlon) * 360.0 / nlon],
        stats={"channels": [f"c{i}" for i in range(channels)], "mean": [0.0] * channels, "std": [1.0] * channels,
               "diff_std": [1.0] * channels, "time_step_hours": 6},
        time_step_hours=6,
        lead_hours=6,
    )
    torch.manual_seed(seed)
    net = spec.network()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)  # not the zero-initialized head: a model that differs from persistence
    return spec.with_weights(net.state_dict(), step=7, provenance={"commit": "abc"})


def garble_tensor_bytes(path: Path, tensor) -> None:
    """Overwrite the stored bytes of `tensor` inside a torch file in place: the file still loads, with wrong
    values (what a disk or transfer fault does)."""
    import torch

    blob = path.read_bytes()
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    at = blob.find(raw)
    assert at >= 0, "tensor bytes not found in the file"
    garbled = bytes(b ^ 0x5A for b in raw[:64])
    path.write_bytes(blob[:at] + garbled + blob[at + len(garbled):])
