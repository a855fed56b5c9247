"""Preflight: params checked against the data's metadata before any job runs, one message per problem naming the
file, key, value and fix."""

from __future__ import annotations

import copy
import importlib
import time

import numpy as np
import pytest
import yaml


@pytest.fixture(scope="module")
def mods(pkg_name):
    names = ("config", "preflight", "remote", "errors", "data.synthetic", "data.shard", "data.stats")
    return {n.rsplit(".", 1)[-1]: importlib.import_module(f"{pkg_name}.{n}") for n in names}


@pytest.fixture(scope="module")
def raw(project_root) -> dict:
    return yaml.safe_load((project_root / "params.yaml").read_text())


def params_with(mods, raw, **changes):
    """The shipped params with dotted keys changed (validated by config.py)."""
    edited = copy.deepcopy(raw)
    for dotted, value in changes.items():
        node = edited
        *parents, last = dotted.replace("__", ".").split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return mods["config"].validate_params(edited)


def problems(mods, params) -> list[str]:
    with pytest.raises(mods["errors"].ParamsError) as caught:
        mods["preflight"].check(params, "params.yaml")
    lines = str(caught.value).splitlines()
    assert all(line.startswith("params.yaml: ") and "Fix:" in line for line in lines), lines
    return lines


def test_shipped_params_pass(mods, raw):
    data = mods["preflight"].check(params_with(mods, raw), "params.yaml")
    assert data.channels == ["geopotential_500", "geopotential_850", "temperature_500", "temperature_850",
                             "2m_temperature"]
    assert (data.nlat, data.nlon) == (raw["data"]["synthetic"]["nlat"], raw["data"]["synthetic"]["nlon"])
    assert len(data.times) == len(mods["synthetic"].synthetic_times(params_with(mods, raw)))


# (changes, the one message's words)
CASES = [
    ({"data.variables": ["temprature", "geopotential"]},
     "data.variables has 'temprature', which the source 'synthetic' lacks (it has: geopotential, temperature, "
     "2m_temperature). Did you mean 'temperature'?"),
    ({"data.levels": [500, 600]}, "data.levels has 600 hPa, which the source 'synthetic' lacks (it has: [500, 850])."
                                  " Did you mean 500?"),
    ({"evaluate.headline": ["geopotential_501"]}, "evaluate.headline has 'geopotential_501', not a channel of the "
                                                   "data"),
    ({"evaluate.map_channels": ["t2m"]}, "evaluate.map_channels has 't2m', not a channel"),
    ({"data.levels": [850], "evaluate.headline": ["temperature_500"]}, "Did you mean 'temperature_850'?"),
    ({"train.batch_size": 5000}, "train.batch_size 5000 is more than the 1463 training pairs in data.splits.train"),
    ({"train.rollout_steps": 4, "train.batch_size": 1461}, "more than the 1460 training pairs"),
    ({"data.splits.test": ["2001-03-30", "2001-03-31T18:00"]}, "data.splits.test ['2001-03-30', "
                                                               "'2001-03-31T18:00'] is too short for one forecast"),
    ({"evaluate.climatology_window_days": 0, "data.splits.train": ["2000-06-01", "2000-12-31T18:00"]},
     "evaluate.climatology_window_days 0: no training state"),
    # a UNet halves the grid model.depth times (a ViT pads to whole patches, so it has no such rule)
    ({"model.name": "unet", "model.depth": 4, "data.synthetic.nlon": 72},
     "model.depth 4 needs a number of longitudes divisible by 16, but the grid has 72"),
    ({"data.coarsen": 40}, "data.coarsen 40 leaves a 0 x 1 grid of the source's 32 x 64"),
    ({"train.init_from": "runs/missing.pt"}, "train.init_from 'runs/missing.pt' does not exist"),
]


@pytest.mark.parametrize("changes,words", CASES, ids=[",".join(c) for c, _ in CASES])
def test_each_problem_is_one_clear_line(mods, raw, changes, words):
    found = problems(mods, params_with(mods, raw, **changes))
    assert len(found) == 1 and words in found[0], found


def test_all_problems_are_reported_together(mods, raw):
    found = problems(mods, params_with(mods, raw, **{"evaluate.headline": ["z500"], "train.batch_size": 9999,
                                                     "train.init_from": "nope.pt"}))
    assert len(found) == 3, found


def test_climatology_check_is_the_stages_window_rule(mods, raw):
    """A triangular window of half-width w reaches +-(w - 1) days (its ends weigh 0), a uniform one +-w: preflight
    asks what the climatology stage will compute. Train ends on day 31, the test's last valid day is day 90."""
    january = {"data.splits.train": ["2000-01-01", "2000-01-31T18:00"], "evaluate.climatology_window_days": 59}
    found = problems(mods, params_with(mods, raw, **january))
    assert len(found) == 1 and "window_days 59: no training state" in found[0], found
    assert "within the triangular window of day 90 at 00h" in found[0]
    mods["preflight"].check(params_with(mods, raw, **january, **{"evaluate.climatology_window_shape": "uniform"}))
    mods["preflight"].check(params_with(mods, raw, **{**january, "evaluate.climatology_window_days": 60}))
    # an external store is the stage's to check (it opens the store), not preflight's
    mods["preflight"].check(params_with(mods, raw, **january, **{"evaluate.climatology": "clim.zarr"}))


