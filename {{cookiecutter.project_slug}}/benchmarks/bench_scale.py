"""Scale benchmark: every pipeline stage on an ERA5-shaped 0.25 deg store, its peak memory and throughput.

    python benchmarks/bench_scale.py             # 721 x 1440, 16 channels, 12-hourly: 3 weeks, then 6 weeks
    python benchmarks/bench_scale.py --quick     # a 32 x 64 grid, 2 then 4 weeks (a minute or two; for CI)
    python benchmarks/bench_scale.py --weeks 2 --workdir /scratch/me --keep

For each time span it writes a synthetic WB2-layout source store (one time step at a time, uncompressed), then runs
the project's own commands, each stage in processes of its own, in a fresh project directory:
    shard (one process per block) -> stats -> climatology -> train (20 steps, batch 1) -> evaluate
and prints, per stage, the peak resident memory of its process (ru_maxrss from wait4; for shard the largest block
job) and its throughput. The second span is twice the first: a stage whose memory is bounded by one time step
shows the same peak twice. Synthetic values are smooth waves; sizes, layout and code paths are the real ones.
Disk: about 2 x (steps x channels x 721 x 1440 x 4 B) for source and shards, plus the climatology; checked first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = os.environ.get("FORGE_PKG") or next(p.parent.name for p in sorted((PROJECT / "src").glob("*/cli.py")))

PRESSURE_VARS = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")
LEVELS = (500, 850, 1000)
SURFACE_VARS = ("2m_temperature", "mean_sea_level_pressure", "10m_u_component_of_wind", "10m_v_component_of_wind")
BASE = {"geopotential": 5.5e4, "temperature": 260.0, "u_component_of_wind": 5.0, "v_component_of_wind": 0.0,
        "2m_temperature": 285.0, "mean_sea_level_pressure": 1.013e5, "10m_u_component_of_wind": 2.0,
        "10m_v_component_of_wind": 0.0}
STEP_HOURS = 12
START = np.datetime64("2000-01-01T00", "ns")


@dataclass
class Stage:
    name: str
    peak_rss_bytes: int
    seconds: float
    throughput: str


def grid(quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """ERA5 / WB2 0.25 deg: 721 latitudes with the poles, ascending; 1440 longitudes from 0."""
    nlat, nlon = (32, 64) if quick else (721, 1440)
    lat = np.linspace(-90, 90, nlat) if not quick else -90 + (np.arange(nlat) + 0.5) * 180 / nlat
    return lat, np.arange(nlon) * 360.0 / nlon


def write_source(path: Path, nt: int, lat: np.ndarray, lon: np.ndarray) -> None:
    """A WB2-like store (one variable per field, level dim for the pressure variables), written step by step."""
    import dask.array as da
    import xarray as xr
    import zarr

    times = START + np.arange(nt) * np.timedelta64(STEP_HOURS, "h")
    dims3, dims2 = ("time", "level", "latitude", "longitude"), ("time", "latitude", "longitude")
    shape3, shape2 = (nt, len(LEVELS), len(lat), len(lon)), (nt, len(lat), len(lon))
    variables = {v: (dims3, da.zeros(shape3, chunks=(1,) + shape3[1:], dtype="f4")) for v in PRESSURE_VARS}
    variables |= {v: (dims2, da.zeros(shape2, chunks=(1,) + shape2[1:], dtype="f4")) for v in SURFACE_VARS}
    ds = xr.Dataset(variables, coords={"time": times, "level": list(LEVELS), "latitude": lat, "longitude": lon})
    encoding = {v: {"chunks": (1,) + ds[v].shape[1:], "compressors": None} for v in ds.data_vars}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, mode="w", zarr_format=3, consolidated=True, compute=False, encoding=encoding)
    coslat = np.cos(np.deg2rad(lat)).astype(np.float32)[:, None]
    arrays = {v: zarr.open_array(str(path / v), mode="r+") for v in ds.data_vars}
    for t in range(nt):
        hours = t * STEP_HOURS
        for k, (v, arr) in enumerate(arrays.items()):
            scale = 0.01 * abs(BASE[v]) + 1.0
            fields = []
            for j in range(len(LEVELS) if v in PRESSURE_VARS else 1):
                phase = np.deg2rad(lon) - 2 * np.pi * hours / (24 * (4 + k + j))  # waves travelling east
                wave = coslat * np.sin(phase).astype(np.float32)[None, :] + np.float32(np.sin(hours / 500.0))
                fields.append(np.float32(BASE[v] * (1 - 0.05 * j)) + np.float32(scale) * wave)
            arr[t] = np.stack(fields) if v in PRESSURE_VARS else fields[0]


def split_dates(nt: int) -> dict:
    """Train on the first two thirds, test on the 4 days after (inside the climatology's window), val the rest."""
    at = lambda i: str((START + int(i) * np.timedelta64(STEP_HOURS, "h")).astype("datetime64[h]"))  # noqa: E731
    train_end = int(nt * 2 / 3)
    return {"train": [at(0), at(train_end)], "test": [at(train_end + 1), at(train_end + 8)],
            "val": [at(train_end + 9), at(nt - 1)]}


def write_params(project: Path, source: Path, nt: int, window_days: int) -> None:
    import yaml

    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"].update(source=str(source), variables=list(PRESSURE_VARS + SURFACE_VARS), levels=list(LEVELS),
                          start=split_dates(nt)["train"][0], end=split_dates(nt)["val"][1], time_stride=1, coarsen=1,
                          block_size=14, splits=split_dates(nt))
    params["model"].update(name="unet", width=8, depth=2)
    params["train"].update(lead_hours=STEP_HOURS, batch_size=1, max_steps=20, warmup_steps=5, checkpoint_every=20,
                           log_every=10, num_workers=0, allow_dirty=True)
    params["evaluate"].update(max_lead_hours=2 * STEP_HOURS, init_every_hours=24, batch_size=1,
                              key_leads_hours=[STEP_HOURS, 2 * STEP_HOURS], map_channels=["geopotential_500"],
                              map_leads_hours=[2 * STEP_HOURS], climatology_window_days=window_days,
                              allow_dirty=True)
    params["wandb"]["enabled"] = False
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(project: Path, log: Path, *args: str) -> tuple[int, float]:
    """Run `<package> ARGS` in `project`; (peak RSS in bytes of that process, seconds). Output goes to `log`."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "src"), "WANDB_MODE": "offline", "DVC_NO_ANALYTICS": "1"}
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", f"{PACKAGE}.cli", *args], cwd=project, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"bench_scale: `{PACKAGE} {' '.join(args)}` failed (exit {proc.returncode}); see {log}:\n"
                 + log.read_text()[-3000:])
    return usage.ru_maxrss * 1024, seconds  # Linux reports kilobytes


def run_span(work: Path, nt: int, quick: bool, window_days: int) -> list[Stage]:
    lat, lon = grid(quick)
    step_mb = 4 * 16 * len(lat) * len(lon) / 1e6
    project = work / "project"
    (project / "data").mkdir(parents=True)
    source = work / "era5.zarr"
    t0 = time.perf_counter()
    write_source(source, nt, lat, lon)
    print(f"  source: {nt} steps x 16 channels x {len(lat)} x {len(lon)} = {nt * step_mb / 1e3:.1f} GB written in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    write_params(project, source, nt, window_days)
    log = project / "bench.log"
    blocks = -(-nt // 14)
    shard = [run(project, log, "shard", "--params", "params.yaml", "--block", str(b), "--out",
                 f"data/shards/block_{b:04d}.zarr") for b in range(blocks)]
    shutil.rmtree(source)  # only the shards are read from here on
    train_steps = int(nt * 2 / 3) + 1
    stages = [Stage("shard", max(r for r, _ in shard), sum(s for _, s in shard),
                    f"{nt * step_mb / sum(s for _, s in shard):.0f} MB/s ({blocks} block jobs)")]
    rss, sec = run(project, log, "stats", "--params", "params.yaml")
    stages.append(Stage("stats", rss, sec, f"{train_steps * step_mb / sec:.0f} MB/s of train split"))
    rss, sec = run(project, log, "climatology", "--params", "params.yaml")
    fields = int(re.findall(r"climatology: wrote (\d+) \(hour, day\) fields", log.read_text())[-1])
    stages.append(Stage("climatology", rss, sec, f"{train_steps * step_mb / sec:.0f} MB/s of train split, "
                                                 f"{fields} (hour, day) fields, {fields / sec:.2f}/s"))
    rss, sec = run(project, log, "train", "--params", "params.yaml")
    stages.append(Stage("train", rss, sec, f"{20 / sec:.2f} steps/s incl. start-up (20 steps, batch 1)"))
    rss, sec = run(project, log, "evaluate", "--params", "params.yaml")
    n_inits = json.loads((project / "results" / "evaluation.json").read_text())["n_inits"]
    stages.append(Stage("evaluate", rss, sec, f"{n_inits} initial times x 2 steps, {2 * n_inits / sec:.2f} "
                                              "forecast steps/s incl. start-up and maps"))
    return stages


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_scale", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a 32 x 64 grid instead of 721 x 1440 (CI smoke run)")
    p.add_argument("--weeks", type=int, default=None, help="weeks of the first span (default 3, quick 2)")
    p.add_argument("--window-days", type=int, default=5, help="evaluate.climatology_window_days (default 5)")
    p.add_argument("--workdir", default=None, help="where to write (default: a new directory in $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    if "{{" in (PROJECT / "params.yaml").read_text():
        sys.exit("bench_scale: run it in a generated project (cookiecutter), not in the template.")
    weeks = args.weeks or (2 if args.quick else 3)
    lat, lon = grid(args.quick)
    spans = [weeks * 14, 2 * weeks * 14]  # 12-hourly steps
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    need = 2.6 * spans[-1] * 4 * 16 * len(lat) * len(lon)  # source + shards + climatology and scratch, with margin
    if free_bytes(work) < need:
        sys.exit(f"bench_scale: {work} has {free_bytes(work) / 1e9:.1f} GB free, the run needs about "
                 f"{need / 1e9:.1f} GB. Fix: --workdir on a bigger disk, or fewer --weeks.")
    results = {}
    try:
        for nt in spans:
            print(f"span {nt} steps ({nt // 14} weeks at {STEP_HOURS} h), grid {len(lat)} x {len(lon)}:", flush=True)
            results[nt] = run_span(work / f"span{nt}", nt, args.quick, args.window_days)
            shutil.rmtree(work / f"span{nt}" / "project" / "data", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'stage':<12} {'weeks':>5} {'peak RSS':>9} {'seconds':>8}  throughput")
    for nt, stages in results.items():
        for s in stages:
            print(f"{s.name:<12} {nt // 14:>5} {s.peak_rss_bytes / 2**30:>7.2f} GB {s.seconds:>8.1f}  {s.throughput}")
    first, second = results[spans[0]], results[spans[1]]
    ratios = ", ".join(f"{a.name} {b.peak_rss_bytes / a.peak_rss_bytes:.2f}" for a, b in zip(first, second,
                                                                                               strict=True))
    print(f"\npeak RSS, {2 * weeks} weeks / {weeks} weeks: {ratios}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
