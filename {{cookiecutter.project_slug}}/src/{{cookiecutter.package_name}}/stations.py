"""Weather-station observations: the file format, reading and writing it, and a synthetic station set.

File formats (params evaluate.stations.file; read_stations picks the format by suffix):
  CSV (.csv), one row per station and time:
      id,latitude,longitude,elevation,time,2m_temperature,10m_wind_speed
      SYN0001,51.48,-0.45,25,2001-02-01T00:00,281.3,4.2
    `lat`/`lon`/`valid_time`/`station` are accepted for latitude/longitude/time/id; elevation (m) is optional;
    every other column is a variable; an empty cell is a missing observation.
  netCDF (.nc): dimensions `station` and `time` (or `valid_time`); coordinates `latitude`/`lat`,
    `longitude`/`lon`, optional `elevation`, station ids in `id` or the `station` coordinate; every data variable
    on (station, time) is a variable.
Variable names are the forecast's channel names (WeatherBench2 names) and values are in its units (K, m/s, Pa).
Longitudes may be in [-180, 180) or [0, 360).

`synthetic_stations` samples a gridded truth (the synthetic atmosphere, or any data set) at random points
spread uniformly over the sphere, with optional Gaussian representativeness noise, so the demo can score
forecasts at stations without downloading observations:

    python -m <package>.stations --shards data/shards --out data/stations.csv \
        --variables 2m_temperature --start 2001-02-01 --end 2001-03-31T18:00 --n 200 --noise 2m_temperature=0.5
    <package> stations --params params.yaml --noise 2m_temperature=0.5     # the test split and seed of params

Memory: the observations are held as a (time, station) array per variable (a year of hourly data at 10 000
stations is 700 MB per variable: split the file by time for more); the builder reads one shard at a time.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .fileio import atomic_path
from .station_scores import bilinear

ALIASES = {"id": ("id", "station"), "latitude": ("latitude", "lat"), "longitude": ("longitude", "lon"),
           "time": ("time", "valid_time"), "elevation": ("elevation", "elev", "altitude")}  # fmt: skip
REQUIRED = ("id", "latitude", "longitude", "time")


@dataclass
class Stations:
    """Observations values[variable] [time, station] (NaN = missing) at stations with coordinates in degrees."""

    ids: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    elevation: np.ndarray | None
    times: np.ndarray  # datetime64[ns], ascending
    values: dict[str, np.ndarray]

    def at(self, variable: str, times: np.ndarray) -> np.ndarray:
        """Observations of `variable` [len(times), S] at the given times; NaN where a time has none."""
        times = np.asarray(times).astype("datetime64[ns]")
        pos = np.clip(np.searchsorted(self.times, times), 0, len(self.times) - 1)
        found = self.times[pos] == times
        out = np.full((len(times), len(self.ids)), np.nan)
        out[found] = self.values[variable][pos[found]]
        return out


def _column(columns: Sequence[str], key: str, path: Path) -> str | None:
    for name in ALIASES[key]:
        if name in columns:
            return name
    if key not in REQUIRED:
        return None
    close = difflib.get_close_matches(key, list(columns), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DataError(
        f"{path}: no {key} column (looked for {', '.join(ALIASES[key])}); it has {list(columns)}.{hint} "
        "Fix: rename the column."
    )


def _check_coordinates(path: Path, ids: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> None:
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90)
    if bad.any():
        raise DataError(
            f"{path}: station {str(ids[bad][0])!r} has latitude {lat[bad][0]}, longitude {lon[bad][0]}; latitudes "
            "must lie in [-90, 90] and both be numbers. Fix: correct or drop the station."
        )
    if len(set(ids.tolist())) != len(ids):
        raise DataError(f"{path}: a station id appears twice. Fix: give each station one id.")


def read_stations(path: str | Path) -> Stations:
    """Read a CSV or netCDF station file (format in the module doc); DataError naming the file, column and fix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: station file not found. Fix: set evaluate.stations.file, or build one with "
                        f"`python -m {__package__}.stations`.")  # fmt: skip
    if path.suffix == ".csv":
        return _read_csv(path)
    if path.suffix in (".nc", ".nc4", ".netcdf"):
        return _read_netcdf(path)
    raise DataError(f"{path}: unknown station file type {path.suffix!r}. Fix: use .csv or .nc.")


