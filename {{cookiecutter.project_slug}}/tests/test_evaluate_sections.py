"""The optional evaluations end to end on tiny shards: regions (with land/sea), spectra, significance, ensemble,
stations and bias maps are in metrics.json, scores/ and the report when enabled and absent when not, and their
numbers equal independent recomputations from the exported files (plain numpy) or the science modules applied to
those same arrays, never the evaluate code path that wrote them.
"""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from browser import check_rendered, render_in_chromium

HOUR = np.timedelta64(1, "h")
SECTIONS = ("regions", "spectra", "significance", "ensemble", "stations")
MEMBERS = 3
EARTH_RADIUS_M = 1000 * (6357 + 6378) / 2


@pytest.fixture(scope="module")
def mod(pkg_name):
    return lambda name: importlib.import_module(f"{pkg_name}.{name}")


def land_fraction(tiny) -> np.ndarray:
    """Land west of 180 E in the north, a partial coast elsewhere: every region has land and sea."""
    lon = tiny.LON[None, :]
    lat = tiny.LAT[:, None]
    return np.where(lon < 180, 1.0, 0.25) * np.where(lat > 0, 1.0, 0.5)


def enable_everything(files: dict, tmp_path: Path, tiny, mod) -> dict:
    """Every option on: land-sea mask, significance, a 3-member ensemble, stations of two variables."""
    import xarray as xr

    mask = tmp_path / "lsm.nc"
    xr.Dataset({"land_sea_mask": (("latitude", "longitude"), land_fraction(tiny))},
               coords={"latitude": tiny.LAT, "longitude": tiny.LON}).to_netcdf(mask)  # fmt: skip
    st = mod("stations")
    obs = st.stations_from_shards(files["shards"], ["2m_temperature", "geopotential_500"], "2001-01-06",
                                  "2001-01-20T18:00", 25, {"2m_temperature": 0.5}, 3)  # fmt: skip
    st.write_stations_csv(obs, tmp_path / "stations.csv")
    text = files["params"].read_text().replace("init_every_hours: 24", "init_every_hours: 12")
    text += (f"  land_sea_mask: {mask}\n"
             "  significance: {samples: 300, block_length: 0, confidence: 0.9}\n"
             f"  ensemble: {{members: {MEMBERS}, perturbation: 0.05}}\n"
             f"  stations: {{file: {tmp_path / 'stations.csv'}}}\n")  # fmt: skip
    files["params"].write_text(text)
    return {"mask": mask, "stations": tmp_path / "stations.csv"}


@pytest.fixture(scope="module")
def full_run(pkg_name, tiny, tiny_shards, mod, tmp_path_factory):
    """One evaluation with every option, its report, and the ensemble exported by `forecast --members`."""
    root = tmp_path_factory.mktemp("sections")
    files = tiny.build_project(pkg_name, root, tiny_shards)
    extra = enable_everything(files, root, tiny, mod)
    argv = tiny.argv(files)
    import os

    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert mod("evaluate").main([*argv, "--out", "results"]) == 0
        assert mod("report").main(["--results", "results"]) == 0
        inits = json.loads((root / "results" / "evaluation.json").read_text())["init_times"]
        fc = _open(root / "results" / "wb2" / "forecast.zarr")
        times = [str(t) for t in fc["time"].values]
        assert times[0].startswith(inits[0])
        assert mod("forecast").main(["--init", *times, "--steps", "4", *argv, "--out", "ens.zarr"]) == 0
    finally:
        os.chdir(cwd)
    return {"root": root, "out": root / "results", "files": files, **extra}


def _open(path: Path):
    import xarray as xr

    return xr.open_zarr(path).load()


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"a/b/c": leaf} of a nested metrics dict."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _cell_weights(latitude) -> np.ndarray:
    lat = np.deg2rad(latitude)
    bounds = np.concatenate([[-np.pi / 2], (lat[1:] + lat[:-1]) / 2, [np.pi / 2]])
    return np.diff(np.sin(bounds))


