"""The units table: channel names, units as printed and as CF attributes."""

from __future__ import annotations

import importlib

import pytest


@pytest.fixture(scope="module")
def units(pkg_name):
    return importlib.import_module(f"{pkg_name}.units")


def test_split_channel(units):
    assert units.split_channel("geopotential_500") == ("geopotential", 500)
    assert units.split_channel("u_component_of_wind_1000") == ("u_component_of_wind", 1000)
    assert units.split_channel("2m_temperature") == ("2m_temperature", None)
    assert units.split_channel("10m_u_component_of_wind") == ("10m_u_component_of_wind", None)


def test_symbols_of_the_wb2_variables(units):
    assert units.symbol("geopotential_500") == "m² s⁻²"
    assert units.symbol("temperature_850") == units.symbol("2m_temperature") == "K"
    assert units.symbol("10m_u_component_of_wind") == "m s⁻¹"
    assert units.symbol("mean_sea_level_pressure") == "Pa"
    assert units.symbol("specific_humidity_700") == "kg kg⁻¹"
    assert units.symbol("potential_vorticity_300") == "K m² kg⁻¹ s⁻¹"
    assert units.symbol("total_cloud_cover") == "1"
    assert units.symbol("my_own_index") == units.UNKNOWN  # never invented


def test_cf_attributes(units):
    assert units.cf_attrs("geopotential") == {"units": "m2 s-2", "long_name": "geopotential",
                                              "standard_name": "geopotential"}  # fmt: skip
    assert units.cf_attrs("2m_temperature")["standard_name"] == "air_temperature"
    assert "standard_name" not in units.cf_attrs("toa_incident_solar_radiation")  # CF has none for it
    assert units.cf_attrs("my_own_index") == {}
