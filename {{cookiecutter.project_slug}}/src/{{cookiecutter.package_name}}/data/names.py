"""Variable names at the door: archive names (ECMWF/CF short names, NCAR RDA ds633.0 names) -> WeatherBench2 names.

Everything after `source.py` speaks WeatherBench2 (WB2) names only, and so does params.yaml (data.variables,
data.static, evaluate.headline). One table covers the three spellings of each ERA5 parameter:
  ECMWF/GRIB short name   `2t`, `10u`, `z`, `msl`          (ecCodes, MARS)
  CF / CDS netCDF name    `t2m`, `u10`, `z`, `msl`         (the Copernicus CDS netCDF files, cfgrib)
  NCAR RDA ds633.0 name   `VAR_2T`, `VAR_10U`, `Z`, `MSL`  (upper case; `VAR_` before a leading digit)
`z` is geopotential on pressure levels and the surface geopotential (orography x g) without them, so the table
decides by the variable's dims. Anything else is renamed with `data.rename` (source name -> WB2 name), which wins
over the table.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from ..errors import DataError

# ECMWF short name -> WB2 name, with the CF/CDS netCDF spellings that differ from the short name.
# The RDA spelling is derived (see rda_name), except where NCAR chose another parameter name (RDA_EXTRA).
TABLE: dict[str, tuple[str, tuple[str, ...]]] = {
    # pressure-level variables
    "z": ("geopotential", ()),
    "t": ("temperature", ("ta",)),
    "u": ("u_component_of_wind", ("ua",)),
    "v": ("v_component_of_wind", ("va",)),
    "q": ("specific_humidity", ("hus",)),
    "w": ("vertical_velocity", ("wap",)),
    "r": ("relative_humidity", ()),
    "vo": ("vorticity", ()),
    "d": ("divergence", ()),
    "pv": ("potential_vorticity", ()),
    "o3": ("ozone_mass_mixing_ratio", ()),
    "cc": ("fraction_of_cloud_cover", ()),
    "ciwc": ("specific_cloud_ice_water_content", ()),
    "clwc": ("specific_cloud_liquid_water_content", ()),
    "crwc": ("specific_rain_water_content", ()),
    "cswc": ("specific_snow_water_content", ()),
    # single-level variables
    "2t": ("2m_temperature", ("t2m", "tas")),
    "2d": ("2m_dewpoint_temperature", ("d2m",)),
    "10u": ("10m_u_component_of_wind", ("u10", "uas")),
    "10v": ("10m_v_component_of_wind", ("v10", "vas")),
    "10si": ("10m_wind_speed", ("si10",)),
    "100u": ("100m_u_component_of_wind", ("u100",)),
    "100v": ("100m_v_component_of_wind", ("v100",)),
    "msl": ("mean_sea_level_pressure", ("psl",)),
    "sp": ("surface_pressure", ("ps",)),
    "tp": ("total_precipitation", ()),
    "tcwv": ("total_column_water_vapour", ()),
    "tcw": ("total_column_water", ()),
    "tcc": ("total_cloud_cover", ()),
    "sst": ("sea_surface_temperature", ()),
    "skt": ("skin_temperature", ()),
    "ci": ("sea_ice_cover", ("siconc",)),
    "sd": ("snow_depth", ()),
    "blh": ("boundary_layer_height", ()),
    "tisr": ("toa_incident_solar_radiation", ()),
    # time-invariant fields (data.static)
    "lsm": ("land_sea_mask", ()),
    "slt": ("soil_type", ()),
    "sdor": ("standard_deviation_of_orography", ()),
    "sdfor": ("standard_deviation_of_filtered_subgrid_orography", ()),
    "slor": ("slope_of_sub_gridscale_orography", ()),
    "anor": ("angle_of_sub_gridscale_orography", ()),
    "isor": ("anisotropy_of_sub_gridscale_orography", ()),
    "cvh": ("high_vegetation_cover", ()),
    "cvl": ("low_vegetation_cover", ()),
    "tvh": ("type_of_high_vegetation", ()),
    "tvl": ("type_of_low_vegetation", ()),
    "cl": ("lake_cover", ()),
    "dl": ("lake_depth", ()),
}
SURFACE_GEOPOTENTIAL = "geopotential_at_surface"  # `z` without a level dimension
RDA_EXTRA = {"SSTK": "sea_surface_temperature"}  # ds633.0 ships SST as parameter 128_034_sstk
WB2_NAMES = frozenset(wb2 for wb2, _ in TABLE.values()) | {SURFACE_GEOPOTENTIAL}


def rda_name(short: str) -> str:
    """NCAR RDA ds633.0 spelling of an ECMWF short name: upper case, `VAR_` before a leading digit (`2t` -> VAR_2T)."""
    return f"VAR_{short.upper()}" if short[0].isdigit() else short.upper()


def _build_aliases() -> dict[str, str]:
    aliases: dict[str, str] = dict(RDA_EXTRA)
    for short, (wb2, cf) in TABLE.items():
        for name in (short, rda_name(short), *cf):
            aliases[name] = wb2
    return aliases


ALIASES = _build_aliases()  # archive name -> WB2 name (for `z`/`Z`: the pressure-level meaning)
GEOPOTENTIAL_NAMES = {"z", "Z"}


def wb2_name(name: str, has_level: bool, rename: Mapping[str, str] | None = None) -> str:
    """The WB2 name of a source variable: data.rename first, then the table; unknown names are kept as they are."""
    if rename and name in rename:
        return rename[name]
    if name in GEOPOTENTIAL_NAMES and not has_level:
        return SURFACE_GEOPOTENTIAL
    return ALIASES.get(name, name)


def wb2_renames(variables: Mapping[str, bool], rename: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """{source name: WB2 name} for the variables (name -> has a level dim) of one file, refusing two that collide."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, has_level in variables.items():
        new = wb2_name(name, has_level, rename)
        if new in seen:
            raise DataError(
                f"{where}: variables {seen[new]!r} and {name!r} both mean {new!r}. Fix: drop one of them from the "
                f"files, or map one to another name with data.rename (e.g. data.rename: {{{name}: my_{new}}})."
            )
        seen[new] = name
        if new != name:
            out[name] = new
    return out


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(candidates) - {name}), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_requested(requested: Iterable[str], available: Iterable[str], key: str, where: str) -> None:
    """Raise one DataError for every name in `requested` (params key `key`) that the source lacks, each with the
    best hint: the WB2 name when an archive name was used, else the closest available name."""
    available = list(available)
    problems = []
    for name in requested:
        if name in available:
            continue
        if name in ALIASES or name in GEOPOTENTIAL_NAMES:
            meant = ALIASES.get(name, "geopotential")
            extra = f" (or {SURFACE_GEOPOTENTIAL!r} at the surface)" if name in GEOPOTENTIAL_NAMES else ""
            problems.append(f"{name!r} is an archive name; {key} speaks WeatherBench2 names: use {meant!r}{extra}.")
        else:
            problems.append(f"{name!r} not found.{_did_you_mean(name, available)}")
    if problems:
        raise DataError(
            f"{where}: {key}: " + " ".join(problems) + f" The source has: {sorted(available)}. "
            f"Fix: change {key} in params.yaml (WeatherBench2 names; map other names with data.rename)."
        )