def _pairs(forecast, truth, var: str, lead: int, level=None):
    """(forecast, truth) float64 arrays (time, lat, lon) of one variable at one lead, aligned on valid time."""
    fc = forecast[var].sel(prediction_timedelta=np.timedelta64(lead, "h"))
    obs = truth[var].sel(time=fc["time"].values + np.timedelta64(lead, "h"))
    if level is not None:
        fc, obs = fc.sel(level=level), obs.sel(level=level)
    return fc.values.astype(np.float64), obs.values.astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------
# present when enabled, absent when not


def test_every_section_is_present_when_enabled(full_run):
    out = full_run["out"]
    metrics = _metrics(out)
    assert set(SECTIONS) <= set(metrics)
    assert sorted(p.name for p in (out / "scores").iterdir()) == [
        "ensemble.csv", "per_init.nc", "rank_histogram.csv", "regions.csv", "spectra.csv", "stations.csv"]  # fmt: skip
    regions = metrics["regions"]
    assert {"global", "global_land", "global_sea", "europe_land", "arctic_sea"} <= set(regions)
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["regions_skipped"] and "tropics" in evaluation["regions_skipped"]  # no row within 20 deg
    assert evaluation["ensemble_members"] == MEMBERS and evaluation["land_sea_mask"] == str(full_run["mask"])
    assert metrics["ensemble"]["members"] == MEMBERS
    assert metrics["stations"]["n_stations"] == 25
    assert metrics["stations"]["accuracy"]["geopotential_500"]["global"]["model"]["24h"] is None  # no threshold
    assert 0 <= metrics["stations"]["accuracy"]["2m_temperature"]["global"]["model"]["24h"] <= 1
    page = (out / "report.html").read_text()
    for section in ("regions", "spectra", "ensemble", "stations", "bias", "significance-legend"):
        assert f'id="{section}"' in page, section
    assert "tropics" in page  # the skipped regions are named
    assert "<script" not in page and "https://" not in page


def test_sections_are_absent_when_disabled(pkg_name, tiny, tiny_shards, mod, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, tiny_shards)
    files["params"].write_text(files["params"].read_text() + "  regions: []\n  spectra: {leads_hours: []}\n"
                               "  significance: {samples: 0}\n  map_leads_hours: []\n")  # fmt: skip
    assert mod("evaluate").main([*tiny.argv(files), "--out", "results"]) == 0
    assert mod("report").main(["--results", "results"]) == 0
    metrics = _metrics(tmp_path / "results")
    assert not set(SECTIONS) & set(metrics)
    assert [p.name for p in (tmp_path / "results" / "scores").iterdir()] == ["per_init.nc"]  # always written
    page = (tmp_path / "results" / "report.html").read_text()
    for section in ("regions", "spectra", "ensemble", "stations", "significance-legend"):
        assert f'id="{section}"' not in page, section
    assert 'title="model - reference' not in page  # no interval behind any scorecard cell


def test_turning_an_option_off_removes_its_files(pkg_name, tiny, tiny_shards, mod, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, tiny_shards)
    assert mod("evaluate").main([*tiny.argv(files), "--out", "results"]) == 0
    assert (tmp_path / "results" / "scores" / "spectra.csv").exists() and "spectra" in _metrics(tmp_path / "results")
    files["params"].write_text(files["params"].read_text() + "  spectra: {leads_hours: []}\n")
    assert mod("evaluate").main([*tiny.argv(files), "--out", "results"]) == 0
    assert not (tmp_path / "results" / "scores" / "spectra.csv").exists()
    assert "spectra" not in _metrics(tmp_path / "results")


