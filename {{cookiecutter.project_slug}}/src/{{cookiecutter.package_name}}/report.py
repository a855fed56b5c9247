"""One self-contained HTML report of an evaluation: scorecard, curves, maps, training curve, provenance, and the
sections of the optional evaluations that ran (report_sections.py): bias maps, regions, spectra, ensemble,
stations, significance marks in the scorecard.

    python -m <package>.report --results results/ --out results/report.html

Reads what `evaluate` and `train` wrote in --results (metrics.json, per_lead.csv, evaluation.json, maps/*.png,
scores/*.csv, provenance.json, train_log.csv); missing pieces are reported as missing in the page, not as an error,
except metrics/per-lead scores, without which there is no report. The page is the Jinja2 template
templates/report.html.j2 (autoescaped); images are embedded as base64 PNG, there is no script and no external
resource, so the file can be mailed, archived and opened offline.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
from pathlib import Path
from typing import Any

from . import cliargs, figures, report_sections, units
from .errors import EvaluationError
from .fileio import atomic_path
from .scorecard import UNDEFINED, colour, fmt, scorecard

TEMPLATE = "report.html.j2"


# ----------------------------------------------------------------------------------------------------------------
# Inputs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise EvaluationError(f"{path}: not valid JSON ({exc}). Fix: re-run the step that writes it.") from None


def _read_csv(path: Path) -> list[dict[str, str]] | None:
    if not path.exists():
        return None
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def load_results(results: Path) -> dict:
    results = Path(results)
    per_lead = _read_csv(results / "per_lead.csv")
    if per_lead is None or not (results / "metrics.json").exists():
        raise EvaluationError(
            f"{results}: no metrics.json / per_lead.csv. Fix: run the evaluate step first (or pass --results DIR)."
        )
    # table[channel][forecast] = [(lead, rmse, acc, bias)] in lead order
    table: dict[str, dict[str, list[tuple]]] = {}
    for row in per_lead:
        entry = (int(row["lead_hours"]), _float(row["rmse"]), _float(row["acc"]), _float(row["bias"]))
        table.setdefault(row["channel"], {}).setdefault(row["forecast"], []).append(entry)
    for per_forecast in table.values():
        for rows in per_forecast.values():
            rows.sort()
    log = _read_csv(results / "train_log.csv")
    scores = {p.stem: _read_csv(p) for p in sorted((results / "scores").glob("*.csv"))}
    return {
        "dir": results,
        "metrics": _read_json(results / "metrics.json"),
        "table": table,
        "evaluation": _read_json(results / "evaluation.json") or {},
        "provenance": _read_json(results / "provenance.json"),
        "scores": scores,
        "train_log": None if log is None else [{k: _float(v) for k, v in row.items()} for row in log],
    }


# ----------------------------------------------------------------------------------------------------------------
# What the page shows


def _ordered_channels(table: dict, ev: dict) -> list[str]:
    """Headline channels first, then the others in the evaluation's order."""
    headline = [c for c in ev.get("headline", []) if c in table]
    channels = ev.get("channels") or sorted(table)
    return headline + [c for c in channels if c not in headline and c in table]


def _short(value: Any, n: int = 12) -> str:
    return str(value)[:n] if value else "–"


def _hardware(hw: dict) -> str:
    if not hw:
        return "–"
    gpu, mem = hw.get("gpu") or {}, hw.get("memory_bytes")
    return (
        f"{hw.get('cpu', '–')}, {hw.get('cpu_usable', '?')}/{hw.get('cpu_count', '?')} cores"
        + (f", {mem / 2**30:.0f} GiB" if mem else "")
        + (f", GPU {gpu.get('count')} x {', '.join(gpu.get('names') or [])}" if gpu.get("count") else ", no GPU")
    )


DIRTY = {True: "YES: uncommitted code (see diff sha256)", False: "no (clean)"}


def _source(found: dict | None) -> str:
    """The stamp's "source": what data.source was when the shards were made, and its fingerprint."""
    if not found:
        return "not recorded"
    source = found.get("source")
    label = ", ".join(map(str, source)) if isinstance(source, list) else str(source or "?")
    files = f", {found['files']} files" if found.get("files") else ""
    return f"{label} ({found.get('kind', '?')}{files}), fingerprint sha256 {found.get('sha256') or '–'}"


def stamp_fields(stamp: dict | None) -> dict[str, str]:
    """The parts of a provenance stamp worth reading, as label -> text."""
    if not stamp:
        return {}
    lock, job = stamp.get("lock") or {}, stamp.get("job") or {}
    inputs, versions = stamp.get("inputs") or {}, stamp.get("versions") or {}
    return {
        "commit": str(stamp.get("commit", "–")),
        "branch": str(stamp.get("branch") or "–"),
        "dirty": DIRTY.get(stamp.get("dirty"), "unknown"),
        "changed files": "\n".join(stamp.get("changed") or []) or "–",
        "diff sha256": str(stamp.get("diff_sha256") or "–"),
        "code sha256": str(stamp.get("code_sha256") or "–"),
        "params sha256": str(stamp.get("params_sha256") or "–"),
        "seed": str(stamp.get("seed")),
        "data source": _source(stamp.get("source")),
        "data / inputs": "\n".join(
            f"{k}: {v.get('md5')} ({v.get('from')})" if isinstance(v, dict) else f"{k}: {v}"
            for k, v in sorted(inputs.items())
        ) or "–",
        "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if isinstance(v, str)) or "–",
        "lock file": f"{lock['path']} sha256 {_short(lock.get('sha256'))}, "
        f"{len(lock.get('mismatches') or {})} mismatches"
        if lock.get("path")
        else "none found",
        "python": str(stamp.get("python", "–")),
        "platform": str(stamp.get("platform", "–")),
        "hardware": _hardware(stamp.get("hardware") or {}),
        "host": str((stamp.get("hardware") or {}).get("hostname", "–")),
        "job": f"{job['id']} ({job.get('scheduler')})" if job.get("id") else "–",
        "world size": str(stamp.get("world_size", "–")),
        "command": str(stamp.get("command", "–")),
        "time (UTC)": str(stamp.get("time", "–")),
    }


