"""Stations: bilinear interpolation of analytic fields (periodic longitude), WeatherReal-style scores, the file
formats and their errors, and the synthetic station set."""

from __future__ import annotations

import importlib

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ST(pkg_name):
    return importlib.import_module(f"{pkg_name}.stations")


@pytest.fixture(scope="module")
def SC(pkg_name):
    return importlib.import_module(f"{pkg_name}.station_scores")


def grid(nlat: int, nlon: int):
    return -90 + (np.arange(nlat) + 0.5) * 180 / nlat, np.arange(nlon) * 360 / nlon


def smooth(lat, lon):
    """cos(lat) cos(2 lon) + 0.5 sin(lat): second derivatives per radian^2 at most 4 (lon) and 1.5 (lat)."""
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    return np.cos(la) * np.cos(2 * lo) + 0.5 * np.sin(la)


def test_bilinear_recovers_a_smooth_field_to_interpolation_error(SC):
    rng = np.random.default_rng(0)
    st_lat, st_lon = rng.uniform(-80, 80, 500), rng.uniform(-180, 360, 500)  # both longitude conventions
    errors = []
    for nlat, nlon in ((32, 64), (64, 128)):
        lat, lon = grid(nlat, nlon)
        field = smooth(lat[:, None], lon[None, :])
        got = SC.bilinear(lat, lon, st_lat, st_lon)(field)
        err = np.abs(got - smooth(st_lat, st_lon))
        dlat, dlon = np.deg2rad(180 / nlat), np.deg2rad(360 / nlon)
        assert err.max() <= (dlat**2 * 1.5 + dlon**2 * 4) / 8  # the bilinear error bound
        errors.append(err.max())
    assert 3.0 < errors[0] / errors[1] < 5.0  # second order: halving the spacing quarters the error


def test_bilinear_is_exact_for_bilinear_fields_and_wraps_in_longitude(SC):
    lat, lon = grid(16, 32)  # longitudes 0 .. 348.75 every 11.25
    f_lat = np.broadcast_to(3.0 + 0.2 * lat[:, None], (16, 32))
    st_lat = np.array([-60.3, 0.0, 33.3, 70.1])
    interp = SC.bilinear(lat, lon, st_lat, np.array([10.0, 200.0, 355.0, -3.0]))
    np.testing.assert_allclose(interp(f_lat), 3.0 + 0.2 * st_lat, rtol=1e-12)
    f_lon = np.broadcast_to(lon[None, :], (16, 32)).copy()
    inside = SC.bilinear(lat, lon, st_lat, np.array([10.0, 100.5, 200.0, 340.0]))
    np.testing.assert_allclose(inside(f_lon), [10.0, 100.5, 200.0, 340.0], rtol=1e-12)
    # 355 E (= -5) lies between the last column (348.75) and the first (0 = 360): weights 6.25/11.25, 5/11.25
    f = np.zeros((16, 32))
    f[:, -1], f[:, 0] = 1.0, 2.0
    wrapped = SC.bilinear(lat, lon, np.array([10.0, 10.0]), np.array([355.0, -5.0]))(f)
    np.testing.assert_allclose(wrapped, 1.0 * 5 / 11.25 + 2.0 * 6.25 / 11.25, rtol=1e-12)


def test_stations_poleward_of_the_grid_take_the_outermost_row(SC):
    lat, lon = grid(8, 16)  # outermost rows at +-78.75
    field = np.random.default_rng(1).normal(size=(8, 16))
    got = SC.bilinear(lat, lon, np.array([89.0, -90.0]), np.array([lon[3], lon[5]]))(field)
    np.testing.assert_allclose(got, [field[-1, 3], field[0, 5]])


def test_bilinear_refuses_a_regional_grid(SC):
    with pytest.raises(ValueError, match="round the globe"):
        SC.bilinear(np.array([0.0, 1.0]), np.array([0.0, 1.0, 2.0]), np.array([0.5]), np.array([0.5]))


