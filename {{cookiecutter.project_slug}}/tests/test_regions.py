"""WB2 regions: the boxes select the points WB2's slices select, and regional scores match brute-force means."""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import yaml

# WeatherBench2 scripts/evaluate.py (commit 021c0b33) predefined_regions, written as its label slices
# (inclusive, None = open), independently of regions.py's (west, east) representation.
WB2_SLICES = {
    "global": ([(None, None)], [(None, None)]),
    "tropics": ([(-20, 20)], [(None, None)]),
    "extra-tropics": ([(None, -20), (20, None)], [(None, None)]),
    "northern-hemisphere": ([(20, None)], [(None, None)]),
    "southern-hemisphere": ([(None, -20)], [(None, None)]),
    "europe": ([(35, 75)], [(360 - 12.5, None), (0, 42.5)]),
    "north-america": ([(25, 60)], [(360 - 120, 360 - 75)]),
    "north-atlantic": ([(25, 65)], [(360 - 70, 360 - 10)]),
    "north-pacific": ([(25, 60)], [(145, 360 - 130)]),
    "east-asia": ([(25, 60)], [(102.5, 150)]),
    "ausnz": ([(-45, -12.5)], [(120, 175)]),
    "arctic": ([(60, 90)], [(None, None)]),
    "antarctic": ([(-90, -60)], [(None, None)]),
}


def in_slices(x: np.ndarray, slices) -> np.ndarray:
    out = np.zeros(x.shape, dtype=bool)
    for lo, hi in slices:
        out |= (x >= (-np.inf if lo is None else lo)) & (x <= (np.inf if hi is None else hi))
    return out


@pytest.fixture(scope="module")
def R(pkg_name):
    return importlib.import_module(f"{pkg_name}.regions")


@pytest.fixture(scope="module")
def M(pkg_name):
    return importlib.import_module(f"{pkg_name}.metrics")


# a 2.5 degree grid with poles: every box bound (20, 12.5, 347.5, 42.5, ...) is a grid line, exactly
LAT = np.arange(73) * 2.5 - 90
LON = np.arange(144) * 2.5


def test_the_region_set_is_wb2s(R):
    assert list(R.WB2_REGIONS) == list(WB2_SLICES)


@pytest.mark.parametrize("name", list(WB2_SLICES))
def test_boxes_select_the_points_of_wb2_slices(R, name):
    lat_slices, lon_slices = WB2_SLICES[name]
    want = in_slices(LAT, lat_slices)[:, None] & in_slices(LON, lon_slices)[None, :]
    w = R.region_weights([name], LAT, LON)
    np.testing.assert_array_equal(w.dense(0) > 0, want)


def test_box_crossing_longitude_zero(R):
    europe = R.region("europe")
    lon = np.array([340.0, 347.5, 350.0, 359.9, 0.0, 20.0, 42.5, 45.0])
    np.testing.assert_array_equal(europe.contains(np.full(lon.shape, 50.0), lon), [0, 1, 1, 1, 1, 1, 1, 0])
    # the same points on a grid written in [-180, 180)
    lon180 = np.where(LON >= 180, LON - 360, LON)
    a = R.region_weights(["europe"], LAT, LON).dense(0)
    b = R.region_weights(["europe"], LAT, lon180).dense(0)
    np.testing.assert_array_equal(a, b)
    assert (a > 0).sum() == 17 * 23  # 35..75 N every 2.5 deg: 17 rows; 347.5..357.5 (5) + 0..42.5 (18) columns


def test_bounds_are_inclusive_like_wb2(R):
    row20 = np.where(LAT == 20)[0][0]
    for name in ("tropics", "extra-tropics", "northern-hemisphere"):
        assert R.region_weights([name], LAT, LON).lat[0, row20] > 0, name


def test_regional_mean_matches_brute_force(R, M):
    rng = np.random.default_rng(0)
    field = rng.normal(size=(3, 2, len(LAT), len(LON)))
    names = list(WB2_SLICES)
    w = R.region_weights(names, LAT, LON)
    got = R.regional_mean(field, w)
    area = M.cell_area_weights(LAT)[:, None]
    for r, name in enumerate(names):
        lat_s, lon_s = WB2_SLICES[name]
        wr = area * (in_slices(LAT, lat_s)[:, None] & in_slices(LON, lon_s)[None, :])
        want = (field * wr).sum(axis=(-2, -1)) / wr.sum()
        np.testing.assert_allclose(got[..., r], want, rtol=1e-12, err_msg=name)


def test_global_region_equals_the_global_metrics(R, M):
    rng = np.random.default_rng(1)
    truth, fc, clim = (rng.normal(size=(4, 3, 32, 64)) for _ in range(3))
    lat = -90 + (np.arange(32) + 0.5) * 180 / 32
    lon = np.arange(64) * 360 / 64
    w = R.region_weights(["global", "tropics"], lat, lon)
    per = R.regional_scores_per_step(fc, truth, w, clim)
    wl = M.cell_area_weights(lat)
    np.testing.assert_allclose(per["mse"][..., 0], M.mse_per_step(fc, truth, wl), rtol=1e-12)
    np.testing.assert_allclose(per["bias"][..., 0], M.bias_per_step(fc, truth, wl), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(per["acc"][..., 0], M.acc_per_step(fc, truth, clim, wl), rtol=1e-12)


def test_perfect_forecast_and_constant_bias_in_every_region(R, M):
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(5, 2, len(LAT), len(LON)))
    w = R.region_weights(list(WB2_SLICES), LAT, LON)
    perfect = R.regional_scores_per_step(truth, truth, w)
    assert np.all(perfect["mse"] == 0) and np.all(perfect["bias"] == 0)
    biased = R.regional_scores_per_step(truth - 0.7, truth, w)
    np.testing.assert_allclose(M.rmse(biased["mse"]), 0.7, rtol=1e-12)
    np.testing.assert_allclose(M.time_mean(biased["bias"]), -0.7, rtol=1e-12)