@pytest.fixture(scope="module")
def local_store(mods, raw, tmp_path_factory):
    """A small 'real' source: the synthetic atmosphere written as a zarr store, 2000-01-01 .. 2000-03-31."""
    params = params_with(mods, raw, **{"data.end": "2000-03-31T18:00", "data.synthetic.nlat": 8,
                                       "data.synthetic.nlon": 16, "evaluate.climatology_window_days": 30,
                                       "data.splits.train": ["2000-01-01", "2000-03-05T18:00"],
                                       "data.splits.val": ["2000-03-06", "2000-03-10T18:00"],
                                       "data.splits.test": ["2000-03-11", "2000-03-31T18:00"]})
    path = tmp_path_factory.mktemp("source") / "era5.zarr"
    mods["synthetic"].generate(params).to_zarr(path, zarr_format=3, consolidated=False)
    return path, params


def real(mods, local_store, **changes):
    path, params = local_store
    raw = params.model_dump(mode="json")
    raw["data"].update(source=str(path), variables=["geopotential", "temperature", "2m_temperature"])
    return params_with(mods, raw, **changes)


def test_a_real_source_is_read_from_its_metadata(mods, local_store):
    data = mods["preflight"].check(real(mods, local_store), "params.yaml")
    assert (data.nlat, data.nlon, len(data.channels), len(data.times)) == (8, 16, 5, 364)
    found = problems(mods, real(mods, local_store, **{"data.variables": ["geopotential", "2m_temperatur"]}))
    assert len(found) == 1 and "Did you mean '2m_temperature'?" in found[0] and "era5.zarr" in found[0]
    found = problems(mods, real(mods, local_store, **{"data.end": "2000-04-30"}))
    assert "data.start 2000-01-01 .. data.end 2000-04-30 reaches outside the source" in found[0]
    assert "(2000-01-01T00:00 .. 2000-03-31T18:00)" in found[0]


def test_pairs_and_grid_rules_match_the_code_they_predict(mods, local_store, tmp_path):
    """The pair count is the loader's, the grid rule the UNet's: preflight predicts what would fail later."""
    import torch  # noqa: F401 - the loader and models need it

    loader = importlib.import_module(mods["config"].__package__ + ".data.loader")
    models = importlib.import_module(mods["config"].__package__ + ".models")
    params = real(mods, local_store, **{"data.block_size": 100})
    shards = [mods["shard"].shard_block(params, b, tmp_path / f"block_{b:04d}.zarr") for b in range(4)]
    stats = mods["stats"].compute_stats(shards, params.data.splits.train, 6)
    data = mods["preflight"].inspect(params)
    for lead, rollout in ((6, 1), (12, 1), (6, 3)):
        pairs = loader.WeatherPairs(shards, mods["stats"].Normalizer.from_dict(stats),
                                    tuple(params.data.splits.train), lead // 6, rollout)
        batch = len(pairs)
        p = real(mods, local_store, **{"train.lead_hours": lead, "train.rollout_steps": rollout,
                                       "train.batch_size": batch, "data.block_size": 100})
        assert mods["preflight"].sample_problems(p, data, "params.yaml") == []
        p = real(mods, local_store, **{"train.lead_hours": lead, "train.rollout_steps": rollout,
                                       "train.batch_size": batch + 1, "data.block_size": 100})
        assert f"the {batch} training pairs" in mods["preflight"].sample_problems(p, data, "params.yaml")[0]
    for depth in (1, 2, 3):
        for nlon in (12, 16, 20):
            p = params_with(mods, {**params.model_dump(mode="json"), "model": {"name": "unet", "depth": depth}})
            grid = mods["preflight"].Data("s", [], [], [], np.array([]), (), 8, nlon)
            try:
                models.build_model(p.model, 3, 3, 8, nlon)
                built = True
            except models.ModelError:
                built = False
            assert (mods["preflight"].grid_problems(p, grid, "params.yaml") == []) is built, (depth, nlon)


def test_an_unreachable_url_fails_fast_in_one_line(mods, raw):
    """No network here: the source's endpoint is probed (name lookup included) before any remote read."""
    params = params_with(mods, raw, **{"data.source": "https://example.invalid/era5.zarr",
                                       "data.variables": ["geopotential"]})
    start = time.perf_counter()
    with pytest.raises(mods["errors"].DataError) as caught:
        mods["preflight"].check(params, "params.yaml")
    assert time.perf_counter() - start < 10
    message = str(caught.value)
    assert "\n" not in message and "cannot reach example.invalid:443" in message and "Fix:" in message


def test_a_silent_endpoint_times_out_within_the_limit(mods, monkeypatch):
    """A server that accepts the connection but never answers (a dropping firewall, a dead proxy) is given
    `timeout` seconds, not gcsfs's ~85."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        monkeypatch.setattr(mods["remote"], "endpoint", lambda url: ("127.0.0.1", port, True))
        start = time.perf_counter()
        with pytest.raises(mods["errors"].DataError, match=f"cannot reach 127.0.0.1:{port}"):
            mods["remote"].require_reachable("gs://bucket/era5.zarr", timeout=1.0)
        assert 0.9 < time.perf_counter() - start < 3


def test_endpoints_of_remote_schemes(mods, monkeypatch):
    for key in ("HTTPS_PROXY", "https_proxy", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(key, raising=False)
    endpoint = mods["remote"].endpoint
    assert endpoint("gs://weatherbench2/datasets/era5.zarr") == ("storage.googleapis.com", 443, True)
    assert endpoint("s3://bucket/x.zarr") == ("s3.amazonaws.com", 443, True)
    assert endpoint("http://host:8080/x.zarr") == ("host", 8080, False)
    assert endpoint("abfs://c@account.dfs.core.windows.net/x") == ("account.dfs.core.windows.net", 443, True)
    assert endpoint("/data/era5.zarr") is None and endpoint("memory://x") is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.local:9000")
    assert endpoint("s3://bucket/x.zarr") == ("minio.local", 9000, False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.site:3128")
    assert endpoint("gs://b/x.zarr") == ("proxy.site", 3128, False)