def make_stations(ST, n_times=6):
    ids = np.array(["A", "B", "C", "D"])
    lat = np.array([50.0, 52.0, -30.0, 10.0])  # A, B in Europe; C in AusNZ; D in the tropics
    lon = np.array([5.0, -5.0, 150.0, 200.0])
    times = np.datetime64("2001-02-01T00", "ns") + np.arange(n_times) * np.timedelta64(6, "h")
    rng = np.random.default_rng(2)
    values = {
        "2m_temperature": 280 + rng.normal(size=(n_times, 4)),
        "10m_wind_speed": 5 + rng.normal(size=(n_times, 4)),
    }
    values["2m_temperature"][1, 2] = np.nan  # a missing observation
    return ST.Stations(ids, lat, lon, np.array([10.0, 20.0, 30.0, 40.0]), times, values)


@pytest.mark.parametrize("error,accurate", [(0.0, 1.0), (1.0, 1.0), (-1.6, 1.0), (1.8, 0.0)])
def test_scores_of_a_constant_error(ST, SC, error, accurate):
    stations = make_stations(ST)
    scores = SC.StationScores(stations, ["2m_temperature"], [24], ["global", "europe", "ausnz"])
    obs = stations.values["2m_temperature"]
    scores.add(24, "2m_temperature", stations.times[:3], obs[:3] + error)
    scores.add(24, "2m_temperature", stations.times[3:], obs[3:] + error)
    out = scores.result()
    np.testing.assert_allclose(out["rmse"][0, 0], abs(error), atol=1e-9)
    np.testing.assert_allclose(out["mae"][0, 0], abs(error), atol=1e-9)
    np.testing.assert_allclose(out["bias"][0, 0], error, atol=1e-9)
    np.testing.assert_array_equal(out["accuracy"][0, 0], accurate)  # |error| < 1.7 K
    np.testing.assert_array_equal(out["count"][0, 0], [6 * 4 - 1, 6 * 2, 6 - 1])  # the NaN is left out


def test_scores_match_numpy_by_lead_variable_and_region(ST, SC):
    stations = make_stations(ST)
    rng = np.random.default_rng(3)
    fc = {v: o + rng.normal(scale=1.2, size=o.shape) for v, o in stations.values.items()}
    scores = SC.StationScores(stations, ["2m_temperature", "10m_wind_speed"], [6, 12], ["global", "europe"])
    for v in fc:
        scores.add(12, v, stations.times, fc[v])
    out = scores.result()
    europe = np.array([True, True, False, False])
    for vi, v in enumerate(["2m_temperature", "10m_wind_speed"]):
        for ri, inside in enumerate([np.ones(4, bool), europe]):
            e = (fc[v] - stations.values[v])[:, inside]
            e = e[np.isfinite(e)]
            np.testing.assert_allclose(out["rmse"][1, vi, ri], np.sqrt(np.mean(e**2)), rtol=1e-12)
            np.testing.assert_allclose(out["mae"][1, vi, ri], np.mean(np.abs(e)), rtol=1e-12)
            threshold = {"2m_temperature": 1.7, "10m_wind_speed": 1.0}[v]
            np.testing.assert_allclose(out["accuracy"][1, vi, ri], np.mean(np.abs(e) < threshold), rtol=1e-12)
    assert np.all(np.isnan(out["rmse"][0])) and np.all(out["count"][0] == 0)  # lead 6 received nothing


def test_thresholds_table(SC):
    assert SC.threshold_for("2m_temperature") == 1.7
    assert SC.threshold_for("temperature_850") == 1.7
    assert SC.threshold_for("10m_wind_speed") == 1.0
    assert SC.threshold_for("geopotential_500") is None


def test_csv_and_netcdf_round_trip(ST, tmp_path):
    import xarray as xr

    stations = make_stations(ST)
    ST.write_stations_csv(stations, tmp_path / "obs.csv")
    back = ST.read_stations(tmp_path / "obs.csv")
    ds = xr.Dataset(
        {v: (("station", "time"), stations.values[v].T) for v in stations.values},
        coords={"station": stations.ids, "lat": ("station", stations.latitude), "lon": ("station", stations.longitude),
                "elevation": ("station", stations.elevation), "time": stations.times},
    )  # fmt: skip
    ds.to_netcdf(tmp_path / "obs.nc")
    for got in (back, ST.read_stations(tmp_path / "obs.nc")):
        np.testing.assert_array_equal(got.ids, stations.ids)
        np.testing.assert_allclose(got.latitude, stations.latitude)
        np.testing.assert_allclose(got.longitude, stations.longitude)
        np.testing.assert_allclose(got.elevation, stations.elevation)
        np.testing.assert_array_equal(got.times, stations.times)
        for v in stations.values:
            np.testing.assert_allclose(got.values[v], stations.values[v], rtol=1e-8)  # the CSV keeps 9 digits
    picked = back.at("10m_wind_speed", stations.times[[4, 1]])
    np.testing.assert_allclose(picked, stations.values["10m_wind_speed"][[4, 1]], rtol=1e-8)
    assert np.all(np.isnan(back.at("10m_wind_speed", np.array(["2030-01-01"], dtype="datetime64[ns]"))))


