"""Stats in bounded memory: the shards are streamed one step at a time and summed in a fixed pairwise tree."""

from __future__ import annotations

import importlib
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import PACKAGE

stats = importlib.import_module(f"{PACKAGE}.data.stats")
integrity = importlib.import_module(f"{PACKAGE}.integrity")
shard = importlib.import_module(f"{PACKAGE}.data.shard")
source = importlib.import_module(f"{PACKAGE}.data.source")

STEP = np.timedelta64(6, "h")


def pairwise_reference(values: list[np.ndarray], lo: int = 0, hi: int | None = None, level: int | None = None):
    """The tree PairwiseSum promises, built top-down: node (level L, j) = node (L-1, 2j) + node (L-1, 2j+1), the
    trailing odd node passed up unchanged."""
    n = len(values)
    if level is None:
        level = max(0, math.ceil(math.log2(n))) if n > 1 else 0
        return pairwise_reference(values, 0, n, level)
    if level == 0 or hi - lo == 1:
        return values[lo]
    mid = lo + 2 ** (level - 1)
    left = pairwise_reference(values, lo, min(mid, hi), level - 1)
    return left if mid >= hi else left + pairwise_reference(values, mid, hi, level - 1)


def test_pairwise_sum_is_a_fixed_tree():
    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 5, 7, 8, 9, 31, 64, 100]:
        values = [np.array([x]) for x in 1e4 * rng.standard_normal(n) + rng.standard_normal(n) * 1e-6]
        acc = stats.PairwiseSum()
        for v in values:
            acc.add(v)
        assert acc.total()[0] == pairwise_reference(values)[0]  # bit for bit: the grouping depends on n only
        assert abs(acc.total()[0] - math.fsum(v[0] for v in values)) <= 1e-12 * math.fsum(abs(v[0]) for v in values)
    with pytest.raises(ValueError):
        stats.PairwiseSum().total()


def write_shards(folder: Path, nt: int, nlat: int = 32, nlon: int = 64, block: int = 16) -> None:
    rng = np.random.default_rng(nt)
    lat = -90 + (np.arange(nlat) + 0.5) * 180 / nlat
    ds = xr.Dataset(
        {"geopotential": (("time", "level", "latitude", "longitude"),
                          (5e4 + 1e3 * rng.standard_normal((nt, 2, nlat, nlon))).astype(np.float32)),
         "2m_temperature": (("time", "latitude", "longitude"),
                            (280 + 5 * rng.standard_normal((nt, nlat, nlon))).astype(np.float32))},
        coords={"time": np.datetime64("2000-01-01", "ns") + np.arange(nt) * STEP, "level": [500, 850],
                "latitude": lat, "longitude": np.arange(nlon) * 360.0 / nlon},
    )
    c = source.canonicalize(ds)
    for i, a in enumerate(range(0, nt, block)):
        shard.write_shard(c, a, min(a + block, nt), folder / f"block_{i:04d}.zarr")


def test_stats_memory_is_flat_in_the_length_of_the_split(tmp_path):
    """tracemalloc peak (numpy buffers included): a few steps, the same for 24 and 96 steps (not 4x)."""
    step64 = 8 * 3 * 32 * 64  # one float64 step
    peaks = {}
    for nt in (24, 96):
        write_shards(tmp_path / f"s{nt}", nt, block=nt // 2)  # two shards each: only the split's length differs
        tracemalloc.start()
        result = stats.compute_stats(tmp_path / f"s{nt}", ("2000-01-01", "2000-12-31"), lead_hours=18)
        peaks[nt] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert result["lead_hours"] == 18 and len(result["mean"]) == 3
    # 4x the steps adds at most a few steps' worth (small buffers, the time index), never the 72 steps held
    assert peaks[96] - peaks[24] < 8 * step64, (peaks, step64)
    assert peaks[96] < 16 * step64 + 2**20, (peaks, step64)  # holding the split would be 96 steps


def test_stats_match_numpy_for_a_multi_step_lead(tmp_path):
    write_shards(tmp_path / "s", 40, nlat=6, nlon=12, block=7)
    ds = xr.concat([xr.open_zarr(p, consolidated=False)["data"] for p in sorted((tmp_path / "s").glob("block_*"))],
                   "time")
    x = ds.values[3:37].astype(np.float64)  # the train range below
    got = stats.compute_stats(tmp_path / "s", (str(ds.time.values[3]), str(ds.time.values[36])), lead_hours=18)
    np.testing.assert_allclose(got["mean"], x.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(got["std"], x.std((0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(got["diff_std"], (x[3:] - x[:-3]).std((0, 2, 3)), rtol=1e-10)
    out = tmp_path / "stats.json"
    stats.write_stats(got, out)
    read = integrity.read_stats(out)  # checksummed, as training reads it
    assert {k: v for k, v in read.items() if k != "sha256"} == got and not list(tmp_path.glob(".*tmp*"))