def test_a_static_land_sea_mask_of_the_shards_gives_land_and_sea_regions(pkg_name, tiny, tiny_shards, mod, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    """Without evaluate.land_sea_mask, the shards' static land_sea_mask (data.static) is used: the same scores as
    the same fraction given as a file."""
    import shutil

    import xarray as xr

    monkeypatch.chdir(tmp_path)
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    mod("data.statics").store_static(shards / "static.zarr", ["land_sea_mask"], tiny.LAT, tiny.LON,
                                     land_fraction(tiny)[None])  # fmt: skip
    files = tiny.build_project(pkg_name, tmp_path, shards)
    quick = "  regions: [global, europe]\n  spectra: {leads_hours: []}\n  significance: {samples: 0}\n"
    files["params"].write_text(files["params"].read_text() + quick)
    assert mod("evaluate").main([*tiny.argv(files), "--out", "static"]) == 0
    xr.Dataset({"land_sea_mask": (("latitude", "longitude"), land_fraction(tiny))},
               coords={"latitude": tiny.LAT, "longitude": tiny.LON}).to_netcdf(tmp_path / "lsm.nc")  # fmt: skip
    files["params"].write_text(files["params"].read_text() + "  land_sea_mask: lsm.nc\n")
    assert mod("evaluate").main([*tiny.argv(files), "--out", "file"]) == 0
    from_static, from_file = _metrics(tmp_path / "static")["regions"], _metrics(tmp_path / "file")["regions"]
    assert list(from_static) == ["europe", "europe_land", "global", "global_land", "global_sea"]  # europe: no sea
    a, b = _flatten(from_static), _flatten(from_file)
    assert a.keys() == b.keys()
    assert {k for k, v in a.items() if v is None} == {k for k, v in b.items() if v is None}  # undefined ACC
    assert {k: v for k, v in a.items() if v is not None} == pytest.approx({k: v for k, v in b.items() if v is not None},
                                                                         rel=1e-6)  # fmt: skip
    source = json.loads((tmp_path / "static" / "evaluation.json").read_text())["land_sea_mask"]
    assert source.endswith("static.zarr (land_sea_mask)")


# ----------------------------------------------------------------------------------------------------------------
# the numbers, recomputed from the exported files


def test_regions_match_masks_recomputed_from_the_export(full_run, tiny, mod):
    fc, truth = _open(full_run["out"] / "wb2" / "forecast.zarr"), _open(full_run["out"] / "wb2" / "truth.zarr")
    regions = _metrics(full_run["out"])["regions"]
    lat, lon = fc["latitude"].values, fc["longitude"].values
    area = _cell_weights(lat)[:, None] * np.ones(len(lon))[None, :]
    land = land_fraction(tiny)
    europe = (lat[:, None] >= 35) & (lat[:, None] <= 75) & ((lon[None, :] >= 347.5) | (lon[None, :] <= 42.5))
    boxes = {
        "global": area,
        "northern-hemisphere": area * (lat[:, None] >= 20),
        "europe_land": area * europe * land,
        "southern-hemisphere_sea": area * (lat[:, None] <= -20) * (1 - land),
    }
    for name, w in boxes.items():
        for var, level, ch in (("geopotential", 500, "geopotential_500"), ("2m_temperature", None, "2m_temperature")):
            for lead in (6, 24):
                f, o = _pairs(fc, truth, var, lead, level)
                mse = ((f - o) ** 2 * w).sum(axis=(1, 2)) / w.sum()
                bias = ((f - o) * w).sum(axis=(1, 2)) / w.sum()
                got = regions[name]
                assert got["rmse"][ch]["model"][f"{lead}h"] == pytest.approx(np.sqrt(mse.mean()), rel=1e-5)
                assert got["bias"][ch]["model"][f"{lead}h"] == pytest.approx(bias.mean(), rel=1e-5, abs=1e-9)
    # the global region is the global headline
    metrics = _metrics(full_run["out"])
    for ch in ("geopotential_500", "2m_temperature"):
        for f in ("model", "persistence", "climatology"):
            headline = metrics["rmse"][ch][f]
            assert regions["global"]["rmse"][ch][f] == pytest.approx(headline, rel=1e-5), (ch, f)


def test_spectra_match_a_direct_dft_of_the_export(full_run):
    fc, truth = _open(full_run["out"] / "wb2" / "forecast.zarr"), _open(full_run["out"] / "wb2" / "truth.zarr")
    with (full_run["out"] / "scores" / "spectra.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["channel"] == "2m_temperature" and r["lead_hours"] == "24"]
    lat = fc["latitude"].values
    rows_in_band = (np.abs(lat) >= 20) & (np.abs(lat) <= 70)  # the tiny project's band
    f, o = _pairs(fc, truth, "2m_temperature", 24)
    nlon = f.shape[-1]

    def spectrum(x):  # WB2: |F_k|^2 with F = DFT / L, doubled for k > 0, times the circle's length
        x = x[:, rows_in_band, :]
        power = np.abs(np.fft.fft(x, axis=-1)[..., : nlon // 2 + 1] / nlon) ** 2
        power[..., 1:] *= 2
        circle = 2 * np.pi * EARTH_RADIUS_M * np.cos(np.deg2rad(lat[rows_in_band]))
        return (power * circle[None, :, None]).mean(axis=1).mean(axis=0)

    assert [int(r["wavenumber"]) for r in rows] == list(range(nlon // 2 + 1))
    np.testing.assert_allclose([float(r["forecast"]) for r in rows], spectrum(f), rtol=1e-5)
    np.testing.assert_allclose([float(r["truth"]) for r in rows], spectrum(o), rtol=1e-5)
    assert rows[0]["units"] == "m K2"
    assert float(rows[1]["wavelength_km"]) == pytest.approx(
        2 * np.pi * EARTH_RADIUS_M * np.cos(np.deg2rad(lat[rows_in_band])).mean() / 1000, rel=1e-5)  # fmt: skip


def test_significance_is_the_bootstrap_of_the_exported_errors(full_run, mod):
    fc, truth = _open(full_run["out"] / "wb2" / "forecast.zarr"), _open(full_run["out"] / "wb2" / "truth.zarr")
    section = _metrics(full_run["out"])["significance"]
    assert section["samples"] == 300 and section["confidence"] == 0.9
    w = _cell_weights(fc["latitude"].values)
    rounded = mod("results").rounded
    for lead in (6, 24):
        f, o = _pairs(fc, truth, "geopotential", lead, 500)
        x0 = fc["geopotential"].sel(prediction_timedelta=np.timedelta64(0, "h"), level=500).values.astype(np.float64)
        mse_model = ((f - o) ** 2).mean(axis=-1) @ w / w.sum()
        mse_pers = ((x0 - o) ** 2).mean(axis=-1) @ w / w.sum()
        iv = mod("significance").paired_bootstrap(mse_model, mse_pers, statistic="rmse", n_samples=300,
                                                  confidence=0.9, seed=0, lead_hours=lead, init_every_hours=12)
        got = section["rmse"]["geopotential_500"]["persistence"][f"{lead}h"]
        assert got["difference"] == pytest.approx(np.sqrt(mse_model.mean()) - np.sqrt(mse_pers.mean()), rel=1e-5)
        assert (got["low"], got["high"]) == pytest.approx((rounded(iv.low), rounded(iv.high)), rel=1e-5)
        assert got["significant"] == int((iv.low > 0) or (iv.high < 0)) and got["block_length"] == iv.block_length
    assert "climatology" not in section["acc"]["geopotential_500"]  # its ACC is undefined: no interval


def test_ensemble_scores_match_the_exported_members(full_run, mod):
    """`forecast --members` exports the members evaluate scored; fair CRPS, ensemble-mean RMSE, spread and ranks
    recomputed from that file with numpy equal metrics.json."""
    ens = _open(full_run["root"] / "ens.zarr")
    truth = _open(full_run["out"] / "wb2" / "truth.zarr")
    assert ens["2m_temperature"].dims == ("time", "number", "prediction_timedelta", "latitude", "longitude")
    assert ens["number"].attrs["standard_name"] == "realization" and ens.sizes["number"] == MEMBERS
    section = _metrics(full_run["out"])["ensemble"]
    w = _cell_weights(ens["latitude"].values)
    w = w / w.mean()
    for lead in (6, 24):
        x = ens["2m_temperature"].sel(prediction_timedelta=np.timedelta64(lead, "h")).values.astype(np.float64)
        x = np.moveaxis(x, 1, 0)  # (member, time, lat, lon)
        y = truth["2m_temperature"].sel(time=ens["time"].values + np.timedelta64(lead, "h")).values.astype(np.float64)
        pairs = np.abs(x[:, None] - x[None, :]).sum(axis=(0, 1))
        crps = np.abs(x - y).mean(axis=0) - pairs / (2 * MEMBERS * (MEMBERS - 1))
        space = lambda field: (field.mean(axis=-1) * w).mean(axis=-1)  # noqa: E731 - WB2's spatial mean
        key = f"{lead}h"
        close = lambda value: pytest.approx(value, rel=1e-5)  # noqa: E731 - metrics.json keeps 6 digits
        assert section["crps"]["2m_temperature"][key] == close(space(crps).mean())
        assert section["crps"]["2m_temperature"][key] == close(
            space(mod("ensemble").crps_pointwise(x, y, fair=True)).mean())  # the science module, same arrays
        assert section["ensemble_mean_rmse"]["2m_temperature"][key] == close(
            np.sqrt(space((x.mean(axis=0) - y) ** 2).mean()))  # fmt: skip
        assert section["spread"]["2m_temperature"][key] == close(np.sqrt(space(x.var(axis=0, ddof=1)).mean()))
        ranks = (x < y).sum(axis=0)
        hist = [space((ranks == r).astype(float)).mean() for r in range(MEMBERS + 1)]
        assert list(section["rank_histogram"]["2m_temperature"][key].values()) == [close(h) for h in hist]
    # lead 0 holds each member's perturbed initial state, not the analysis
    lead0 = ens["2m_temperature"].isel(prediction_timedelta=0).values
    assert not np.array_equal(lead0[:, 0], lead0[:, 1])


def _bilinear(field: np.ndarray, lat, lon, slat: float, slon: float) -> np.ndarray:
    """Independent bilinear interpolation of field (time, lat, lon): along longitude (periodic) in each row, then
    along latitude (np.interp holds the outermost rows' values beyond them)."""
    out = []
    for grid in field:
        along = np.array([np.interp(slon % 360, lon, row, period=360) for row in grid])
        out.append(np.interp(slat, lat, along))
    return np.array(out)


def test_station_scores_match_an_independent_interpolation_of_the_export(full_run, mod):
    fc = _open(full_run["out"] / "wb2" / "forecast.zarr")
    obs = mod("stations").read_stations(full_run["stations"])
    section = _metrics(full_run["out"])["stations"]
    lat, lon = fc["latitude"].values, fc["longitude"].values
    rounded = mod("results").rounded
    for lead in (6, 24):
        f = fc["2m_temperature"].sel(prediction_timedelta=np.timedelta64(lead, "h")).values.astype(np.float64)
        valid = fc["time"].values + np.timedelta64(lead, "h")
        errors = []
        for s in range(len(obs.ids)):
            at_station = _bilinear(f, lat, lon, obs.latitude[s], obs.longitude[s])
            errors.append(at_station - obs.at("2m_temperature", valid)[:, s])
        e = np.concatenate(errors)
        e = e[np.isfinite(e)]
        got = {k: section[k]["2m_temperature"]["global"]["model"][f"{lead}h"] for k in ("rmse", "mae", "accuracy")}
        assert got["rmse"] == pytest.approx(rounded(np.sqrt(np.mean(e**2))), rel=1e-5)
        assert got["mae"] == pytest.approx(rounded(np.mean(np.abs(e))), rel=1e-5)
        assert got["accuracy"] == rounded(np.mean(np.abs(e) < 1.7))
        assert section["count"]["2m_temperature"]["global"]["model"][f"{lead}h"] == e.size


def test_bias_maps_are_drawn_for_the_map_channels(full_run):
    evaluation = json.loads((full_run["out"] / "evaluation.json").read_text())
    assert [m["channel"] for m in evaluation["bias_maps"]] == ["geopotential_500", "2m_temperature"]
    for entry in evaluation["bias_maps"]:
        assert (full_run["out"] / entry["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------------------------
# bad options name the key and the fix, before anything is written


@pytest.mark.parametrize(
    ("append", "expected"),
    [
        ("  stations: {file: missing.csv}\n", r"missing.csv: station file not found"),
        ("  stations: {file: STATIONS, variables: [10m_wind_speed]}\n", r"evaluate.stations.variables.*Fix"),
        ("  spectra: {band: [80, 89]}\n", r"evaluate.spectra.*band.*Fix"),
        ("  land_sea_mask: nowhere.nc\n", r"nowhere.nc: land-sea mask file not found"),
        ("  ensemble: {members: 2, perturbation: 0.1, checkpoints: [other.pt]}\n", r"other.pt not found"),
    ],
)
def test_bad_options_fail_before_anything_is_written(pkg_name, tiny, tiny_shards, mod, tmp_path, monkeypatch,
                                                     append, expected):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, tiny_shards)
    obs = mod("stations").stations_from_shards(tiny_shards, ["2m_temperature"], "2001-01-06", "2001-01-20", 5, {}, 0)
    mod("stations").write_stations_csv(obs, tmp_path / "stations.csv")
    files["params"].write_text(files["params"].read_text() + append.replace("STATIONS", str(tmp_path / "stations.csv")))
    with pytest.raises(ValueError, match=expected):
        mod("evaluate").main([*tiny.argv(files), "--out", "results"])
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------------------------------------------
# the report in a real browser

BROWSER_SECTIONS = ["scorecard", "bias", "regions", "spectra", "ensemble", "stations"]


def test_report_shows_every_section_in_headless_chromium(full_run, tmp_path, capsys):
    """Screenshots of the whole page and of each section ($FORGE_ARTIFACTS/report_sections*.png)."""
    state, png, errors = render_in_chromium(full_run["out"] / "report.html", BROWSER_SECTIONS, tmp_path,
                                            "report_sections.png", clips=tuple(BROWSER_SECTIONS))  # fmt: skip
    with capsys.disabled():
        print(f"\n[report screenshots] {png} and {png.stem}_<section>.png beside it")
    assert errors == [], f"console errors in the report: {errors}"
    check_rendered(state, png, BROWSER_SECTIONS)
    text = {sid: state["sections"][sid]["text"] for sid in BROWSER_SECTIONS}
    images = {sid: state["sections"][sid]["images_ok"] for sid in BROWSER_SECTIONS}
    assert "significant (*): " in text["scorecard"] and "excludes zero" in text["scorecard"]
    assert "europe_land" in text["regions"] and "global_sea" in text["regions"] and "tropics" in text["regions"]
    assert images == {"scorecard": 0, "bias": 2, "regions": 0, "spectra": 2, "ensemble": 4, "stations": 2}
    assert f"{MEMBERS} members" in text["ensemble"] and "spread-skill" in text["ensemble"]
    assert "25 stations" in text["stations"] and "2m_temperature" in text["stations"]
    for sid in BROWSER_SECTIONS:
        assert (png.parent / f"{png.stem}_{sid}.png").stat().st_size > 1000, sid
