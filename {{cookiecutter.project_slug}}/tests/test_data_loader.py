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
integrity = importlib.import_module(f"{PACKAGE}.data.integrity")
DataError = importlib.import_module(f"{PACKAGE}.errors").DataError

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


# ---------------------------------------------------------------------------------------------------------------
# integrity: every shard carries the checksums of its files; a damaged chunk stops the loader with one message


def damage(chunk: Path, how: str) -> None:
    data = chunk.read_bytes()
    if how == "truncated":
        chunk.write_bytes(data[: len(data) // 2])
    elif how == "garbled":  # same size, other bytes
        chunk.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        chunk.unlink()


@pytest.fixture(scope="module")
def norm(shards):
    return stats.Normalizer.from_dict(stats.compute_stats(shards, TRAIN, lead_hours=6))


def damaged_copy(shards: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the shards and the chunk file of time step 10 (block_0001, its 4th step: 2000-01-03T12:00)."""
    import shutil

    copy = Path(shutil.copytree(shards, tmp_path / "shards"))
    return copy, shard.raw_chunk_files(copy / "block_0001.zarr")[3]


# what the message says when the damage is found while reading, and when it is found at open (a chunk is 864 bytes)
EXPECTED = {"truncated": ("is truncated: 432 bytes where 864 were expected", "has 432 bytes, 864 expected"),
            "garbled": ("does not match its checksum", None), "deleted": ("is missing", "is missing")}


def assert_names_the_damage(message: str, copy: Path, words: str) -> None:
    assert str(copy / "block_0001.zarr") in message and "file data/c.3.0.0.0" in message, message
    assert "time step 2000-01-03T12:00" in message and words in message, message
    assert "dvc checkout data/shards" in message and "snakemake --cores 1 --force" in message, message


@pytest.mark.parametrize("how", ["truncated", "garbled", "deleted"])
@pytest.mark.parametrize("workers", [0, 2])
def test_a_damaged_chunk_stops_the_loader_with_the_shard_time_and_fix(shards, norm, tmp_path, how, workers):
    copy, chunk = damaged_copy(shards, tmp_path)
    ds = loader.WeatherPairs(copy, norm, lead_steps=1)  # opened while intact
    damage(chunk, how)
    with pytest.raises(DataError) as raised:
        for _ in loader.make_loader(ds, batch_size=4, seed=0, num_workers=workers, shuffle=False):
            pass
    reading, opening = EXPECTED[how]
    assert_names_the_damage(str(raised.value), copy, reading)
    assert "Traceback" not in str(raised.value)  # a worker's error arrives as the message alone
    if opening:  # size and existence are checked when a shard is opened: before any training
        with pytest.raises(DataError) as raised:
            loader.WeatherPairs(copy, norm, lead_steps=1)
        assert_names_the_damage(str(raised.value), copy, opening)


def test_zarr_path_checks_chunks_too(shards, norm, tmp_path):
    copy, chunk = damaged_copy(shards, tmp_path)
    ds = loader.WeatherPairs(copy, norm, lead_steps=1, raw_reads=False)
    damage(chunk, "deleted")  # zarr alone would read the missing chunk as NaN fill values
    with pytest.raises(DataError, match="is missing"):
        list(loader.make_loader(ds, batch_size=4, seed=0, shuffle=False))


def test_checksums_once_per_process_or_on_every_read(shards, norm, tmp_path):
    copy, chunk = damaged_copy(shards, tmp_path)
    first = loader.WeatherPairs(copy, norm, lead_steps=1)
    always = loader.WeatherPairs(copy, norm, lead_steps=1, verify="always")
    for ds in (first, always):
        list(loader.make_loader(ds, batch_size=4, seed=0, shuffle=False))  # every chunk read (and hashed) once
    damage(chunk, "garbled")
    list(loader.make_loader(first, batch_size=4, seed=0, shuffle=False))  # already verified in this process
    with pytest.raises(DataError, match="does not match its checksum"):
        list(loader.make_loader(always, batch_size=4, seed=0, shuffle=False))
    with pytest.raises(ValueError, match="verify must be one of"):
        loader.WeatherPairs(copy, norm, verify="never")


def test_a_shard_without_checksums_warns_and_still_checks_sizes(shards, norm, tmp_path):
    copy, chunk = damaged_copy(shards, tmp_path)
    manifest = json.loads((copy / "block_0001.zarr" / integrity.MANIFEST).read_text())
    assert manifest["hash"] == "xxh3_64" and "data/zarr.json" in manifest["files"]
    assert len([f for f in manifest["files"] if f.startswith("data/c.")]) == 7  # one chunk file per time step
    (copy / "block_0001.zarr" / integrity.MANIFEST).unlink()  # e.g. a store written by other means
    with pytest.warns(UserWarning, match=r"block_0001.zarr: no data/checksums.json, so a garbled chunk cannot"):
        loader.WeatherPairs(copy, norm)
    damage(chunk, "truncated")
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"time step 2000-01-03T12:00\) has 432 bytes"):
        loader.WeatherPairs(copy, norm)
    (copy / "block_0002.zarr" / integrity.MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match=r"block_0002.zarr/data/checksums.json is damaged"):
        loader.WeatherPairs(sorted(copy.glob('block_*'))[2:], norm)


def test_the_shards_index_changes_exactly_when_a_store_does(shards, tmp_path):
    """data/shards/index.json, what DVC's stages depend on instead of the folder: the same bytes for the same
    stores; a new digest for a store whose content changed, and only for it, with or without a manifest."""
    copy, chunk = damaged_copy(shards, tmp_path)
    stores = [str(p) for p in sorted(copy.glob("block_*.zarr"), reverse=True)]  # any order: the index sorts
    first = integrity.write_index(stores, tmp_path / "first.json").read_bytes()
    assert integrity.write_index(stores[::-1], tmp_path / "again.json").read_bytes() == first
    before = json.loads(first)["stores"]
    assert list(before) == sorted(Path(s).name for s in stores) and len(set(before.values())) == len(stores)

    def changed() -> set[str]:
        now = json.loads(integrity.write_index(stores, tmp_path / "now.json").read_text())["stores"]
        return {name for name in now if now[name] != before[name]}

    damage(chunk, "garbled")  # block_0001 rewritten with other values, and its manifest with it
    integrity.write_manifest(copy / "block_0001.zarr")
    assert changed() == {"block_0001.zarr"}
    before = json.loads((tmp_path / "now.json").read_text())["stores"]
    (copy / "block_0002.zarr" / integrity.MANIFEST).unlink()  # a store without one (static.zarr): file by file
    assert changed() == {"block_0002.zarr"}
    before = json.loads((tmp_path / "now.json").read_text())["stores"]
    damage(shard.raw_chunk_files(copy / "block_0002.zarr")[0], "garbled")
    assert changed() == {"block_0002.zarr"}


def test_loader_reports_queue_depth_and_data_wait(shards, norm):
    ds = loader.WeatherPairs(shards, norm, ("2000-01-01", "2000-01-10T18:00"), lead_steps=1)
    import time

    dl = loader.make_loader(ds, batch_size=3, seed=0, num_workers=2, prefetch=2)
    for _ in dl:  # starts the (persistent) workers
        pass
    dl.stats(reset=True)
    dl.sampler.set_epoch(1)
    for _ in dl:
        time.sleep(0.05)  # a consumer slower than the workers: batches queue up, little waiting
    slow = dl.stats(reset=True)
    assert slow["batches"] == len(dl) and slow["queue_depth"] > 1 and slow["data_wait_share"] < 0.5, slow
    dl = loader.make_loader(ds, batch_size=3, seed=0)  # in process: every batch is read when asked for
    for _ in dl:
        pass
    eager = dl.stats()
    assert eager["queue_depth"] == 0 and eager["data_wait_share"] > 0.5, eager
    assert dl.stats(reset=True)["batches"] == len(dl) and dl.stats()["batches"] == 0
    for n, _ in enumerate(dl):  # a reset in the middle of an epoch (as at each log line) starts a new window
        if n == 1:
            assert dl.stats(reset=True)["batches"] == 2
    assert dl.stats()["batches"] == len(dl) - 2


def test_raw_batches_in_physical_units(shards, norm):
    """normalize=False (what a GPU run's workers produce: the device normalizes) gives the stored values."""
    ds = loader.WeatherPairs(shards, norm, ("2000-01-01", "2000-01-10T18:00"), lead_steps=1)
    normalized = next(iter(loader.make_loader(ds, batch_size=4, seed=2)))
    raw = next(iter(loader.make_loader(ds, batch_size=4, seed=2, normalize=False)))
    assert torch_equal(raw["time"], normalized["time"]) and torch_equal(raw["forcings"], normalized["forcings"])
    for key in ("state", "targets"):
        np.testing.assert_array_equal(norm.normalize(raw[key].numpy()), normalized[key].numpy())
        assert not np.allclose(raw[key].numpy(), normalized[key].numpy())


@pytest.mark.parametrize("how", ["truncated", "garbled", "deleted"])
def test_evaluation_and_statistics_readers_stop_on_a_damaged_chunk(shards, tmp_path, how):
    """The other readers of shards (evaluation's ShardReader; ShardSteps for stats and the climatology) check what
    they read as the loader does: a damaged chunk is an error naming the shard, the time step and the fix, never
    fill values or a garbled score."""
    inference = importlib.import_module(f"{PACKAGE}.inference")
    copy, chunk = damaged_copy(shards, tmp_path)
    reader, steps = inference.ShardReader(copy), stats.ShardSteps(copy)  # opened while intact
    damage(chunk, how)
    when = np.datetime64("2000-01-03T12:00", "ns")
    with pytest.raises(DataError) as raised:
        reader.read(np.array([when]))
    assert_names_the_damage(str(raised.value), copy, EXPECTED[how][1] or EXPECTED[how][0])
    with pytest.raises(DataError) as raised:
        steps.read(int(np.flatnonzero(steps.times == when)[0]))
    assert_names_the_damage(str(raised.value), copy, EXPECTED[how][1] or EXPECTED[how][0])