def provenance_view(results: dict) -> dict | None:
    """This evaluation's stamp beside the training stamp of the model it scored; None if there is neither."""
    evaluation, trained = results["provenance"], results["evaluation"].get("model_provenance")
    a, b = stamp_fields(evaluation), stamp_fields(trained)
    if not (a or b):
        return None
    rows = [(k, a.get(k, "–"), b.get(k, "–")) for k in (a or b)]
    raw = [
        (title, json.dumps(obj, indent=2, sort_keys=True))
        for title, obj in (("evaluation provenance.json", evaluation), ("training provenance (model.pt)", trained))
        if obj
    ]
    missing = [] if evaluation else ["No results/provenance.json: the provenance of this evaluation is unknown."]
    return {"rows": rows, "raw": raw, "missing": missing}


def climatology_text(made_from: dict) -> str:
    """What the ACC reference is, from evaluation.json's "climatology" (climatology.provenance)."""
    if made_from.get("climatology", "computed") != "computed":
        return f"external store {made_from['climatology']}, day of year x hour of day"
    shape, days = made_from.get("window_shape", "?"), made_from.get("window_days", "?")
    return (f"train split {' .. '.join(made_from.get('train', []))}, day of year x hour of day, {shape} window of "
            f"+-{days} days")


def overview(results: dict) -> list[tuple[str, str]]:
    ev, metrics, stamp = results["evaluation"], results["metrics"], results["provenance"] or {}
    model = ev.get("model") or {}
    span = " .. ".join
    return [
        ("model", f"{', '.join(f'{k}={v}' for k, v in sorted(model.items())) or 'unknown model'}; "
                  f"trained {ev.get('model_step', '?')} steps"),
        ("commit", f"{stamp.get('commit', 'unknown')}" + (" (dirty)" if stamp.get("dirty") else "")),
        ("test forecasts", f"{ev.get('n_inits', metrics.get('n_inits', '?'))} initial times every "
                           f"{ev.get('init_every_hours', '?')} h, {span(ev.get('init_times', []))} "
                           f"(test split {span(ev.get('test_split', []))})"),
        ("lead times", f"{ev.get('lead_hours', '?')} h steps up to {max(ev.get('leads_hours') or [0])} h"),
        ("climatology", climatology_text(ev.get("climatology") or {})),
        ("channels", ", ".join(ev.get("channels") or sorted(results["table"]))),
    ]  # fmt: skip


def context(results: dict) -> dict:
    """Everything the template shows, as plain values (the template only lays them out)."""
    ev, table, stamp = results["evaluation"], results["table"], results["provenance"] or {}
    headline = [c for c in ev.get("headline", []) if c in table] or sorted(table)[:3]
    channels = _ordered_channels(table, ev)
    leads = ev.get("key_leads_hours") or sorted({r[0] for r in table[channels[0]]["model"]})
    maps = []
    for entry in ev.get("maps", []):
        path = results["dir"] / entry["file"]
        if path.exists():
            alt = f"{entry['channel']}, lead {entry['lead_hours']} h ({entry['file']})"
            maps.append({"alt": alt, "png": base64.b64encode(path.read_bytes()).decode("ascii")})
    log = results["train_log"]
    significance = report_sections.significance_marks(results)
    return {
        "title": "Forecast evaluation report",
        "overview": overview(results),
        "dirty": stamp.get("dirty"),
        "commit": _short(stamp.get("commit"), 10),
        "diff_sha256": _short(stamp.get("diff_sha256")),
        "params_sha256": _short(stamp.get("params_sha256")),
        "scorecard": scorecard(table, channels, leads, significance and significance["marks"]),
        "significance": significance and {k: v for k, v in significance.items() if k != "marks"},
        "bias_maps": report_sections.bias_maps_view(results),
        "regions": report_sections.regions_view(results, leads),
        "spectra": report_sections.spectra_view(results, headline),
        "ensemble": report_sections.ensemble_view(results, headline, leads),
        "stations": report_sections.stations_view(results, leads),
        "undefined": UNDEFINED,
        "swatches": {"better": colour("RMSE", -25.0), "worse": colour("RMSE", 25.0)},
        "curves": [{"channel": ch, "png": figures.curves_figure(table, ch, units.symbol(ch))} for ch in headline],
        "maps": maps,
        "map_init": str(ev.get("map_init", "?")),
        "training": {
            "png": figures.training_figure(log),
            "rows": len(log),
            "last_step": fmt(log[-1].get("step")),
            "final_loss": fmt(log[-1].get("loss")),
        } if log else None,
        "provenance": provenance_view(results),
    }  # fmt: skip


def build_html(results: dict) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a name the template expects but the context lacks is an error
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(TEMPLATE).render(**context(results))


def _parser() -> argparse.ArgumentParser:
    p = cliargs.parser("report", __doc__)
    p.add_argument("--results", default="results", help="directory written by evaluate (default: results/)")
    p.add_argument("--out", default=None, help="HTML file (default: <results>/report.html)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    results = load_results(Path(args.results))
    out = Path(args.out) if args.out else Path(args.results) / "report.html"
    page = build_html(results)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    print(f"report: wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
