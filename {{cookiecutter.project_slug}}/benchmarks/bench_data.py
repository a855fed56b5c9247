"""Data-pipeline throughput, each figure against its raw baseline measured in the same run, on the same bytes.

    python benchmarks/bench_data.py            # full spec: 1 deg grid, 40 channels, >= 2 GB on disk
    python benchmarks/bench_data.py --quick    # a tiny run (seconds), for CI

Prints (goal in brackets):
  loader / raw read of the same chunk files         [>= 0.8]
  loader / naive per-sample ds.isel(time=i).to_array().values over a zstd source store   [>= 10]
  sharding / raw copy of the same source bytes       [>= 0.5]
  snakemake -n on a 1000-shard DAG, seconds          (when a Snakefile is present)
Everything runs from the page cache (the data are written just before they are read), as in training.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = os.environ.get("FORGE_PKG") or next(p.parent.name for p in sorted((PROJECT / "src").glob("*/cli.py")))
if importlib.util.find_spec(PACKAGE) is None:  # running from a checkout without installing
    sys.path.insert(0, str(PROJECT / "src"))

import xarray as xr  # noqa: E402

data = importlib.import_module(f"{PACKAGE}.data")
source = importlib.import_module(f"{PACKAGE}.data.source")
shard = importlib.import_module(f"{PACKAGE}.data.shard")
stats = importlib.import_module(f"{PACKAGE}.data.stats")
loader = importlib.import_module(f"{PACKAGE}.data.loader")

PRESSURE_VARS = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind", "specific_humidity",
                 "vertical_velocity")
LEVELS = (300, 500, 700, 850, 1000)
SURFACE_VARS = ("2m_temperature", "mean_sea_level_pressure", "10m_u_component_of_wind", "10m_v_component_of_wind",
                "surface_pressure", "total_column_water_vapour", "2m_dewpoint_temperature", "sea_surface_temperature",
                "total_precipitation_6hr", "toa_incident_solar_radiation")  # 6 x 5 + 10 = 40 channels


def build_source(path: Path, nt: int, nlat: int, nlon: int, compressed: bool) -> None:
    """A WB2-like store: one data variable per field, one time step per chunk."""
    import dask.array as da
    import zarr

    lat = -90 + (np.arange(nlat) + 0.5) * 180 / nlat
    lon = np.arange(nlon) * 360 / nlon
    times = np.datetime64("2000-01-01", "ns") + np.arange(nt) * np.timedelta64(6, "h")
    shape3, shape2 = (nt, len(LEVELS), nlat, nlon), (nt, nlat, nlon)
    dims3, dims2 = ("time", "level", "latitude", "longitude"), ("time", "latitude", "longitude")
    variables = {v: (dims3, da.zeros(shape3, chunks=(1,) + shape3[1:], dtype="f4")) for v in PRESSURE_VARS}
    variables |= {v: (dims2, da.zeros(shape2, chunks=(1,) + shape2[1:], dtype="f4")) for v in SURFACE_VARS}
    ds = xr.Dataset(variables, coords={"time": times, "level": list(LEVELS), "latitude": lat, "longitude": lon})
    enc = {} if compressed else {"compressors": None}
    encoding = {v: {"chunks": (1,) + ds[v].shape[1:], **enc} for v in ds.data_vars}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, mode="w", zarr_format=3, consolidated=True, compute=False, encoding=encoding)
    rng = np.random.default_rng(0)
    base = (rng.standard_normal((nlat, nlon)) * 10).astype(np.float32)
    for i, v in enumerate(ds.data_vars):
        arr = zarr.open_array(str(path / v), mode="r+")
        for t in range(nt):
            field = base + np.float32(100 * i + 0.1 * t)
            arr[t] = np.broadcast_to(field, arr.shape[1:])


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def raw_copy(src: Path, dst: Path) -> None:
    """Read every file of the store and write it elsewhere: what any sharding has to do at least."""
    for f in sorted(src.rglob("*")):
        target = dst / f.relative_to(src)
        if f.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            shutil.copyfile(f, target)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def bench_shard(work: Path, src: Path, nt: int, block: int) -> tuple[float, float, list[Path]]:
    nbytes = du(src)
    t_copy = timed(raw_copy, src, work / "copy")
    shutil.rmtree(work / "copy")
    ds = source.canonicalize(source.open_source(src))
    out = work / "shards"
    t0 = time.perf_counter()
    paths = [shard.write_shard(ds, a, min(a + block, nt), out / f"block_{i:04d}.zarr")
             for i, a in enumerate(range(0, nt, block))]
    t_shard = time.perf_counter() - t0
    return nbytes / t_shard, nbytes / t_copy, paths


def bench_raw_read(paths: list[Path], order: np.ndarray, nbytes_step: int) -> float:
    files = [f for p in paths for f in shard.raw_chunk_files(p)]
    buf = np.empty(nbytes_step, np.uint8)
    t0 = time.perf_counter()
    for i in order:
        with open(files[i], "rb", buffering=0) as f:
            f.readinto(buf)
    return len(order) * nbytes_step / (time.perf_counter() - t0)


def bench_loader(paths: list[Path], workers: int, batch: int) -> float:
    norm = _normalizer(paths)
    ds = loader.WeatherPairs(paths, norm, lead_steps=1)
    dl = loader.make_loader(ds, batch_size=batch, seed=0, num_workers=workers, prefetch=2)
    for _ in dl:  # epoch 0: starts the (persistent) workers and warms up
        pass
    dl.sampler.set_epoch(1)
    t0 = time.perf_counter()
    n = sum(len(b["time"]) for b in dl)  # epoch 1, timed from the first request to the last batch
    elapsed = time.perf_counter() - t0
    step_bytes = int(np.prod(ds.sample_shape)) * 4
    return n * 2 * step_bytes / elapsed  # state + target per item


def bench_cpu(paths: list[Path], order: np.ndarray, step_bytes: int) -> tuple[float, float]:
    """Bytes per CPU-second of the in-process loader and of the raw read: a contention-proof view of the same
    comparison (on a shared machine wall-clock rates move with the neighbours' load, CPU time much less)."""
    c0 = time.process_time()
    bench_raw_read(paths, order, step_bytes)
    raw = len(order) * step_bytes / (time.process_time() - c0)
    norm = _normalizer(paths)
    ds = loader.WeatherPairs(paths, norm, lead_steps=1)
    dl = loader.make_loader(ds, batch_size=8, seed=0)
    for _ in dl:  # warm-up epoch: the buffer ring gets mapped
        pass
    dl.sampler.set_epoch(1)
    c0 = time.process_time()
    n = sum(len(b["time"]) for b in dl)
    return n * 2 * step_bytes / (time.process_time() - c0), raw


def _normalizer(paths: list[Path]):
    first = xr.open_zarr(paths[0], consolidated=False)
    x = first["data"][0].values.astype(np.float64)
    return stats.Normalizer([str(c) for c in first.channel.values], x.mean(axis=(1, 2)), x.std(axis=(1, 2)) + 1,
                            np.ones(x.shape[0]))


def bench_naive(store: Path, order: np.ndarray, nbytes_step: int) -> float:
    ds = xr.open_zarr(store, consolidated=False)
    t0 = time.perf_counter()
    for i in order:
        _ = ds.isel(time=int(i)).to_array().values
    return len(order) * nbytes_step / (time.perf_counter() - t0)


def render_params(text: str) -> str:
    """The template's params.yaml without Jinja (only when run unbaked)."""
    text = re.sub(r"\{\{\s*'true' if .*?\}\}", "false", text)
    text = re.sub(r'"\{\{\s*cookiecutter\.data_source\s*\}\}"', '"synthetic"', text)
    text = re.sub(r'"\{\{\s*cookiecutter\.model\s*\}\}"', '"unet"', text)
    return re.sub(r"\{\{.*?\}\}", "bench", text)


def bench_snakemake(work: Path, blocks: int) -> float | None:
    if not (PROJECT / "Snakefile").exists():
        return None
    import yaml

    proj = work / "project"
    top_level_outputs = {"data", ".snakemake", ".nox", "results", "runs", "models", "logs", ".git", ".dvc"}
    shutil.copytree(PROJECT, proj, ignore=lambda d, names: [
        n for n in names if n == "__pycache__" or (Path(d) == PROJECT and n in top_level_outputs)])
    for pkg in (proj / "src").glob("*/cli.py"):
        if not pkg.parent.name.isidentifier():
            pkg.parent.rename(proj / "src" / "my_forecast")
    params = yaml.safe_load(render_params((PROJECT / "params.yaml").read_text()))
    d = params["data"]
    d.update(source="synthetic", start="2000-01-01", block_size=2)
    at = lambda i: str(np.datetime64("2000-01-01T00:00") + np.timedelta64(6 * int(i), "h"))  # noqa: E731
    n = 2 * blocks  # time steps
    d["end"] = at(n - 1)
    d["splits"] = {"train": [at(0), at(0.7 * n)], "val": [at(0.7 * n + 1), at(0.8 * n)],
                   "test": [at(0.8 * n + 1), at(n - 1)]}
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    t0 = time.perf_counter()
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--workflow-profile", "none",
               "--quiet", "rules"]
    run = subprocess.run(command, cwd=proj, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"snakemake -n failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    shard_jobs = re.search(r"shard\s+(\d+)", run.stdout + run.stderr)
    if shard_jobs and int(shard_jobs.group(1)) != blocks:
        raise SystemExit(f"expected {blocks} shard jobs, snakemake planned {shard_jobs.group(1)}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (2 deg grid, few steps, 100-shard DAG)")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4), help="loader worker processes")
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args(argv)
    if args.quick:
        nt, nlat, nlon, block, naive_n, dag = 48, 90, 180, 16, 6, 100
    else:
        nt, nlat, nlon, block, naive_n, dag = 240, 180, 360, 60, 24, 1000
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        build_source(work / "source.zarr", nt, nlat, nlon, compressed=False)
        build_source(work / "source_zstd.zarr", nt, nlat, nlon, compressed=True)
        channels = len(PRESSURE_VARS) * len(LEVELS) + len(SURFACE_VARS)
        step = channels * nlat * nlon * 4
        print(f"source: {nt} steps x {channels} channels x {nlat}x{nlon} = {step / 1e6:.1f} MB/step, "
              f"{du(work / 'source.zarr') / 1e9:.2f} GB on disk (zstd copy {du(work / 'source_zstd.zarr') / 1e9:.2f}"
              f" GB), built in {time.perf_counter() - t0:.0f} s")
        shard_bps, copy_bps, paths = bench_shard(work, work / "source.zarr", nt, block)
        print(f"sharding  {shard_bps / 1e9:6.2f} GB/s   raw copy {copy_bps / 1e9:6.2f} GB/s   "
              f"ratio {shard_bps / copy_bps:5.2f}  [goal >= 0.5]")
        # as many reads as the loader makes (state + target per item)
        order = np.concatenate([np.random.default_rng(s).permutation(nt) for s in (0, 1)])
        raw_bps = bench_raw_read(paths, order, step)
        load_bps = bench_loader(paths, args.workers, batch=8)
        raw_bps2 = bench_raw_read(paths, order, step)
        raw_bps = max(raw_bps, raw_bps2)
        print(f"loader    {load_bps / 1e9:6.2f} GB/s   raw read {raw_bps / 1e9:6.2f} GB/s   "
              f"ratio {load_bps / raw_bps:5.2f}  [goal >= 0.8]  ({args.workers} workers, readinto, 1 thread)")
        cpu_load, cpu_raw = bench_cpu(paths, order, step)
        print(f"per CPU-second (1 process): loader {cpu_load / 1e9:.2f} GB/s, raw read {cpu_raw / 1e9:.2f} GB/s, "
              f"ratio {cpu_load / cpu_raw:.2f} -> x {args.workers} workers = {args.workers * cpu_load / cpu_raw:.2f} "
              "when the cores are free")
        naive_z = bench_naive(work / "source_zstd.zarr", order[:naive_n], step)
        naive_raw = bench_naive(work / "source.zarr", order[:naive_n], step)
        print(f"naive     {naive_z / 1e9:6.3f} GB/s (zstd source)   loader/naive {load_bps / naive_z:6.1f}x  "
              "[goal >= 10]"
              f";  uncompressed source {naive_raw / 1e9:.3f} GB/s -> {load_bps / naive_raw:.1f}x")
        elapsed = bench_snakemake(work, dag)
        if elapsed is None:
            print("snakemake -n: skipped (no Snakefile)")
        else:
            print(f"snakemake -n on a {dag}-shard DAG: {elapsed:.1f} s")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
