"""WeatherBench2's verification regions as boxes, and their names: the table that params validation needs.

Kept apart from regions.py (the scoring) so that config.py, which every stage imports, does not pull the scoring
code into every stage's DVC deps: a change to how regions are scored reruns only the evaluation. The boxes and
their source are documented in regions.py.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ParamsError

ALL_LON = ((0.0, 360.0),)
SURFACES = ("land", "sea")
_EPS = 1e-9  # degrees: grid coordinates that equal a bound up to float noise are inside (WB2 slices are inclusive)


@dataclass(frozen=True)
class Region:
    """A union of latitude ranges x a union of longitude ranges, inclusive, optionally land or sea only.

    lon ranges are (west, east) in degrees east, any representation (-12.5 == 347.5); west > east (mod 360)
    means the range crosses longitude 0.
    """

    name: str
    lat: tuple[tuple[float, float], ...] = ((-90.0, 90.0),)
    lon: tuple[tuple[float, float], ...] = ALL_LON
    surface: str = "all"  # all | land | sea

    def contains(self, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
        """True where the points (broadcast latitude, longitude in degrees) are in the box (surface ignored)."""
        return lat_in(self, latitude) & lon_in(self, longitude)


WB2_REGIONS: dict[str, Region] = {
    r.name: r
    for r in (
        Region("global"),
        Region("tropics", lat=((-20.0, 20.0),)),
        Region("extra-tropics", lat=((-90.0, -20.0), (20.0, 90.0))),
        Region("northern-hemisphere", lat=((20.0, 90.0),)),
        Region("southern-hemisphere", lat=((-90.0, -20.0),)),
        Region("europe", lat=((35.0, 75.0),), lon=((347.5, 42.5),)),
        Region("north-america", lat=((25.0, 60.0),), lon=((240.0, 285.0),)),
        Region("north-atlantic", lat=((25.0, 65.0),), lon=((290.0, 350.0),)),
        Region("north-pacific", lat=((25.0, 60.0),), lon=((145.0, 230.0),)),
        Region("east-asia", lat=((25.0, 60.0),), lon=((102.5, 150.0),)),
        Region("ausnz", lat=((-45.0, -12.5),), lon=((120.0, 175.0),)),
        Region("arctic", lat=((60.0, 90.0),)),
        Region("antarctic", lat=((-90.0, -60.0),)),
    )
}


def lat_in(region: Region, latitude: np.ndarray) -> np.ndarray:
    latitude = np.asarray(latitude, dtype=np.float64)
    inside = np.zeros(latitude.shape, dtype=bool)
    for south, north in region.lat:
        inside |= (latitude >= south - _EPS) & (latitude <= north + _EPS)
    return inside


def lon_in(region: Region, longitude: np.ndarray) -> np.ndarray:
    longitude = np.mod(np.asarray(longitude, dtype=np.float64), 360.0)
    inside = np.zeros(longitude.shape, dtype=bool)
    for west, east in region.lon:
        if east - west >= 360.0 - _EPS:
            inside[...] = True
            continue
        # distance east of the west edge, in [0, 360); inside when it does not pass the east edge
        offset = np.mod(longitude - west + _EPS, 360.0) - _EPS
        inside |= offset <= np.mod(east - west, 360.0) + _EPS
    return inside


# ----------------------------------------------------------------------------------------------------------------
# Names (validated in params and here)


def available_names(with_land_sea: bool = True) -> list[str]:
    """Every region name: the WB2 boxes, and their _land / _sea variants when a mask can be given."""
    names = list(WB2_REGIONS)
    if with_land_sea:
        names += [f"{n}_{s}" for n in WB2_REGIONS for s in SURFACES]
    return names


def check_names(names: Sequence[str], has_land_sea_mask: bool, key: str = "evaluate.regions") -> None:
    """Raise ParamsError for an unknown region (with the closest name) or a _land/_sea one without a mask."""
    for name in names:
        if name not in available_names():
            close = difflib.get_close_matches(name, available_names(), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ParamsError(
                f"@{key}: unknown region {name!r}.{hint} Known: {', '.join(WB2_REGIONS)}"
                " (each also as <name>_land and <name>_sea)"
            )
        if name.endswith(tuple(f"_{s}" for s in SURFACES)) and not has_land_sea_mask:
            raise ParamsError(
                f"@{key}: region {name!r} needs a land-sea mask; set evaluate.land_sea_mask to a file, or drop it"
            )
    if len(set(names)) != len(names):
        raise ParamsError(f"@{key}: {list(names)} names a region twice; list each once")


def region(name: str) -> Region:
    """The Region called `name` ("europe", "europe_land", ...)."""
    check_names([name], has_land_sea_mask=True, key="region")
    base, _, surface = name.rpartition("_") if name.endswith(("_land", "_sea")) else (name, "", "all")
    box = WB2_REGIONS[base]
    return Region(name, box.lat, box.lon, surface)
