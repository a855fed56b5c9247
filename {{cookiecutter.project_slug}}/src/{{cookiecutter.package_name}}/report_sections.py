"""The report's optional sections (sections.py writes their numbers): bias maps, regions, spectra, ensemble,
stations, and the significance marks of the scorecard. Each view is None when its evaluation did not run, and
the page then leaves the section out.

Numbers come from metrics.json (key leads) and scores/*.csv (every lead) as written, never recomputed here.
"""

from __future__ import annotations

import base64
from pathlib import Path

from . import figures, units
from .scorecard import SIGNIFICANT_MARK, comparison_cell, fmt
from .tables import FORECASTS

REFERENCES = ("persistence", "climatology")


def _f(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _png(path: Path) -> str | None:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.exists() else None


def _in_order(keys, order) -> list[str]:
    """The keys of a metrics.json section (written sorted) in the order evaluate used, then any others."""
    keys = list(keys)
    return [k for k in (order or []) if k in keys] + [k for k in keys if k not in (order or [])]


def bias_maps_view(results: dict) -> list[dict]:
    out = []
    for entry in results["evaluation"].get("bias_maps", []):
        png = _png(results["dir"] / entry["file"])
        if png:
            leads = ", ".join(f"{h} h" for h in entry.get("leads_hours", []))
            out.append({"alt": f"mean error of {entry['channel']} at {leads} ({entry['file']})", "png": png})
    return out


def _region_cells(scores: dict, ch: str, lead: int) -> list[dict]:
    """Model RMSE, its change against each reference, bias and ACC of one region, channel and lead."""
    key = f"{lead}h"
    model = scores["rmse"][ch]["model"].get(key)
    return [
        {"text": fmt(model), "cls": "model", "colour": ""},
        *(comparison_cell("RMSE", model, scores["rmse"][ch][ref].get(key)) for ref in REFERENCES),
        {"text": fmt(scores["bias"][ch]["model"].get(key)), "cls": "", "colour": ""},
        {"text": fmt(scores["acc"][ch]["model"].get(key)), "cls": "", "colour": ""},
    ]


def regions_view(results: dict, leads: list[int]) -> dict | None:
    """A table per headline channel: a row per region, per key lead the model's RMSE, its change against
    persistence and climatology (coloured as the scorecard), bias and ACC."""
    section = (results["metrics"] or {}).get("regions")
    if not section:
        return None
    ev = results["evaluation"]
    names = _in_order(section, ev.get("regions"))
    channels = _in_order(next(iter(section.values()))["rmse"], ev.get("headline"))
    tables = [
        {"channel": ch, "units": units.symbol(ch),
         "rows": [{"region": name, "cells": [c for h in leads for c in _region_cells(section[name], ch, h)]}
                  for name in names]}
        for ch in channels
    ]  # fmt: skip
    return {"leads": leads, "columns": ["RMSE", "vs pers.", "vs clim.", "bias", "ACC"], "tables": tables,
            "skipped": ev.get("regions_skipped") or [], "land_sea": ev.get("land_sea_mask")}  # fmt: skip


def spectra_view(results: dict, headline: list[str]) -> dict | None:
    rows = results["scores"].get("spectra")
    if not rows:
        return None
    metrics = (results["metrics"] or {}).get("spectra", {})
    figures_ = []
    for ch in [c for c in headline if any(r["channel"] == c for r in rows)]:
        mine = [r for r in rows if r["channel"] == ch and int(r["wavenumber"]) > 0]
        points = [{"lead": int(r["lead_hours"]), "wavelength_km": float(r["wavelength_km"]),
                   "forecast": float(r["forecast"]), "truth": float(r["truth"])} for r in mine]  # fmt: skip
        unit = units.pretty(mine[0]["units"]) if mine and mine[0]["units"] else ""
        ratio = metrics.get("energy_ratio", {}).get(ch, {})
        ordered = sorted(ratio.items(), key=lambda kv: int(kv[0].rstrip("h")))
        figures_.append({"channel": ch, "png": figures.spectra_figure(points, ch, unit),
                         "ratio": ", ".join(f"{lead[:-1]} h: {fmt(v)}" for lead, v in ordered)})  # fmt: skip
    ev = results["evaluation"]
    return {"figures": figures_, "band": ev.get("spectra_band"), "k_min": metrics.get("k_min")}


ENSEMBLE_CURVES = ("crps", "ensemble_mean_rmse", "spread", "spread_skill_ratio")


def _rank_histograms(ranks: list[dict] | None, channel: str, leads: list[int]) -> dict[int, list[float]]:
    hist: dict[int, list[float]] = {h: [] for h in leads}
    for r in ranks or []:
        if r["channel"] == channel and int(r["lead_hours"]) in hist:
            hist[int(r["lead_hours"])].append(_f(r["fraction"]) or 0.0)
    return {h: v for h, v in hist.items() if v}


def ensemble_view(results: dict, headline: list[str], leads: list[int]) -> dict | None:
    """Per headline channel: a key-lead table (CRPS, ensemble-mean RMSE beside the deterministic model's, spread,
    spread-skill ratio), the curves against lead and the rank histograms."""
    section = (results["metrics"] or {}).get("ensemble")
    rows, ranks = results["scores"].get("ensemble"), results["scores"].get("rank_histogram")
    if not section or not rows:
        return None
    model_rmse = {(ch, r[0]): r[1] for ch, per in results["table"].items() for r in per.get("model", [])}
    out = []
    for ch in [c for c in headline if c in section["crps"]]:
        curve = [{"lead": int(r["lead_hours"]), **{k: _f(r[k]) for k in ENSEMBLE_CURVES},
                  "model_rmse": model_rmse.get((ch, int(r["lead_hours"])))}
                 for r in rows if r["channel"] == ch]  # fmt: skip
        table = [[f"{h} h", *(fmt(section[k][ch].get(f"{h}h")) for k in ("crps", "ensemble_mean_rmse")),
                  fmt(model_rmse.get((ch, h))),
                  *(fmt(section[k][ch].get(f"{h}h")) for k in ("spread", "spread_skill_ratio"))]
                 for h in leads]  # fmt: skip
        hist = _rank_histograms(ranks, ch, leads)
        out.append({"channel": ch, "units": units.symbol(ch), "table": table,
                    "png": figures.ensemble_figure(curve, ch, units.symbol(ch)),
                    "ranks_png": figures.rank_histogram_figure(hist, ch) if hist else None})  # fmt: skip
    spec = results["evaluation"].get("ensemble") or {}
    return {"members": section["members"], "perturbation": spec.get("perturbation"),
            "checkpoints": spec.get("checkpoints") or [], "channels": out}  # fmt: skip


def _station_cells(section: dict, variable: str, region: str, lead: int) -> list[str]:
    """Model RMSE, persistence RMSE, model MAE, bias, accuracy and the number of observations at one lead."""
    key = f"{lead}h"

    def get(score: str, forecast: str = "model"):
        return section[score][variable][region][forecast].get(key)

    accuracy = get("accuracy")
    return [fmt(get("rmse")), fmt(get("rmse", "persistence")), fmt(get("mae")), fmt(get("bias")),
            "—" if accuracy is None else f"{100 * accuracy:.1f} %", fmt(get("count"))]  # fmt: skip


def stations_view(results: dict, leads: list[int]) -> dict | None:
    """Per station variable: a table by region at the key leads and RMSE / accuracy curves (global stations)."""
    section = (results["metrics"] or {}).get("stations")
    rows = results["scores"].get("stations")
    if not section or not rows:
        return None
    variables = []
    ev = results["evaluation"]
    for v in _in_order(section["rmse"], ev.get("station_variables")):
        by_region = _in_order(section["rmse"][v], ev.get("regions"))
        region = "global" if "global" in by_region else by_region[0]
        mine = [r for r in rows if r["variable"] == v and r["region"] == region]
        threshold = _f(mine[0]["threshold"]) if mine else None
        curves = {f: [(int(r["lead_hours"]), _f(r["rmse"]), _f(r["accuracy"])) for r in mine if r["forecast"] == f]
                  for f in FORECASTS}  # fmt: skip
        table = [{"region": name, "cells": [c for h in leads for c in _station_cells(section, v, name, h)]}
                 for name in by_region]  # fmt: skip
        unit = units.symbol(v)
        variables.append({"variable": v, "units": unit, "threshold": threshold, "rows": table, "curve_region": region,
                          "png": figures.stations_figure(curves, v, unit, threshold)})  # fmt: skip
    return {"n_stations": section["n_stations"], "file": results["evaluation"].get("stations_file"), "leads": leads,
            "columns": ["RMSE", "RMSE pers.", "MAE", "bias", "accuracy", "n"], "variables": variables}  # fmt: skip


def significance_marks(results: dict) -> dict | None:
    """{(metric, channel, reference, lead): entry} for the scorecard (metric as it names them: RMSE, ACC)."""
    section = (results["metrics"] or {}).get("significance")
    if not section:
        return None
    marks = {}
    for score, metric in (("rmse", "RMSE"), ("acc", "ACC")):
        for ch, per_ref in section.get(score, {}).items():
            for ref, per_lead in per_ref.items():
                for lead, entry in per_lead.items():
                    marks[(metric, ch, ref, int(lead.rstrip("h")))] = entry
    return {"marks": marks, "samples": section.get("samples"), "confidence": section.get("confidence"),
            "mark": SIGNIFICANT_MARK}
