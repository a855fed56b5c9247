"""Names and layouts at the door (issue 12): ERA5 as the Copernicus CDS (2024 netCDF) and NCAR's RDA ds633.0 ship it
gives WeatherBench2-named channels and shards bit-identical to a WeatherBench2-layout zarr of the same values."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import PACKAGE

names = importlib.import_module(f"{PACKAGE}.data.names")
source = importlib.import_module(f"{PACKAGE}.data.source")
shard = importlib.import_module(f"{PACKAGE}.data.shard")
statics = importlib.import_module(f"{PACKAGE}.data.statics")
config = importlib.import_module(f"{PACKAGE}.config")
DataError = importlib.import_module(f"{PACKAGE}.errors").DataError

START = np.datetime64("2000-01-01T00:00", "ns")
STEP = np.timedelta64(6, "h")
NT, NLAT, NLON = 12, 9, 16
LEVELS = [500, 700, 850]
VARIABLES = ["geopotential", "temperature", "2m_temperature", "10m_u_component_of_wind", "mean_sea_level_pressure"]
STATIC = ["land_sea_mask", "geopotential_at_surface"]


def physical() -> dict[str, np.ndarray]:
    """The values every layout below stores: WB2 order (time, [level ascending], lat ascending, lon)."""
    rng = np.random.default_rng(3)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"geopotential": 5e4 + 1e3 * f(NT, 3, NLAT, NLON), "temperature": 260 + 5 * f(NT, 3, NLAT, NLON),
            "2m_temperature": 280 + 5 * f(NT, NLAT, NLON), "10m_u_component_of_wind": 5 * f(NT, NLAT, NLON),
            "mean_sea_level_pressure": 1e5 + 500 * f(NT, NLAT, NLON),
            "land_sea_mask": (rng.random((NLAT, NLON)) > 0.6).astype(np.float32),
            "geopotential_at_surface": np.abs(2e3 * f(NLAT, NLON))}


LAT = np.linspace(-90.0, 90.0, NLAT)
LON = np.arange(NLON) * 360.0 / NLON
TIMES = START + np.arange(NT) * STEP


def wb2_zarr(values: dict, path: Path) -> str:
    def dims(a):
        return {4: ("time", "level", "latitude", "longitude"), 3: ("time", "latitude", "longitude"),
                2: ("latitude", "longitude")}[a.ndim]

    ds = xr.Dataset({k: (dims(v), v) for k, v in values.items()},
                    coords={"time": TIMES, "level": LEVELS, "latitude": LAT, "longitude": LON})
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    return str(path)


def cds_netcdf(values: dict, folder: Path) -> list[str]:
    """CDS 2024: valid_time, pressure_level (descending, hPa, float), latitude 90 -> -90, short names, `number` and
    `expver` coordinates, invariants repeated in time; pressure levels and single levels in two files."""
    folder.mkdir()
    flip = lambda a: a[..., ::-1, :]  # noqa: E731  (latitude descending)
    coords = {"valid_time": TIMES, "latitude": LAT[::-1], "longitude": LON, "number": 0,
              "expver": ("valid_time", np.array(["0001"] * NT, dtype=object))}
    pl_dims = ("valid_time", "pressure_level", "latitude", "longitude")
    pl = xr.Dataset({"z": (pl_dims, flip(values["geopotential"][:, ::-1])),
                     "t": (pl_dims, flip(values["temperature"][:, ::-1]))},
                    coords={**coords, "pressure_level": ("pressure_level", [850.0, 700.0, 500.0], {"units": "hPa"})})
    sl_dims = ("valid_time", "latitude", "longitude")
    repeat = lambda a: np.repeat(flip(a)[None], NT, axis=0)  # noqa: E731
    sl = xr.Dataset({"t2m": (sl_dims, flip(values["2m_temperature"])),
                     "u10": (sl_dims, flip(values["10m_u_component_of_wind"])),
                     "msl": (sl_dims, flip(values["mean_sea_level_pressure"])),
                     "lsm": (sl_dims, repeat(values["land_sea_mask"])),
                     "z": (sl_dims, repeat(values["geopotential_at_surface"]))}, coords=coords)
    enc = {"zlib": True, "complevel": 1}
    pl.to_netcdf(folder / "data_stream-oper_pressure-levels.nc", engine="h5netcdf", encoding={v: enc for v in pl})
    sl.to_netcdf(folder / "data_stream-oper_stepType-instant.nc", engine="h5netcdf", encoding={v: enc for v in sl})
    return [str(folder / "data_stream-oper_pressure-levels.nc"), str(folder / "data_stream-oper_stepType-instant.nc")]


RDA_PL = {"geopotential": ("128_129_z", "Z"), "temperature": ("128_130_t", "T")}
RDA_SFC = {"2m_temperature": ("128_167_2t", "VAR_2T"), "10m_u_component_of_wind": ("128_165_10u", "VAR_10U"),
           "mean_sea_level_pressure": ("128_151_msl", "MSL")}
RDA_INV = {"land_sea_mask": ("128_172_lsm", "LSM"), "geopotential_at_surface": ("128_129_z", "Z")}


def rda_files(values: dict, folder: Path) -> tuple[list[str], str]:
    """NCAR RDA ds633.0: one variable per file, upper-case names, daily pressure-level files, a monthly file per
    surface variable, invariants at 1979-01-01; time/level/latitude (90 -> -90)/longitude and a `utc_date` variable."""
    folder.mkdir()
    utc = lambda t: ("time", [int(str(x)[:13].replace("-", "").replace("T", "")) for x in t])  # noqa: E731
    globs = []
    for wb2, (code, var) in RDA_PL.items():
        for day in range(NT // 4):
            sl = slice(4 * day, 4 * day + 4)
            stamp = f"200001{day + 1:02d}"
            ds = xr.Dataset({var: (("time", "level", "latitude", "longitude"), values[wb2][sl, :, ::-1]),
                             "utc_date": utc(TIMES[sl])},
                            coords={"time": TIMES[sl], "latitude": LAT[::-1], "longitude": LON,
                                    "level": ("level", np.array(LEVELS, float), {"units": "millibars"})})
            ds.to_netcdf(folder / f"e5.oper.an.pl.{code}.ll025sc.{stamp}00_{stamp}18.nc", engine="h5netcdf")
        globs.append(str(folder / f"e5.oper.an.pl.{code}.ll025sc.*.nc"))
    for wb2, (code, var) in RDA_SFC.items():
        ds = xr.Dataset({var: (("time", "latitude", "longitude"), values[wb2][:, ::-1]), "utc_date": utc(TIMES)},
                        coords={"time": TIMES, "latitude": LAT[::-1], "longitude": LON})
        ds.to_netcdf(folder / f"e5.oper.an.sfc.{code}.ll025sc.2000010100_2000013123.nc", engine="h5netcdf")
        globs.append(str(folder / f"e5.oper.an.sfc.{code}.ll025sc.*.nc"))
    t0 = np.array(["1979-01-01T00:00"], dtype="datetime64[ns]")
    for wb2, (code, var) in RDA_INV.items():
        ds = xr.Dataset({var: (("time", "latitude", "longitude"), values[wb2][None, ::-1])},
                        coords={"time": t0, "latitude": LAT[::-1], "longitude": LON})
        ds.to_netcdf(folder / f"e5.oper.invariant.{code}.ll025sc.1979010100_1979010100.nc", engine="h5netcdf")
    return globs, str(folder / "e5.oper.invariant.*.nc")


def params_for(src, static_source="", **data):
    d = {"source": src, "variables": VARIABLES, "levels": [500, 850], "static": STATIC,
         "static_source": static_source, "start": "2000-01-01", "end": "2000-01-03T18:00", "block_size": 5,
         "splits": {"train": ["2000-01-01", "2000-01-02T18:00"], "val": ["2000-01-03", "2000-01-03T06:00"],
                    "test": ["2000-01-03T12:00", "2000-01-03T18:00"]}}
    d.update(data)
    return config.validate_params({"seed": 0, "data": d})


def build(params, folder: Path) -> tuple[xr.DataArray, list[bytes], tuple]:
    blocks = range(len(shard.plan_blocks(params)))
    paths = [shard.shard_block(params, i, folder / f"block_{i:04d}.zarr") for i in blocks]
    data = xr.concat([xr.open_zarr(p, consolidated=False)["data"] for p in paths], "time").load()
    raw = [f.read_bytes() for p in paths for f in shard.raw_chunk_files(p)]
    static = statics.read_static(statics.write_static(params, folder / "static.zarr"))
    return data, raw, static


def test_cds_and_rda_layouts_give_wb2_channels_and_identical_shards(tmp_path):
    values = physical()
    wb2 = params_for(wb2_zarr(values, tmp_path / "era5.zarr"))
    cds = params_for(cds_netcdf(values, tmp_path / "cds"))
    rda_globs, rda_static = rda_files(values, tmp_path / "rda")
    rda = params_for(rda_globs, static_source=rda_static)

    opened = source.open_canonical(cds)
    assert list(opened.data_vars) == VARIABLES and opened["temperature"].dims == ("time", "level", "latitude",
                                                                                   "longitude")
    ref_data, ref_raw, ref_static = build(wb2, tmp_path / "shards_wb2")
    assert list(ref_data.channel.values) == ["geopotential_500", "geopotential_850", "temperature_500",
                                             "temperature_850", "2m_temperature", "10m_u_component_of_wind",
                                             "mean_sea_level_pressure"]
    assert np.array_equal(ref_data.sel(channel="temperature_850").values, values["temperature"][:, 2])
    assert ref_static[0] == STATIC
    for name, params in (("cds", cds), ("rda", rda)):
        data, raw, static = build(params, tmp_path / f"shards_{name}")
        assert data.identical(ref_data), name
        assert raw == ref_raw, name
        assert static[0] == ref_static[0] and static[1].tobytes() == ref_static[1].tobytes(), name


def test_one_glob_over_a_whole_rda_folder(tmp_path):
    """A single glob matching every kind of file: files with the same variable are joined in time, kinds merged."""
    values = physical()
    _, invariant = rda_files(values, tmp_path / "rda")
    params = params_for(str(tmp_path / "rda" / "*.nc"))  # statics from the same glob (the 1979 invariant files)
    ds = source.open_canonical(params)
    assert list(ds.data_vars) == VARIABLES and ds.sizes["time"] == NT
    np.testing.assert_array_equal(ds["geopotential"].sel(level=850).values, values["geopotential"][:, 2])
    names_, lat, lon, fields = statics.static_fields(params)
    np.testing.assert_array_equal(fields[0], values["land_sea_mask"])
    np.testing.assert_array_equal(fields[1], values["geopotential_at_surface"])


def test_table_speaks_every_archive_spelling():
    for spelling in ("2t", "t2m", "VAR_2T", "tas"):
        assert names.wb2_name(spelling, has_level=False) == "2m_temperature"
    for spelling in ("10u", "u10", "VAR_10U"):
        assert names.wb2_name(spelling, has_level=False) == "10m_u_component_of_wind"
    assert names.wb2_name("SSTK", False) == names.wb2_name("sst", False) == "sea_surface_temperature"
    assert names.wb2_name("LSM", False) == names.wb2_name("lsm", False) == "land_sea_mask"
    # z means geopotential on levels and the surface geopotential without them
    assert names.wb2_name("z", has_level=True) == names.wb2_name("Z", has_level=True) == "geopotential"
    assert names.wb2_name("z", has_level=False) == names.wb2_name("Z", False) == "geopotential_at_surface"
    assert names.wb2_name("Q", True) == "specific_humidity" and names.wb2_name("W", True) == "vertical_velocity"
    assert names.wb2_name("mystery", False) == "mystery"  # unknown names pass through
    assert names.wb2_name("t2m", False, rename={"t2m": "my_t2m"}) == "my_t2m"  # data.rename wins


def test_rename_param_and_collisions(tmp_path):
    values = physical()
    ds = xr.Dataset({"tmp2m": (("time", "latitude", "longitude"), values["2m_temperature"])},
                    coords={"time": TIMES, "latitude": LAT, "longitude": LON})
    ds.to_netcdf(tmp_path / "x.nc", engine="h5netcdf")
    p = params_for(str(tmp_path / "x.nc"), variables=["2m_temperature"], static=[],
                   rename={"tmp2m": "2m_temperature"})
    assert list(source.open_canonical(p).data_vars) == ["2m_temperature"]
    both = ds.assign(t2m=ds["tmp2m"])
    both.to_netcdf(tmp_path / "y.nc", engine="h5netcdf")
    p = params_for(str(tmp_path / "y.nc"), variables=["2m_temperature"], static=[],
                   rename={"tmp2m": "2m_temperature"})
    with pytest.raises(DataError, match=r"'tmp2m' and 't2m' both mean '2m_temperature'.*data.rename"):
        shard.plan_blocks(p)


def test_variables_speak_wb2_with_did_you_mean(tmp_path):
    src = wb2_zarr(physical(), tmp_path / "era5.zarr")
    with pytest.raises(DataError, match=r"'t2m' is an archive name; data.variables speaks WeatherBench2 names: "
                                        r"use '2m_temperature'"):
        shard.plan_blocks(params_for(src, variables=["geopotential", "t2m"]))
    with pytest.raises(DataError, match=r"'2m_temprature' not found. Did you mean '2m_temperature'\?"):
        shard.plan_blocks(params_for(src, variables=["2m_temprature"]))
    with pytest.raises(DataError, match=r"data.static: 'land_sea_mak' not found. Did you mean 'land_sea_mask'\?"):
        shard.plan_blocks(params_for(src, static=["land_sea_mak"]))


def test_legacy_cds_expver_dimension_is_combined_and_ensembles_refused(tmp_path):
    values = physical()["2m_temperature"]
    era5, era5t = values.copy(), values.copy()
    era5[8:] = np.nan  # the last steps are only in ERA5T (expver 5), the first only in ERA5 (expver 1)
    era5t[:8] = np.nan
    legacy = xr.Dataset({"t2m": (("time", "expver", "latitude", "longitude"), np.stack([era5, era5t], axis=1))},
                        coords={"time": TIMES, "expver": [1, 5], "latitude": LAT[::-1], "longitude": LON})
    legacy.to_netcdf(tmp_path / "legacy.nc", engine="h5netcdf")
    p = params_for(str(tmp_path / "legacy.nc"), variables=["2m_temperature"], static=[])
    got = source.open_canonical(p)["2m_temperature"].values
    np.testing.assert_array_equal(got, values[:, ::-1])
    ensemble = xr.Dataset({"t2m": (("time", "number", "latitude", "longitude"), np.stack([values, values], 1))},
                          coords={"time": TIMES, "number": [0, 1], "latitude": LAT, "longitude": LON})
    ensemble.to_netcdf(tmp_path / "ens.nc", engine="h5netcdf")
    with pytest.raises(DataError, match=r"ens.nc'.*2 ensemble members.*select one member"):
        shard.plan_blocks(params_for(str(tmp_path / "ens.nc"), variables=["2m_temperature"], static=[]))