def _read_csv(path: Path) -> Stations:
    import pandas as pd

    table = pd.read_csv(path)
    if table.empty:
        raise DataError(f"{path}: no observation rows. Fix: fill the file, or unset evaluate.stations.file.")
    col = {key: _column(list(table.columns), key, path) for key in ALIASES}
    variables = [c for c in table.columns if c not in col.values()]
    if not variables:
        raise DataError(f"{path}: no variable columns besides {list(table.columns)}. Fix: add e.g. 2m_temperature.")
    for v in variables:
        if not pd.api.types.is_numeric_dtype(table[v]):
            raise DataError(f"{path}: column {v!r} is not numeric (e.g. {table[v].dropna().iloc[0]!r}). Fix: clean it.")
    try:
        table[col["time"]] = pd.to_datetime(table[col["time"]])
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{path}: column {col['time']!r} has a value that is not a time ({exc}). Fix: use ISO times."
        ) from None
    table[col["id"]] = table[col["id"]].astype(str)
    if table.duplicated([col["id"], col["time"]]).any():
        first = table[table.duplicated([col["id"], col["time"]])].iloc[0]
        raise DataError(f"{path}: station {first[col['id']]!r} has two rows at {first[col['time']]}. Fix: keep one.")
    meta_cols = [col[k] for k in ("latitude", "longitude", "elevation") if col[k]]
    meta = table.groupby(col["id"], sort=True)[meta_cols]
    if (meta.nunique() > 1).any().any():
        bad = str(meta.nunique().max(axis=1).idxmax())
        raise DataError(f"{path}: station {bad!r} changes latitude/longitude/elevation between rows. Fix: one each.")
    first = meta.first()
    ids = first.index.to_numpy().astype(str)
    times = np.sort(table[col["time"]].unique()).astype("datetime64[ns]")
    ti = np.searchsorted(times, table[col["time"]].to_numpy().astype("datetime64[ns]"))
    si = np.searchsorted(ids, table[col["id"]].to_numpy())
    values = {}
    for v in variables:
        grid = np.full((len(times), len(ids)), np.nan)
        grid[ti, si] = table[v].to_numpy(dtype=np.float64)
        values[v] = grid
    lat, lon = first[col["latitude"]].to_numpy(float), first[col["longitude"]].to_numpy(float)
    _check_coordinates(path, ids, lat, lon)
    elevation = first[col["elevation"]].to_numpy(float) if col["elevation"] else None
    return Stations(ids, lat, lon, elevation, times, values)


def _read_netcdf(path: Path) -> Stations:
    import xarray as xr

    with xr.open_dataset(path) as ds:
        names = list(ds.variables)
        col = {key: _column(names, key, path) for key in ALIASES if key != "id"}
        if "station" not in ds.dims:
            raise DataError(f"{path}: no 'station' dimension (it has {list(ds.dims)}). Fix: name it 'station'.")
        ids = ds["id"].values if "id" in ds.variables else ds["station"].values
        variables = [v for v in ds.data_vars if set(ds[v].dims) == {"station", col["time"]} and v not in col.values()]
        if not variables:
            raise DataError(f"{path}: no variable on (station, {col['time']}). Fix: store observations on both.")
        ds = ds.sortby(col["time"])
        values = {v: ds[v].transpose(col["time"], "station").values.astype(np.float64) for v in variables}
        lat, lon = ds[col["latitude"]].values.astype(float), ds[col["longitude"]].values.astype(float)
        elevation = ds[col["elevation"]].values.astype(float) if col["elevation"] else None
        times = ds[col["time"]].values.astype("datetime64[ns]")
    ids = np.asarray(ids).astype(str)
    _check_coordinates(path, ids, lat, lon)
    return Stations(ids, lat, lon, elevation, times, values)


def write_stations_csv(stations: Stations, path: str | Path) -> Path:
    """Write `stations` as the CSV format above (rows with no observation are left out), atomically."""
    import pandas as pd

    t, s = np.meshgrid(np.arange(len(stations.times)), np.arange(len(stations.ids)), indexing="ij")
    table = {"id": stations.ids[s.ravel()], "latitude": stations.latitude[s.ravel()],
             "longitude": stations.longitude[s.ravel()]}  # fmt: skip
    if stations.elevation is not None:
        table["elevation"] = stations.elevation[s.ravel()]
    table["time"] = pd.DatetimeIndex(stations.times[t.ravel()]).strftime("%Y-%m-%dT%H:%M")
    for v, grid in stations.values.items():
        table[v] = grid.ravel()
    frame = pd.DataFrame(table)
    frame = frame[frame[list(stations.values)].notna().any(axis=1)]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.9g")
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------
# A synthetic station set from gridded truth


