"""How results files write numbers and tables: SIGNIFICANT digits, null / empty for undefined, plain CSV.

Metrics files hold numbers only, rounded to SIGNIFICANT digits, so identical reruns give byte-identical files and
platforms agree; a score that is undefined (the ACC of the climatology forecast) is null in JSON and an empty cell
in CSV, never 0.
"""

from __future__ import annotations

import csv
import io
import math

FORECASTS = ("model", "persistence", "climatology")
SIGNIFICANT = 6  # digits kept in metrics files: enough for any comparison, and stable across reruns


def rounded(value: float) -> float | None:
    """Round to SIGNIFICANT digits (so reruns and platforms agree); non-finite -> None (JSON null)."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT}g}") + 0.0  # + 0.0 turns -0.0 into 0.0


def fmt(value: float) -> str:
    """A CSV cell: the rounded number, or empty when undefined."""
    r = rounded(value)
    return "" if r is None else repr(r)


def csv_text(rows: list[list], header: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