@pytest.mark.parametrize(
    "text,expected",
    [
        ("id,lattitude,lon,time,t2m\nA,1,2,2001-01-01,3\n", "no latitude column.*Did you mean 'lattitude'"),
        ("id,lat,lon,time,t2m\nA,1,2,2001-01-01,3\nA,1,2,2001-01-01,4\n", "station 'A' has two rows"),
        ("id,lat,lon,time,t2m\nA,1,2,2001-01-01,3\nA,1.5,2,2001-01-02,4\n", "station 'A' changes latitude"),
        ("id,lat,lon,time,t2m\nA,1,2,2001-01-01,warm\n", "column 't2m' is not numeric"),
        ("id,lat,lon,time,t2m\nA,95,2,2001-01-01,3\n", "station 'A' has latitude 95"),
        ("id,lat,lon,time,t2m\nA,5,2,yesterday,3\n", "column 'time' has a value that is not a time"),
        ("id,lat,lon,time\nA,5,2,2001-01-01\n", "no variable columns"),
    ],
)
def test_bad_station_files_name_file_column_and_fix(ST, tmp_path, text, expected):
    path = tmp_path / "obs.csv"
    path.write_text(text)
    with pytest.raises(ST.DataError, match=expected):
        ST.read_stations(path)


def test_synthetic_stations_sample_the_truth(ST, SC):
    lat, lon = grid(32, 64)
    times = np.datetime64("2001-02-01", "ns") + np.arange(3) * np.timedelta64(6, "h")
    fields = np.stack([smooth(lat[:, None], lon[None, :]) * (1 + t) for t in range(3)])[:, None]
    clean = ST.synthetic_stations(fields, times, lat, lon, ["x"], n_stations=4000, seed=1)
    np.testing.assert_allclose(clean.values["x"], SC.bilinear(lat, lon, clean.latitude, clean.longitude)(fields[:, 0]))
    assert np.mean(np.abs(clean.latitude) < 30) == pytest.approx(0.5, abs=0.03)  # uniform on the sphere: sin 30 = 1/2
    noisy = ST.synthetic_stations(fields, times, lat, lon, ["x"], n_stations=4000, noise_std={"x": 0.3}, seed=1)
    assert np.std(noisy.values["x"] - clean.values["x"]) == pytest.approx(0.3, rel=0.03)


def test_builder_cli_writes_a_station_csv_from_shards(ST, SC, tmp_path):
    import xarray as xr

    lat, lon = grid(8, 16)
    times = np.datetime64("2001-02-01", "ns") + np.arange(8) * np.timedelta64(6, "h")
    data = np.random.default_rng(4).normal(size=(8, 2, 8, 16)).astype(np.float32) + 280
    for i, part in enumerate((slice(0, 5), slice(5, 8))):
        xr.Dataset(
            {"data": (("time", "channel", "latitude", "longitude"), data[part])},
            coords={"time": times[part], "channel": np.array(["2m_temperature", "geopotential_500"], dtype=object),
                    "latitude": lat, "longitude": lon},
        ).to_zarr(tmp_path / f"block_{i:04d}.zarr", mode="w", consolidated=False)  # fmt: skip
    out = tmp_path / "stations.csv"
    argv = ["--shards", str(tmp_path), "--out", str(out), "--n", "7"]
    argv += ["--start", "2001-02-01T06", "--end", "2001-02-02T12"]
    assert ST.main(argv) == 0
    got = ST.read_stations(out)
    assert len(got.ids) == 7 and len(got.times) == 6 and list(got.values) == ["2m_temperature"]
    want = SC.bilinear(lat, lon, got.latitude, got.longitude)(data[1:7, 0])
    np.testing.assert_allclose(got.values["2m_temperature"], want, rtol=1e-6)
    with pytest.raises(ST.DataError, match="no channel"):
        ST.main([*argv, "--variables", "10m_wind_speed"])