def random_locations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform over the sphere (latitude = arcsin of a uniform sine), longitude in [0, 360)."""
    rng = np.random.default_rng(seed)
    lat = np.rad2deg(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    lon = rng.uniform(0.0, 360.0, n)
    return np.round(lat, 4), np.round(lon, 4)


def synthetic_stations(
    fields: np.ndarray,
    times: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    variables: Sequence[str],
    n_stations: int = 200,
    noise_std: dict[str, float] | None = None,
    seed: int = 0,
) -> Stations:
    """Stations observing `fields` [T, V, H, W] (V = variables, in order) by bilinear interpolation plus noise."""
    fields = np.asarray(fields)
    if fields.ndim != 4 or fields.shape[1] != len(variables):
        raise ValueError(f"fields must be [time, {len(variables)} variables, lat, lon]; got {fields.shape}")
    lat, lon = random_locations(n_stations, seed)
    interp = bilinear(latitude, longitude, lat, lon)
    rng = np.random.default_rng([seed, 1])
    values = {}
    for vi, v in enumerate(variables):
        clean = interp(fields[:, vi])
        values[v] = clean + (noise_std or {}).get(v, 0.0) * rng.standard_normal(clean.shape)
    ids = np.array([f"SYN{i:04d}" for i in range(1, n_stations + 1)])
    return Stations(ids, lat, lon, None, np.asarray(times).astype("datetime64[ns]"), values)


def stations_from_shards(
    shards: str | Path, variables: Sequence[str], start: str, end: str, n_stations: int, noise_std, seed: int
) -> Stations:
    """synthetic_stations over the shards' states in [start, end], read one shard at a time."""
    import xarray as xr

    paths = sorted(Path(shards).glob("block_*.zarr"))
    if not paths:
        raise DataError(f"{shards}: no shards (block_NNNN.zarr). Fix: run the shard step first, or pass --shards.")
    parts = []
    for p in paths:
        da = xr.open_zarr(p, consolidated=False, chunks=None)["data"]
        missing = [v for v in variables if v not in da["channel"].values]
        if missing:
            raise DataError(f"{p}: no channel {missing}; it has {list(da['channel'].values)}. Fix: --variables.")
        da = da.sel(time=slice(np.datetime64(start), np.datetime64(end)), channel=list(variables))
        if da.sizes["time"]:
            one = synthetic_stations(da.values, da["time"].values, da["latitude"].values, da["longitude"].values,
                                     variables, n_stations, noise_std, seed)  # fmt: skip
            parts.append(one)
    if not parts:
        raise DataError(f"{shards}: no time step in [{start}, {end}]. Fix: choose --start/--end inside the shards.")
    values = {v: np.concatenate([p.values[v] for p in parts]) for v in variables}
    first = parts[0]
    return Stations(first.ids, first.latitude, first.longitude, None, np.concatenate([p.times for p in parts]), values)


def _noise(items: Sequence[str]) -> dict[str, float]:
    """{"2m_temperature": 0.5} from ["2m_temperature=0.5"]; ValueError naming the bad item."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value) if sep else float("nan")
        except ValueError:
            out[name] = float("nan")
        if not np.isfinite(out[name]) or out[name] < 0:
            raise ValueError(f"--noise {item!r}: expected VARIABLE=STD with STD >= 0, e.g. 2m_temperature=0.5")
    return out


def main(argv: list[str] | None = None) -> int:
    """Build a synthetic station CSV from the shards (for the demo)."""
    p = argparse.ArgumentParser(prog="stations", description=main.__doc__)
    p.add_argument("--params", default=None, help="params.yaml: --start/--end default to data.splits.test, --seed "
                   "to its seed")  # fmt: skip
    p.add_argument("--shards", default="data/shards", help="directory of block_NNNN.zarr shards")
    p.add_argument("--out", default="data/stations.csv", help="CSV to write")
    p.add_argument("--variables", nargs="+", default=["2m_temperature"], help="channels the stations observe")
    p.add_argument("--start", default=None, help="first time (ISO), e.g. the test split's start")
    p.add_argument("--end", default=None, help="last time (ISO, inclusive)")
    p.add_argument("--n", type=int, default=200, help="number of stations")
    p.add_argument("--noise", nargs="*", default=[], help="VARIABLE=STD representativeness noise, in its units")
    p.add_argument("--seed", type=int, default=None, help="seed of the locations and the noise (default 0)")
    args = p.parse_args(argv)
    if args.params:
        from .config import load_params

        params = load_params(args.params)
        args.start = args.start or params.data.splits.test[0]
        args.end = args.end or params.data.splits.test[1]
        args.seed = params.seed if args.seed is None else args.seed
    if args.start is None or args.end is None:
        p.error("give --start and --end, or --params to take them from data.splits.test")
    try:
        noise = _noise(args.noise)
    except ValueError as exc:
        p.error(str(exc))
    if args.n < 1:
        p.error(f"--n {args.n}: need at least 1 station")
    seed = 0 if args.seed is None else args.seed
    stations = stations_from_shards(args.shards, args.variables, args.start, args.end, args.n, noise, seed)
    write_stations_csv(stations, args.out)
    print(f"{args.out}: {len(stations.ids)} stations x {len(stations.times)} times, {', '.join(stations.values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
