"""Data-pipeline and planning figures, each against its baseline measured in the same run, on the same bytes.

    python benchmarks/bench_data.py            # full spec: 1 deg grid, 40 channels, >= 2 GB on disk, 1000-shard DAG
    python benchmarks/bench_data.py --quick    # a small run (a minute or two)

Ends with one `name: value` line per figure (goal in brackets in the lines above them):
  sharding / raw copy            shard writing (checksums included) against copying the same source files [>= 0.5]
  loader / raw read              batches out of the loader (2 workers, normalized, checksums verified) against a
                                 single-thread `readinto` of the same chunk files into as much memory as the
                                 loader's batch ring [>= 0.8]; the median of 5 rounds, each timing the loader over
                                 two epochs (the read into one cache-resident buffer is printed beside it)
  loader (GPU setup) / raw read  the same with the normalization left to the GPU (the workers only read)
  loader / naive xarray loader   against per-sample `ds.isel(time=i).to_array().values` on a zstd store [>= 10]
  dry-run ratio                  `snakemake -n` of the project on a 1000-shard DAG against a bare Snakefile with the
                                 same rules, jobs and edges (read off the project's own DAG) [<= 1.5]
  no-op repro seconds            `dvc repro` with nothing to do, on the default data [<= 2]
Everything runs from the page cache (the data are written just before they are read), as in training. On a shared
machine wall-clock rates move with the neighbours' load; the per-CPU-second line beside the loader is steadier.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = os.environ.get("FORGE_PKG") or next(p.parent.name for p in sorted((PROJECT / "src").glob("*/cli.py")))
sys.path.insert(0, str(PROJECT / "src"))  # this checkout's code, installed or not (and whatever else is installed)

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


def bench_raw_read(paths: list[Path], order: np.ndarray, nbytes_step: int, ring_steps: int = 0,
                   cpu: bool = False) -> float:
    """Bytes per second (per CPU-second with `cpu`) of a bare `readinto` of the chunk files in `order`: into one
    reused buffer (ring_steps 0: it stays in the CPU cache), or into a ring of that many step-sized buffers (like
    batch memory, which a loader fills once and the consumer reads later: the bytes go to main memory)."""
    files = [f for p in paths for f in shard.raw_chunk_files(p)]
    ring = np.empty((max(ring_steps, 1), nbytes_step), np.uint8)
    ring[:] = 0  # touched: no page faults in the timed loop
    clock = time.process_time if cpu else time.perf_counter
    t0 = clock()
    for k, i in enumerate(order):
        with open(files[i], "rb", buffering=0) as f:
            f.readinto(ring[k % len(ring)])
    return len(order) * nbytes_step / (clock() - t0)


def open_loader(paths: list[Path], workers: int, batch: int, normalize: bool = True, verify: str = "first"):
    """A loader as training builds it, its workers started and every chunk read (and verified) once."""
    ds = loader.WeatherPairs(paths, _normalizer(paths), lead_steps=1, verify=verify)
    dl = loader.make_loader(ds, batch_size=batch, seed=0, num_workers=workers, prefetch=2, normalize=normalize)
    for _ in dl:  # epoch 0: starts the (persistent) workers, maps the ring, hashes each chunk once per worker
        pass
    dl.epoch = 1
    return dl


def bench_loader(dl, epochs: int = 2) -> float:
    """Bytes of state + targets per second out of the loader, over `epochs` epochs (after the warm-up)."""
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        dl.sampler.set_epoch(dl.epoch)
        dl.epoch += 1
        n += sum(len(b["time"]) for b in dl)
    elapsed = time.perf_counter() - t0
    step_bytes = int(np.prod(dl.dataloader.dataset.sample_shape)) * 4
    return n * 2 * step_bytes / elapsed  # state + target per item


def bench_cpu(paths: list[Path], order: np.ndarray, step_bytes: int) -> tuple[float, float]:
    """Bytes per CPU-second of the in-process loader and of the raw read (into batch-ring memory): a
    contention-proof view of the same comparison (on a shared machine wall-clock rates move with the neighbours'
    load, CPU time much less)."""
    dl = open_loader(paths, 0, 8)
    raw = bench_raw_read(paths, order, step_bytes, len(dl.slots.buffers) * 2 * 8, cpu=True)
    c0 = time.process_time()
    n = sum(len(b["time"]) for b in dl)
    return n * 2 * step_bytes / (time.process_time() - c0), raw


def bench_loader_rounds(paths: list[Path], order: np.ndarray, step: int, workers: int, rounds: int = 5) -> dict:
    """Raw reads and the loaders, interleaved over `rounds` rounds so that all see the same load; median ratios.

    The raw read lands the bytes in as much memory as the loader's batch ring holds (its fair counterpart); the
    read into one cache-resident buffer is reported beside it."""
    loaders = {"cpu": open_loader(paths, workers, 8), "gpu": open_loader(paths, workers, 8, normalize=False),
               "always": open_loader(paths, workers, 8, verify="always")}
    ring_steps = len(loaders["cpu"].slots.buffers) * 2 * 8  # (workers x prefetch + 3) batches of state + targets
    ratios = {k: [] for k in (*loaders, "hot")}
    for r in range(rounds):
        raw = bench_raw_read(paths, order, step, ring_steps)
        hot = bench_raw_read(paths, order, step)
        rates = {k: bench_loader(dl) for k, dl in loaders.items()}
        for k in loaders:
            ratios[k].append(rates[k] / raw)
        ratios["hot"].append(rates["cpu"] / hot)
        print(f"  round {r + 1}: raw read {raw / 1e9:6.2f} GB/s (into one cached buffer {hot / 1e9:.2f})   loader "
              f"{rates['cpu'] / 1e9:6.2f} GB/s (GPU setup {rates['gpu'] / 1e9:.2f}, checksum on every read "
              f"{rates['always'] / 1e9:.2f})", flush=True)
    del loaders
    return {k: float(np.median(v)) for k, v in ratios.items()}


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


def plan_figures(work: Path, blocks: int) -> dict[str, str]:
    """The dry-run ratio and the no-op repro time (bench_plan.py), when the project has a Snakefile."""
    if not (PROJECT / "Snakefile").exists():
        return {}
    import bench_plan

    ratio, project_s, bare_s = bench_plan.dry_run_ratio(work, blocks)
    print(f"snakemake -n on a {blocks}-shard DAG: project {project_s:.2f} s, bare Snakefile of the same shape "
          f"{bare_s:.2f} s [goal ratio <= 1.5]")
    noop = bench_plan.noop_repro_seconds(work)
    if noop is None:
        print("dvc repro with nothing to do: n/a (no dvc or git)")
        return {"dry-run ratio": f"{ratio:.2f}", "no-op repro seconds": "n/a"}
    print(f"dvc repro with nothing to do: {noop[0]:.2f} s wall, {noop[1]:.2f} s CPU [goal <= 2]")
    return {"dry-run ratio": f"{ratio:.2f}", "no-op repro seconds": f"{noop[0]:.2f}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (2 deg grid, few steps, 100-shard DAG)")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4), help="loader worker processes")
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--no-plan", action="store_true", help="skip the planning figures (snakemake -n, dvc repro)")
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
        ratios = bench_loader_rounds(paths, order, step, args.workers)
        print(f"loader / raw read {ratios['cpu']:.2f} (median of 5 rounds) [goal >= 0.8]; GPU setup "
              f"{ratios['gpu']:.2f}; checksum on every read {ratios['always']:.2f}; against a read into one cached "
              f"buffer {ratios['hot']:.2f}  ({args.workers} workers)")
        cpu_load, cpu_raw = bench_cpu(paths, order, step)
        print(f"per CPU-second (1 process): loader {cpu_load / 1e9:.2f} GB/s, raw read {cpu_raw / 1e9:.2f} GB/s, "
              f"ratio {cpu_load / cpu_raw:.2f} -> x {args.workers} workers = {args.workers * cpu_load / cpu_raw:.2f} "
              "when the cores are free")
        naive_z = bench_naive(work / "source_zstd.zarr", order[:naive_n], step)
        load_bps = ratios["cpu"] * bench_raw_read(paths, order, step, 64)
        print(f"naive     {naive_z / 1e9:6.3f} GB/s (zstd source)   loader/naive {load_bps / naive_z:6.1f}x  "
              "[goal >= 10]")
        figures = {"sharding / raw copy": f"{shard_bps / copy_bps:.2f}", "loader / raw read": f"{ratios['cpu']:.2f}",
                   "loader (GPU setup) / raw read": f"{ratios['gpu']:.2f}",
                   "loader / naive xarray loader": f"{load_bps / naive_z:.1f}"}
        if args.no_plan:
            print("planning: skipped (--no-plan)")
        else:
            figures.update(plan_figures(work, dag))
        print("\n".join(f"{name}: {value}" for name, value in figures.items()))
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
