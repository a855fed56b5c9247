"""The built-in synthetic atmosphere: a small, deterministic, learnable stand-in for ERA5/WeatherBench2.

Variables (WeatherBench2 names): geopotential and temperature on pressure levels (data.synthetic.levels), and
2m_temperature; 5 channels by default (geopotential_500/850, temperature_500/850, 2m_temperature).

Dynamics, chosen so that persistence is clearly beatable and a small CNN learns the model in minutes:
- Two prognostic anomaly fields, evolved per latitude in longitude-Fourier space:
  psi (the 500 hPa geopotential anomaly) is advected by a latitude-dependent jet (westerly storm tracks near 45 deg,
  weak easterlies in the tropics; the shear tilts the features), with mild Rossby-like dispersion, decays with an
  12-day time scale and is kept alive by small red noise that is smooth in latitude and peaks at wavenumber ~5.
  T' (the 850 hPa temperature anomaly) is advected by the same jet, decays over 5 days and is forced by the
  meridional wind of psi across the background temperature gradient (warm advection ahead of troughs): the
  interaction between the two variables.
- Diagnosed from them, with realistic magnitudes: geopotential in m^2/s^2 from the hypsometric equation
  (~5.4e4 at 500 hPa) plus psi and a thickness term from T'; temperature in K with a lapse rate; 2m_temperature
  tied to T850 plus a diurnal cycle that follows local solar time (amplitude larger where the sun is high).
- The background climate has a seasonal cycle (hemispheres in opposite phase) and a stationary wave.
The noise is small (innovation std per 6 h ~ 10-20 % of the anomaly std), so 72 h forecasts keep real skill.

Static fields (no time dimension, for data.static): land_sea_mask (land fraction 0..1, soft coasts) and
geopotential_at_surface (orography x g, m^2/s^2, zero over sea) of a few fixed, made-up continents. They are
analytic in latitude/longitude and do not depend on the seed, so every grid and every run sees the same land.
"""

from __future__ import annotations

import time as _time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .. import cliargs
from ..config import Params, load_params
from .forcings import hour_angle, solar_declination

R_DRY = 287.0  # J/(kg K)
GRAVITY = 9.81  # m/s^2
LAPSE_RATE = 6.5e-3  # K/m
SECONDS_PER_DAY = 86400.0

VARIABLES = ("geopotential", "temperature", "2m_temperature")
STATICS = ("land_sea_mask", "geopotential_at_surface")
# made-up continents: (centre latitude, centre longitude, radius in degrees of great circle, peak height in m)
CONTINENTS = ((45.0, 100.0, 38.0, 3000.0), (40.0, 260.0, 30.0, 2200.0), (-15.0, 300.0, 24.0, 1800.0),
              (5.0, 20.0, 30.0, 1200.0), (-25.0, 135.0, 18.0, 600.0), (-80.0, 0.0, 14.0, 2800.0))
SPINUP_STEPS = 240  # steps run before the first time so the anomalies start in their statistical steady state
PSI_RMS = 900.0  # m^2/s^2, global RMS of the 500 hPa geopotential anomaly (about 90 m of height)
T_RMS = 2.5  # K, global RMS of the 850 hPa temperature anomaly


