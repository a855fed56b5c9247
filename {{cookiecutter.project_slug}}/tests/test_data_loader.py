"""Stats (train split only, bit-reproducible) and the loader (exact pairs across shard boundaries, seeded,
resumable, rank-sharded order)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import PACKAGE

source = importlib.import_module(f"{PACKAGE}.data.source")
shard = importlib.import_module(f"{PACKAGE}.data.shard")
stats = importlib.import_module(f"{PACKAGE}.data.stats")
loader = importlib.import_module(f"{PACKAGE}.data.loader")
forcings = importlib.import_module(f"{PACKAGE}.data.forcings")

START = np.datetime64("2000-01-01T00:00", "ns")
STEP = np.timedelta64(6, "h")
NT, NLAT, NLON = 40, 6, 12
TRAIN = ("2000-01-02", "2000-01-07T18:00")  # steps 4..27


def canonical(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    lat = -90 + (np.arange(NLAT) + 0.5) * 180 / NLAT
    lon = np.arange(NLON) * 360.0 / NLON
    return xr.Dataset(
        {
            "geopotential": (("time", "level", "latitude", "longitude"),
                             (5e4 + 1e3 * rng.standard_normal((NT, 2, NLAT, NLON))).astype(np.float32)),
            "2m_temperature": (("time", "latitude", "longitude"),
                               (280 + 5 * rng.standard_normal((NT, NLAT, NLON))).astype(np.float32)),
        },
        coords={"time": START + np.arange(NT) * STEP, "level": [500, 850], "latitude": lat, "longitude": lon},
    )


def write_shards(ds: xr.Dataset, folder: Path, block: int = 7) -> list[Path]:
    c = source.canonicalize(ds)
    return [shard.write_shard(c, a, min(a + block, NT), folder / f"block_{i:04d}.zarr")
            for i, a in enumerate(range(0, NT, block))]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    write_shards(canonical(), folder)
    return folder


def flat(ds: xr.Dataset) -> np.ndarray:
    return np.concatenate([ds["geopotential"].values, ds["2m_temperature"].values[:, None]], axis=1)


def test_stats_train_only_bit_reproducible(shards, tmp_path):
    a = stats.compute_stats(shards, TRAIN, lead_hours=12)
    b = stats.compute_stats(shards, TRAIN, lead_hours=12)
    assert json.dumps(a) == json.dumps(b)
    x = flat(canonical())[4:28].astype(np.float64)
    assert a["channels"] == ["geopotential_500", "geopotential_850", "2m_temperature"]
    np.testing.assert_allclose(a["mean"], x.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(a["std"], x.std((0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(a["diff_std"], (x[2:] - x[:-2]).std((0, 2, 3)), rtol=1e-10)
    assert a["time_step_hours"] == 6 and a["lead_hours"] == 12 and a["train"] == list(TRAIN)
    # changing data outside the train split changes nothing
    other = canonical()
    other["geopotential"][30:] += 1e4
    other["2m_temperature"][:3] -= 50
    folder = tmp_path / "other"
    write_shards(other, folder)
    assert json.dumps(stats.compute_stats(folder, TRAIN, lead_hours=12)) == json.dumps(a)
    with pytest.raises(ValueError, match="multiple of the data time step"):
        stats.compute_stats(shards, TRAIN, lead_hours=9)


def test_normalizer_roundtrip_numpy_and_torch(shards):
    import torch

    n = stats.Normalizer.from_dict(stats.compute_stats(shards, TRAIN, lead_hours=6))
    x = flat(canonical())[:3]
    z = n.normalize(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(n.denormalize(z), x, rtol=1e-6)
    zt = n.normalize(torch.from_numpy(x))
    assert torch.equal(zt, torch.from_numpy(z))
    assert n.delta_scale.shape == (3,) and np.all(n.delta_scale > 0)


def reference_pairs(shard_folder: Path, norm, times_range, k: int, r: int) -> dict[int, tuple]:
    """Plain xarray: every valid t -> (state, forcings, targets)."""
    data = xr.concat([xr.open_zarr(p, consolidated=False)["data"] for p in sorted(shard_folder.glob("block_*"))],
                     "time").load()
    lo, hi = (np.datetime64(t, "ns") for t in times_range)
    out = {}
    times = data.time.values
    for i, t in enumerate(times):
        if i + r * k >= len(times) or t < lo or times[i + r * k] > hi:
            continue
        state = norm.normalize(data.sel(time=t).values)
        targets = np.stack([norm.normalize(data.isel(time=i + j * k).values) for j in range(1, r + 1)])
        f = forcings.forcing_fields(times[[i + j * k for j in range(r)]], data.latitude.values, data.longitude.values)
        out[int(t.astype(np.int64))] = (state, f, targets)
    return out


@pytest.mark.parametrize("raw_reads", [True, False])
def test_loader_pairs_equal_xarray_reference_across_shards(shards, raw_reads):
    norm = stats.Normalizer.from_dict(stats.compute_stats(shards, TRAIN, lead_hours=12))
    k, r, rng_ = 2, 3, ("2000-01-02T12:00", "2000-01-09T06:00")
    ds = loader.WeatherPairs(shards, norm, rng_, lead_steps=k, rollout_steps=r, raw_reads=raw_reads)
    ref = reference_pairs(shards, norm, rng_, k, r)
    assert len(ds) == len(ref) == 22  # starts at steps 6..27 (range is steps 6..33, span 6)
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        t = int(item["time"])
        state, f, targets = ref[t]
        assert item["state"].shape == (3, NLAT, NLON) and item["targets"].shape == (r, 3, NLAT, NLON)
        assert np.array_equal(item["state"].numpy(), state)
        assert np.array_equal(item["targets"].numpy(), targets)
        assert np.array_equal(item["forcings"].numpy(), f)
        seen.add(t)
    assert seen == set(ref)  # includes pairs that straddle block_0000|block_0001 etc.


def batches(ds, **kw):
    return [b["time"].tolist() for b in loader.make_loader(ds, batch_size=4, **kw)]


def test_sampler_seeded_resumable_rank_sharded(shards):
    norm = stats.Normalizer.from_dict(stats.compute_stats(shards, TRAIN, lead_hours=6))
    ds = loader.WeatherPairs(shards, norm, ("2000-01-01", "2000-01-10T18:00"), lead_steps=1)
    first = batches(ds, seed=3)
    assert first == batches(ds, seed=3)  # same order every run
    assert first != batches(ds, seed=4)
    assert batches(ds, seed=3, epoch=1) != first
    assert batches(ds, seed=3, start_index=8) == first[2:]  # resume after two batches
    assert len(ds) == 39
    ranks = [sum(batches(ds, seed=3, rank=r, world_size=2), []) for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == 16  # 19 each, whole batches
    ranks = [sum(batches(ds, seed=3, rank=r, world_size=2, drop_last=False), []) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 20  # padded with the permutation's head
    assert set(ranks[0]) | set(ranks[1]) == {int(t) for t in ds.times[ds.starts]}


def test_worker_processes_give_the_same_batches(shards):
    norm = stats.Normalizer.from_dict(stats.compute_stats(shards, TRAIN, lead_hours=6))
    ds = loader.WeatherPairs(shards, norm, ("2000-01-01", "2000-01-10T18:00"), lead_steps=1)
    a = list(loader.make_loader(ds, batch_size=5, seed=1))
    b = list(loader.make_loader(ds, batch_size=5, seed=1, num_workers=2, prefetch=2))
    assert len(a) == len(b) == len(ds) // 5
    for x, y in zip(a, b, strict=True):
        for key in x:
            assert np.array_equal(x[key].numpy(), y[key].numpy()), key
    batch = loader.to_device(a[0], "cpu")
    assert batch["state"].shape == (5, 3, NLAT, NLON) and batch["forcings"].shape == (5, 1, 3, NLAT, NLON)


def test_stats_cli_and_channel_mismatch(shards, tmp_path):
    n = stats.Normalizer(["a", "b", "c"], [0, 0, 0], [1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="recompute data/stats.json"):
        loader.WeatherPairs(shards, n)


@pytest.mark.parametrize("workers", [0, 2])
def test_recycled_buffers_never_overwrite_a_batch_still_held(shards, workers):
    norm = stats.Normalizer.from_dict(stats.compute_stats(shards, TRAIN, lead_hours=6))
    ds = loader.WeatherPairs(shards, norm, ("2000-01-01", "2000-01-10T18:00"), lead_steps=1)
    dl = loader.make_loader(ds, batch_size=3, seed=5, num_workers=workers, prefetch=1)
    held = None
    recycled = 0
    for n, batch in enumerate(dl):  # only the current batch is kept (plus `held`): buffers get reused
        expect = ds.__getitems__([int(i) for i in np.searchsorted(ds.times[ds.starts], batch["time"].numpy())])
        for key in ("state", "targets", "forcings", "time"):
            assert torch_equal(batch[key], expect[key]), (n, key)
        if n == 1:
            held = (batch["state"], batch["state"].clone())
        recycled += dl.slots is not None and batch["state"].untyped_storage().data_ptr() in {
            b["state"].untyped_storage().data_ptr() for b in dl.slots.buffers}
    assert torch_equal(held[0], held[1]), "a held batch was overwritten"
    assert recycled == len(dl)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())