def test_land_and_sea_weight_by_land_fraction(R, M):
    rng = np.random.default_rng(3)
    land = np.clip(rng.uniform(-0.5, 1.5, size=(len(LAT), len(LON))), 0, 1)  # many 0 and 1, some fractions
    field = rng.normal(size=(2, len(LAT), len(LON)))
    names = ["europe", "europe_land", "europe_sea", "global_land"]
    w = R.region_weights(names, LAT, LON, land_sea_mask=land)
    got = R.regional_mean(field, w)
    box = in_slices(LAT, [(35, 75)])[:, None] & in_slices(LON, [(347.5, None), (0, 42.5)])[None, :]
    area = M.cell_area_weights(LAT)[:, None]
    for r, weight in enumerate([area * box, area * box * land, area * box * (1 - land), area * land]):
        np.testing.assert_allclose(got[..., r], (field * weight).sum(axis=(-2, -1)) / weight.sum(), rtol=1e-12)
    # land and sea partition the box: their weighted means combine to the box mean
    np.testing.assert_allclose(
        (got[..., 1] * w.total[1] + got[..., 2] * w.total[2]) / w.total[0], got[..., 0], rtol=1e-12
    )


def test_region_without_grid_points_is_refused(R):
    with pytest.raises(R.EvaluationError, match="'arctic' contains no grid point.*evaluate.regions"):
        R.region_weights(["arctic"], np.array([-45.0, -15.0, 15.0, 45.0]), np.arange(8) * 45.0)


def test_unknown_region_names_the_closest(R, pkg_name):
    ParamsError = importlib.import_module(f"{pkg_name}.errors").ParamsError  # noqa: N806
    with pytest.raises(ParamsError, match="unknown region 'europa'. Did you mean 'europe'"):
        R.check_names(["europa"], has_land_sea_mask=False)
    with pytest.raises(ParamsError, match="needs a land-sea mask"):
        R.region_weights(["tropics_land"], LAT, LON)


def test_land_sea_mask_file_is_reordered_to_the_grid(R, tmp_path):
    import xarray as xr

    land = (np.arange(len(LAT) * len(LON)).reshape(len(LAT), len(LON)) % 7) / 6.0
    lon180 = np.where(LON >= 180, LON - 360, LON)
    order = np.argsort(lon180)
    ds = xr.Dataset(
        {"land_sea_mask": (("latitude", "longitude"), land[::-1][:, order])},
        coords={"latitude": LAT[::-1], "longitude": lon180[order]},
    )
    ds.to_netcdf(tmp_path / "lsm.nc")
    np.testing.assert_array_equal(R.load_land_sea_mask(tmp_path / "lsm.nc", LAT, LON), land)
    ds.rename({"land_sea_mask": "lsm"}).to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(R.EvaluationError, match="no variable 'land_sea_mask'.*'lsm'"):
        R.load_land_sea_mask(tmp_path / "bad.nc", LAT, LON)
    with pytest.raises(R.EvaluationError, match=r"land fraction in \[0, 1\]"):
        R.check_land_sea_mask(land * 2, LAT, LON)


@pytest.fixture(scope="module")
def raw(project_root):
    return yaml.safe_load((project_root / "params.yaml").read_text())


def test_params_list_every_wb2_region_by_default(pkg_name, raw, R):
    config = importlib.import_module(f"{pkg_name}.config")
    assert raw["evaluate"]["regions"] == list(R.WB2_REGIONS)
    assert config.EvaluateConfig().regions == list(R.WB2_REGIONS)


@pytest.mark.parametrize(
    "edit,expected",
    [
        ({"regions": ["global", "europa"]}, "unknown region 'europa'. Did you mean 'europe'"),
        ({"regions": ["global_land"]}, "needs a land-sea mask"),
        ({"spectra": {"band": [60, 30]}}, "evaluate.spectra.band"),
        ({"ensemble": {"members": 5}}, "evaluate.ensemble.perturbation"),
        ({"significance": {"confidence": 1.5}}, "evaluate.significance.confidence"),
    ],
)
def test_bad_evaluate_params_name_the_key(pkg_name, raw, edit, expected):
    config = importlib.import_module(f"{pkg_name}.config")
    bad = copy.deepcopy(raw)
    bad["evaluate"].update(edit)
    with pytest.raises(config.ParamsError, match=expected):
        config.validate_params(bad)
    good = copy.deepcopy(raw)
    good["evaluate"].update({"land_sea_mask": "lsm.nc", "regions": ["global_land", "europe_sea"]})
    config.validate_params(good)