def grid(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    """Equiangular grid without the poles: latitude ascending, longitude in [0, 360)."""
    lat = -90.0 + (np.arange(nlat) + 0.5) * 180.0 / nlat
    lon = np.arange(nlon) * 360.0 / nlon
    return lat, lon


def synthetic_times(params: Params) -> np.ndarray:
    """Time axis of the synthetic source: data.start .. data.end (inclusive) every synthetic.step_hours."""
    step = np.timedelta64(params.data.synthetic.step_hours, "h")
    start = np.datetime64(params.data.start, "ns")
    end = np.datetime64(params.data.end, "ns")
    if end < start:
        raise ValueError(f"data.end ({params.data.end}) is before data.start ({params.data.start})")
    n = int((end - start) // step) + 1
    return start + np.arange(n) * step


def _jet(lat: np.ndarray) -> np.ndarray:
    """Zonal advection speed in degrees of longitude per day: storm-track jets near +-45, easterly trades."""
    return 22.0 * np.exp(-(((np.abs(lat) - 45.0) / 16.0) ** 2)) - 5.0 * np.exp(-((lat / 14.0) ** 2)) + 2.0


def _lat_smoother(lat: np.ndarray, sigma_deg: float = 9.0) -> np.ndarray:
    """Row-normalized Gaussian smoothing matrix over latitude (noise coherent over ~10-20 degrees)."""
    d = lat[:, None] - lat[None, :]
    m = np.exp(-0.5 * (d / sigma_deg) ** 2)
    return m / np.sqrt((m**2).sum(axis=1, keepdims=True))


def _anomalies(params: Params, lat: np.ndarray, nlon: int, nsteps: int) -> tuple[np.ndarray, np.ndarray]:
    """Prognostic anomalies psi (m^2/s^2) and T' (K) on the grid, shape (T, H, W) float64 each."""
    rng = np.random.default_rng(params.seed)
    dt_days = params.data.synthetic.step_hours / 24.0
    nk = nlon // 4 + 1  # wavenumbers 0..nlon/4 (smaller scales are not forced)
    k = np.arange(nk, dtype=np.float64)
    phi = np.deg2rad(lat)

    # phase speed per (lat, k): jet advection minus mild Rossby-like westward drift of the longest waves
    speed = _jet(lat)[:, None] - 6.0 / np.maximum(k, 1.0)[None, :] ** 2  # deg lon / day
    rotate = np.exp(-1j * k[None, :] * np.deg2rad(speed) * dt_days)
    decay_psi = np.exp(-dt_days / 12.0)
    decay_t = np.exp(-dt_days / 5.0)
    psi_rotate = decay_psi * rotate
    t_rotate = decay_t * rotate

    # forcing spectrum (peak near wavenumber 5) and storm-track envelope in latitude
    spectrum = (k / 5.0) ** 2 * np.exp(1.0 - (k / 5.0) ** 2)
    spectrum[0] = 0.3
    envelope = 0.25 + np.exp(-(((np.abs(lat) - 48.0) / 18.0) ** 2))
    amp = envelope[:, None] * spectrum[None, :] * np.sqrt(dt_days)
    smooth = _lat_smoother(lat)
    # T' tendency from the meridional wind of psi across the background gradient (no sign flip between hemispheres:
    # both f and dT/dy change sign), vanishing in the tropics where f -> 0 and the gradient is weak
    coupling = (
        0.8
        * dt_days
        * np.exp(-(((np.abs(lat) - 45.0) / 20.0) ** 2))[:, None]
        * (1j * k)[None, :]
        / np.maximum(np.cos(phi), 0.3)[:, None]
    )

    shape = (len(lat), nk)
    psi = np.zeros(shape, np.complex128)
    tmp = np.zeros(shape, np.complex128)
    psi_out = np.empty((nsteps,) + shape, np.complex128)
    t_out = np.empty((nsteps,) + shape, np.complex128)
    for step in range(-SPINUP_STEPS, nsteps):
        noise = rng.standard_normal((2, 2) + shape)
        psi_noise = smooth @ (noise[0, 0] + 1j * noise[0, 1])
        t_noise = smooth @ (noise[1, 0] + 1j * noise[1, 1])
        tmp = t_rotate * tmp + coupling * psi + 0.3 * amp * t_noise
        psi = psi_rotate * psi + amp * psi_noise
        if step >= 0:
            psi_out[step] = psi
            t_out[step] = tmp
    psi_grid = np.fft.irfft(psi_out, n=nlon, axis=-1, norm="forward")
    t_grid = np.fft.irfft(t_out, n=nlon, axis=-1, norm="forward")
    # fixed scale factors (not data dependent, so extending the time range does not change earlier values)
    return psi_grid * (PSI_RMS / PSI_RAW_RMS), t_grid * (T_RMS / T_RAW_RMS)


# global RMS of the raw (unit-noise) anomalies for the default grid, measured once over a long run
PSI_RAW_RMS = 7.24
T_RAW_RMS = 165.5


def _season(times: np.ndarray) -> np.ndarray:
    """+1 in mid-July (northern summer), -1 in mid-January."""
    day = (times - times.astype("datetime64[Y]")) / np.timedelta64(1, "D")
    return np.cos(2 * np.pi * (day - 196.0) / 365.25)


def static_fields(lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """Land-sea mask and surface geopotential on (lat, lon), float32 (H, W), in the order of STATICS."""
    phi = np.deg2rad(np.asarray(lat, dtype=np.float64))[:, None]
    lam = np.deg2rad(np.asarray(lon, dtype=np.float64))[None, :]
    land = np.zeros(np.broadcast_shapes(phi.shape, lam.shape))
    height = np.zeros_like(land)
    for lat0, lon0, radius, peak in CONTINENTS:
        p0, l0 = np.deg2rad(lat0), np.deg2rad(lon0)
        cos_d = np.sin(phi) * np.sin(p0) + np.cos(phi) * np.cos(p0) * np.cos(lam - l0)
        d = np.rad2deg(np.arccos(np.clip(cos_d, -1.0, 1.0))) / radius  # distance in continent radii
        land = np.maximum(land, np.clip((1.15 - d) / 0.3, 0.0, 1.0))  # soft coast about 0.3 radii wide
        height = np.maximum(height, peak * np.clip(1.0 - d, 0.0, None) ** 1.5)
    return {"land_sea_mask": land.astype(np.float32),
            "geopotential_at_surface": (GRAVITY * height * (land > 0)).astype(np.float32)}


def generate(params: Params) -> xr.Dataset:
    """The synthetic source as a canonical Dataset (time, [level], latitude, longitude), float32."""
    cfg = params.data.synthetic
    lat, lon = grid(cfg.nlat, cfg.nlon)
    times = synthetic_times(params)
    levels = np.array(sorted(cfg.levels), dtype=np.int64)
    psi, tprime = _anomalies(params, lat, cfg.nlon, len(times))

    phi = np.deg2rad(lat)[None, :, None]
    lam = np.deg2rad(lon)[None, None, :]
    season = _season(times)[:, None, None]
    # background 850 hPa temperature: cold poles, hemispheres in opposite seasons, a weak stationary wave
    t850 = (
        288.0
        - 40.0 * np.sin(phi) ** 2
        + 12.0 * np.sin(phi) * season
        + 3.0 * np.sin(2 * phi) ** 2 * np.cos(2 * lam + 0.5)
    )
    t_mean_column = t850 + 2.0  # mean temperature of the 1000..p layer, roughly (gives Z500 ~ 5.5e4)

    geo, temp = [], []
    for p in levels:
        w = np.log(1000.0 / p) / np.log(2.0)  # 1 at 500 hPa, 0.23 at 850 hPa
        z_bar = R_DRY * t_mean_column * np.log(1000.0 / p)
        z850_bar = R_DRY * t_mean_column * np.log(1000.0 / 850.0)
        t_bar = t850 - LAPSE_RATE * (z_bar - z850_bar) / GRAVITY
        geo.append(z_bar + psi * (0.4 + 0.6 * w) + 150.0 * tprime * (w - 0.5))
        temp.append(t_bar + tprime * (1.0 - 0.4 * (w - 0.234)) + 1e-3 * psi * w)
    # 2 m temperature: follows T850 (+10 K), plus a diurnal cycle peaking at 15 local solar time, larger where the
    # noon sun is high
    dec = solar_declination(times)[:, None, None]
    noon_sun = np.clip(np.cos(phi - dec), 0.0, None)
    local = hour_angle(times, lon)[:, None, :]
    diurnal = (1.5 + 4.0 * noon_sun) * np.cos(local - 2 * np.pi * 3.0 / 24.0)
    t2m = t850 + 10.0 + 0.9 * tprime + diurnal

    dims3 = ("time", "level", "latitude", "longitude")
    dims2 = ("time", "latitude", "longitude")
    data = {
        "geopotential": (dims3, np.stack(geo, axis=1).astype(np.float32), {"units": "m**2 s**-2"}),
        "temperature": (dims3, np.stack(temp, axis=1).astype(np.float32), {"units": "K"}),
        "2m_temperature": (dims2, t2m.astype(np.float32), {"units": "K"}),
    }
    units = {"land_sea_mask": "1", "geopotential_at_surface": "m**2 s**-2"}
    for name, field in static_fields(lat, lon).items():
        data[name] = (("latitude", "longitude"), field, {"units": units[name]})
    coords = {
        "time": times,
        "level": ("level", levels, {"units": "hPa"}),
        "latitude": ("latitude", lat, {"units": "degrees_north"}),
        "longitude": ("longitude", lon, {"units": "degrees_east"}),
    }
    return xr.Dataset(data, coords=coords, attrs={"source": "synthetic", "seed": params.seed})


def write(ds: xr.Dataset, out: Path, time_chunk: int = 240) -> None:
    """Write as a zarr v3 store (compressed; it is read once by the shard step), atomically."""
    import shutil

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    chunks = {name: {"chunks": (min(time_chunk, ds.sizes["time"]),) + ds[name].shape[1:]}
              for name in ds.data_vars if "time" in ds[name].dims}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: "consolidated metadata is not part of the v3 spec" (xarray reads it)
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True, encoding=chunks)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def main(argv: list[str] | None = None) -> int:
    parser = cliargs.parser("synthesize", __doc__.splitlines()[0], "params")
    parser.add_argument("--out", default="data/synthetic.zarr", help="zarr store to write")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    t0 = _time.perf_counter()
    ds = generate(params)
    write(ds, Path(args.out))
    shape = {k: int(v) for k, v in ds.sizes.items()}
    print(f"wrote {args.out}: {shape} in {_time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
