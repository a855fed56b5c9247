"""What the WeatherBench2 variable names mean: units, long names and CF standard names, in one table.

A channel is a variable, or a variable on a pressure level (`geopotential_500`: geopotential at 500 hPa). The
report labels every number and axis with `symbol(channel)`; exported forecast files carry `cf_attrs(variable)`.
Units are UDUNITS strings as CF writes them (`m2 s-2`); `symbol` prints them with superscripts (`m² s⁻²`).
A variable missing here gets no invented units: the report prints "units?" and files carry no units attribute.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Variable(NamedTuple):
    units: str  # UDUNITS / CF string
    long_name: str
    standard_name: str | None  # CF standard name, where one exists


# WB2 / ERA5 variable name -> meaning. Standard names from the CF standard name table (v84).
VARIABLES: dict[str, Variable] = {
    # on pressure levels
    "geopotential": Variable("m2 s-2", "geopotential", "geopotential"),
    "temperature": Variable("K", "temperature", "air_temperature"),
    "u_component_of_wind": Variable("m s-1", "eastward wind", "eastward_wind"),
    "v_component_of_wind": Variable("m s-1", "northward wind", "northward_wind"),
    "wind_speed": Variable("m s-1", "wind speed", "wind_speed"),
    "vertical_velocity": Variable("Pa s-1", "vertical velocity", "lagrangian_tendency_of_air_pressure"),
    "specific_humidity": Variable("kg kg-1", "specific humidity", "specific_humidity"),
    "relative_humidity": Variable("%", "relative humidity", "relative_humidity"),
    "potential_vorticity": Variable("K m2 kg-1 s-1", "potential vorticity", "ertel_potential_vorticity"),
    "vorticity": Variable("s-1", "relative vorticity", "atmosphere_relative_vorticity"),
    "divergence": Variable("s-1", "divergence", "divergence_of_wind"),
    "specific_cloud_liquid_water_content": Variable(
        "kg kg-1", "specific cloud liquid water content", "mass_fraction_of_cloud_liquid_water_in_air"
    ),
    "specific_cloud_ice_water_content": Variable(
        "kg kg-1", "specific cloud ice water content", "mass_fraction_of_cloud_ice_in_air"
    ),
    # single level
    "2m_temperature": Variable("K", "2 metre temperature", "air_temperature"),
    "2m_dewpoint_temperature": Variable("K", "2 metre dewpoint temperature", "dew_point_temperature"),
    "10m_u_component_of_wind": Variable("m s-1", "10 metre eastward wind", "eastward_wind"),
    "10m_v_component_of_wind": Variable("m s-1", "10 metre northward wind", "northward_wind"),
    "10m_wind_speed": Variable("m s-1", "10 metre wind speed", "wind_speed"),
    "100m_u_component_of_wind": Variable("m s-1", "100 metre eastward wind", "eastward_wind"),
    "100m_v_component_of_wind": Variable("m s-1", "100 metre northward wind", "northward_wind"),
    "mean_sea_level_pressure": Variable("Pa", "mean sea level pressure", "air_pressure_at_mean_sea_level"),
    "surface_pressure": Variable("Pa", "surface pressure", "surface_air_pressure"),
    "sea_surface_temperature": Variable("K", "sea surface temperature", "sea_surface_temperature"),
    "total_precipitation": Variable("m", "total precipitation", "lwe_thickness_of_precipitation_amount"),
    "total_precipitation_6hr": Variable("m", "6-hourly precipitation", "lwe_thickness_of_precipitation_amount"),
    "total_precipitation_24hr": Variable("m", "24-hourly precipitation", "lwe_thickness_of_precipitation_amount"),
    "total_column_water_vapour": Variable(
        "kg m-2", "total column water vapour", "atmosphere_mass_content_of_water_vapor"
    ),
    "total_cloud_cover": Variable("1", "total cloud cover", "cloud_area_fraction"),
    "toa_incident_solar_radiation": Variable("J m-2", "TOA incident solar radiation (accumulated)", None),
    "geopotential_at_surface": Variable("m2 s-2", "surface geopotential", "surface_geopotential"),
    "land_sea_mask": Variable("1", "land-sea mask (land fraction)", "land_area_fraction"),
}

UNKNOWN = "units?"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def split_channel(name: str) -> tuple[str, int | None]:
    """'geopotential_500' -> ('geopotential', 500); '2m_temperature' -> ('2m_temperature', None)."""
    head, sep, tail = name.rpartition("_")
    if sep and head and tail.isdigit():
        return head, int(tail)
    return name, None


def pretty(units: str) -> str:
    """A UDUNITS string with superscript exponents: 'm2 s-2' -> 'm² s⁻²'."""
    return re.sub(r"(?<=[A-Za-z])(-?\d+)", lambda m: m.group(1).translate(_SUPERSCRIPT), units)


def variable(channel: str) -> Variable | None:
    """The table entry of a channel's variable; None for a variable the table does not know."""
    return VARIABLES.get(split_channel(channel)[0])


def symbol(channel: str) -> str:
    """Units of a channel as the report prints them ('m² s⁻²', 'K'); UNKNOWN for a variable not in the table."""
    var = variable(channel)
    return pretty(var.units) if var else UNKNOWN


def cf_attrs(name: str) -> dict[str, str]:
    """CF attributes (units, long_name, standard_name where one exists) of a variable or channel name."""
    var = variable(name)
    if var is None:
        return {}
    attrs = {"units": var.units, "long_name": var.long_name}
    if var.standard_name:
        attrs["standard_name"] = var.standard_name
    return attrs
