"""The report's scorecard: model against persistence and climatology at the key leads, honestly.

Three tables (RMSE, ACC, bias), a row per channel with its units. RMSE and ACC tables put a comparison cell after
each reference: RMSE the model's RMSE relative to the reference's in percent (negative = model better), ACC the
model's ACC minus the reference's (positive = model better). Only comparison cells are coloured, and their colour
is a function of the number they show: green when it says the model is better, red when worse, the deeper the
larger the difference (full colour at FULL_COLOUR). An undefined score (the climatology's ACC: it has no anomaly;
anything missing or NaN) shows as UNDEFINED, gets no colour, and never counts as beaten.

Significance (when evaluate computed it, metrics.json `significance`): a comparison cell whose paired
block-bootstrap interval of model - reference excludes zero carries SIGNIFICANT_MARK after its number, and every
cell with an interval shows it as a tooltip; the counts say how many differences are significant.
"""

from __future__ import annotations

from . import units

FORECASTS = ("model", "persistence", "climatology")
REFERENCES = ("persistence", "climatology")
SHORT = {"persistence": "pers.", "climatology": "clim."}  # column headers (the legend spells them out)
UNDEFINED = "—"
SIGNIFICANT_MARK = "*"
# metric -> (column in the per-lead rows, caption, the difference that gets the full colour)
METRICS = {
    "RMSE": (1, "root-mean-square error in the channel's units; lower is better", 50.0),  # percent
    "ACC": (2, "anomaly correlation coefficient, dimensionless; higher is better", 0.2),  # ACC points
    "Bias": (3, "mean error (forecast minus truth) in the channel's units; closer to 0 is better", None),
}
GOOD, BAD, WHITE = (46, 160, 67), (207, 34, 46), (255, 255, 255)


def fmt(value: float | None, digits: int = 4) -> str:
    """A score as the page prints it; UNDEFINED for None."""
    if value is None:
        return UNDEFINED
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.{digits}g}"


def difference(metric: str, model: float | None, ref: float | None) -> float | None:
    """What a comparison cell shows: RMSE change in percent of the reference, or ACC points; None if undefined."""
    if model is None or ref is None:
        return None
    if metric == "RMSE":
        return 100.0 * (model - ref) / ref if ref > 0 else None
    return model - ref


def colour(metric: str, diff: float | None) -> str:
    """Background of a comparison cell, from the difference it shows ('' = none: undefined or no difference)."""
    if diff is None or diff == 0:
        return ""
    better = diff < 0 if metric == "RMSE" else diff > 0
    strength = 0.15 + 0.65 * min(abs(diff) / METRICS[metric][2], 1.0)
    rgb = [round(w + strength * (c - w)) for w, c in zip(WHITE, GOOD if better else BAD, strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def comparison_cell(metric: str, model: float | None, ref: float | None, interval: dict | None = None) -> dict:
    """A comparison cell; `interval` (a metrics.json significance entry) adds the mark and the tooltip."""
    diff = difference(metric, model, ref)
    if diff is None:
        return {"text": UNDEFINED, "cls": "undefined", "colour": ""}
    text = f"{diff:+.1f} %" if metric == "RMSE" else f"{diff:+.3f}"
    better = diff < 0 if metric == "RMSE" else diff > 0
    cell = {"text": text, "cls": "good" if better else "even" if diff == 0 else "bad", "colour": colour(metric, diff)}
    if interval is not None:
        significant = bool(interval.get("significant"))
        cell["significant"] = significant
        cell["text"] += SIGNIFICANT_MARK if significant else ""
        cell["title"] = (f"model - reference {fmt(interval.get('difference'))}, interval [{fmt(interval.get('low'))}, "
                         f"{fmt(interval.get('high'))}]: " + ("significant" if significant else "not significant"))
    return cell


def _count(rows: list[dict], ref: str) -> str:
    cells = [c for row in rows for c in row["cells"] if c.get("ref") == ref]  # the comparison cells
    wins = sum(c["cls"] == "good" for c in cells)
    undefined = sum(c["cls"] == "undefined" for c in cells)
    note = f"; {undefined} undefined ({UNDEFINED}), not counted" if undefined else ""
    tested = [c for c in cells if "significant" in c]
    if tested:
        good = sum(c["significant"] and c["cls"] == "good" for c in tested)
        bad = sum(c["significant"] and c["cls"] == "bad" for c in tested)
        note += f"; significant ({SIGNIFICANT_MARK}): {good} better, {bad} worse"
    return f"better than {ref} in {wins} of {len(cells) - undefined} scores{note}"


def table(metric: str, per_lead: dict, channels: list[str], leads: list[int], marks: dict | None = None) -> dict:
    """One table: per_lead[channel][forecast] = [(lead, rmse, acc, bias)]; channels and key leads in order.
    `marks[(metric, channel, reference, lead)]` = a significance entry (report_sections.significance_marks)."""
    col, caption, full = METRICS[metric]
    compare = full is not None
    marks = marks or {}
    rows = []
    for ch in channels:
        values = {f: {r[0]: r[col] for r in per_lead[ch].get(f, [])} for f in FORECASTS}
        cells = []
        for h in leads:
            m = values["model"].get(h)
            cells.append({"text": fmt(m), "cls": "model", "colour": ""})
            for ref in REFERENCES:
                cells.append({"text": fmt(values[ref].get(h)), "cls": "", "colour": ""})
                if compare:
                    interval = marks.get((metric, ch, ref, h))
                    cells.append({**comparison_cell(metric, m, values[ref].get(h), interval), "ref": ref})
        rows.append({"channel": ch, "units": "1" if metric == "ACC" else units.symbol(ch), "cells": cells})
    per_ref = [[SHORT[ref], f"vs {SHORT[ref]}"] if compare else [SHORT[ref]] for ref in REFERENCES]
    columns = ["model"] + [c for pair in per_ref for c in pair]
    return {
        "metric": metric,
        "caption": f"{metric}: {caption}",
        "leads": leads,
        "columns": columns,
        "rows": rows,
        "counts": [_count(rows, ref) for ref in REFERENCES] if compare else [],
    }


def scorecard(per_lead: dict, channels: list[str], leads: list[int], marks: dict | None = None) -> list[dict]:
    """The three tables, in the order the page shows them."""
    return [table(metric, per_lead, channels, leads, marks) for metric in METRICS]
