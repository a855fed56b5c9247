"""Write one time block of the canonical source as its own zarr v3 store (the Snakemake fan-out step).

Layout (so that both xarray and the loader's fast path read it): variable `data` (time, channel, latitude,
longitude) float32, one time step per chunk, no compression (codec chain = plain little-endian bytes); coords time,
channel, latitude, longitude; attrs `channels`, `provenance` (JSON string), `source`.
Safety: the shard is built in a temporary directory next to the output and renamed into place only when complete,
so a failure (e.g. a NaN in the source) never leaves a half shard and never touches other shards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time as _time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from ..config import Params, load_params, validate_params
from ..errors import DataError
from .integrity import raw_chunk_files, write_manifest
from .regrid import BlockMean, Resampler, resampler
from .source import channel_names, open_canonical, read_parts, source_path

READ_BYTES = 256 * 2**20  # bytes of source read per step of the copy loop (bounds memory whatever the block size)
# Chunk files named data/c.<t>.0.0.0, side by side: zarr's default "/" nests four folders per time step, and walking
# those folders was most of a no-op `dvc repro` (it hashes data/shards as an out and as three stages' dep).
CHUNK_KEYS = {"name": "default", "configuration": {"separator": "."}}


def _as_params(params) -> Params:
    if isinstance(params, Params):
        return params
    if isinstance(params, dict):
        return validate_params(params)
    return load_params(params)


def n_times(params, source: str | None = None) -> int:
    """Number of canonical time steps (after data.start/end and time_stride), cheaply."""
    params = _as_params(params)
    if params.data.source == "synthetic" and source is None:
        from .synthetic import synthetic_times

        return len(synthetic_times(params)[:: params.data.time_stride])
    return int(open_canonical(params, source).sizes["time"])


def plan_blocks(params, source: str | None = None) -> list[tuple[int, int]]:
    """(start, stop) time indices of every shard: block i covers canonical steps start..stop-1.

    Cheap: for the synthetic source it is derived from the dates alone; a real source is opened lazily (metadata).
    This is the preflight that Snakemake runs while it builds the DAG: opening the source checks names, levels,
    grids and the time axis (`timeaxis.select`: a gap or a duplicate raises here, naming the times and the fix), and
    data.static / data.grid are checked too, so a bad source stops before any shard job runs.
    """
    params = _as_params(params)
    n = n_times(params, source)
    if params.data.grid:
        from .regrid import target_grid

        target_grid(params.data.grid)
    if params.data.static:
        from .statics import check_static

        check_static(params, source)
    return _blocks(n, params.data.block_size)


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _channel_parts(ds: xr.Dataset) -> list[tuple[str, int | None]]:
    out = []
    for v in ds.data_vars:
        if "level" in ds[v].dims:
            out += [(str(v), int(lev)) for lev in ds[v]["level"].values]
        else:
            out.append((str(v), None))
    return out


def _check_finite(parts: list[np.ndarray], ds: xr.Dataset, times: np.ndarray, name: str) -> None:
    """Raise naming variable, level and time of the first NaN/inf. Fast path: a float32 sum per part is finite
    exactly when every value is (barring overflow, which only sends us to the exact check)."""
    if all(np.isfinite(np.sum(p, dtype=np.float32)) for p in parts):
        return
    block = np.concatenate(parts, axis=1)
    bad = ~np.isfinite(block)
    if not bad.any():
        return
    t, c = np.argwhere(bad.any(axis=(2, 3)))[0]
    variable, level = _channel_parts(ds)[c]
    where = f"variable '{variable}'" + (f", level {level} hPa" if level is not None else "") + f", time {times[t]}"
    kind = "NaN" if np.isnan(block[t, c]).any() else "inf"
    raise DataError(
        f"{name}: {kind} in {where} ({int(bad[t, c].sum())} grid points). No shard was written and other shards "
        "were not touched. Fix: repair or mask that part of the source, or move data.start/data.end to exclude it."
    )


def _create(tmp: Path, ds: xr.Dataset, times: np.ndarray, lat, lon, attrs: dict) -> None:
    """Metadata and coordinates via xarray (so any tool can open the store); data chunks are written later."""
    import dask.array as da

    channels = channel_names(ds)
    shape = (len(times), len(channels), len(lat), len(lon))
    template = xr.Dataset(
        {"data": (("time", "channel", "latitude", "longitude"), da.zeros(shape, chunks=(1,) + shape[1:], dtype="f4"))},
        coords={
            "time": times,
            "channel": np.array(channels, dtype=object),
            "latitude": ("latitude", lat, {"units": "degrees_north"}),
            "longitude": ("longitude", lon, {"units": "degrees_east"}),
        },
        attrs=attrs,
    )
    encoding = {"data": {"chunks": (1,) + shape[1:], "compressors": None, "filters": None, "fill_value": np.nan,
                         "chunk_key_encoding": CHUNK_KEYS}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        template.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, compute=False, encoding=encoding)


def _write_steps(tmp: Path, first: int, parts: list[np.ndarray], files: list[Path] | None) -> None:
    """Write time steps first.. of the shard; each step's chunk is the variables' slices one after the other."""
    if files is None:  # not the plain layout (should not happen with our encoding): let zarr encode
        import zarr

        block = np.concatenate(parts, axis=1)
        zarr.open_array(tmp / "data", mode="r+")[first : first + len(block)] = block
        return
    for i in range(len(parts[0])):
        path = files[first + i]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for p in parts:
                f.write(memoryview(p[i]).cast("B"))


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished shard into place; an older shard at `out` is removed only after that."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def write_shard(
    ds: xr.Dataset,
    start: int,
    stop: int,
    out: str | Path,
    coarsen: int | Resampler = 1,
    attrs: dict | None = None,
    name: str = "source",
) -> Path:
    """Write canonical time steps start..stop-1 of `ds` as a shard at `out` (atomically), on the grid that
    `coarsen` gives (n x n block means, or a Resampler such as conservative regridding to data.grid).

    Memory is bounded whatever the block size: the steps are read, regridded, checked and written READ_BYTES of
    source at a time (at least one step), one variable at a time."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    times = ds["time"].values[start:stop].astype("datetime64[ns]")
    if len(times) == 0:
        raise DataError(f"{name}: time steps {start}..{stop - 1} are outside the source ({ds.sizes['time']} steps).")
    resample = coarsen if isinstance(coarsen, Resampler) else None
    if resample is None:
        lat0, lon0 = ds["latitude"].values, ds["longitude"].values
        resample = BlockMean(lat0, lon0, coarsen) if coarsen > 1 else Resampler(lat0, lon0)
    lat, lon = resample.grid
    channels = channel_names(ds)
    attrs = {"channels": channels, "source": name, "provenance": "{}", **(attrs or {})}
    try:
        _create(tmp, ds, times, lat, lon, attrs)
        files = raw_chunk_files(tmp)
        per_step = sum(int(np.prod(ds[v].shape[1:])) for v in ds.data_vars) * 4
        steps_per_read = max(1, READ_BYTES // max(per_step, 1))
        for a in range(start, stop, steps_per_read):
            b = min(a + steps_per_read, stop)
            parts = read_parts(ds, a, b, resample)
            _check_finite(parts, ds, times[a - start : b - start], name)
            _write_steps(tmp, a - start, parts, files)
        write_manifest(tmp)  # checksums of every file, checked by the loader (integrity.py)
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _provenance(params: Params, argv: list[str]) -> str:
    try:
        from ..provenance import collect
    except ImportError:  # provenance module not present (should not happen in a generated project)
        return "{}"
    return json.dumps(collect(params=params, command=" ".join(["shard"] + argv)), sort_keys=True, default=str)


def shard_block(params: Params, block: int, out: str | Path, source: str | None = None, argv=()) -> Path:
    """Write shard number `block` of the plan."""
    ds = open_canonical(params, source)  # opened once: the plan follows from its time axis
    blocks = _blocks(ds.sizes["time"], params.data.block_size)
    if params.data.source == "synthetic" and source is None and ds.sizes["time"] != n_times(params):
        raise DataError("data/synthetic.zarr does not match params.yaml (other dates or step). "
                        "Fix: rerun `synthesize` (snakemake / dvc repro do).")
    if not 0 <= block < len(blocks):
        raise DataError(f"block {block} does not exist: the plan has {len(blocks)} blocks (0..{len(blocks) - 1}).")
    d = params.data
    start, stop = blocks[block]
    attrs = {"provenance": _provenance(params, list(argv)), "block": block}
    resample = resampler(ds["latitude"].values, ds["longitude"].values, d.coarsen, d.grid)
    return write_shard(ds, start, stop, out, resample, attrs, name=source_path(params, source))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="shard", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--block", type=int, help="block number (0-based), as in data/shards/block_NNNN.zarr")
    parser.add_argument("--out", help="shard store to write, e.g. data/shards/block_0000.zarr")
    parser.add_argument("--count", action="store_true", help="print the number of blocks and exit")
    parser.add_argument("--source", help="override the source path (default: data/synthetic.zarr or data.source)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.count:
        print(len(plan_blocks(params, args.source)))
        return 0
    if args.block is None or not args.out:
        parser.error("--block and --out are required (or --count)")
    t0 = _time.perf_counter()
    out = shard_block(params, args.block, args.out, args.source, argv)
    print(f"wrote {out} in {_time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
