"""One self-contained HTML report of an evaluation: scorecard, curves, maps, training curve, provenance.

    python -m <package>.report --results results/ --out results/report.html

Reads what `evaluate` and `train` wrote in --results (metrics.json, per_lead.csv, evaluation.json, maps/*.png,
provenance.json, train_log.csv); missing pieces are reported as missing in the page, not as an error, except
metrics/per-lead scores, without which there is no report. Images are embedded as base64 PNG, there is no script
and no external resource, so the file can be mailed, archived and opened offline.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from .errors import EvaluationError

FORECASTS = ("model", "persistence", "climatology")
STYLE = {"model": ("#1f4e9c", "-"), "persistence": ("#c0392b", "--"), "climatology": ("#7f8c8d", ":")}

CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d2733; background: #f4f6f8; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #dde3ea; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.sub { color: #556; margin: 2px 0 12px; }
.banner { padding: 8px 12px; border-radius: 4px; margin: 10px 0; }
.banner.dirty { background: #fdecea; border: 1px solid #e0a29c; }
.banner.clean { background: #e8f5e9; border: 1px solid #9ccc9f; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 14px; }
th, td { border: 1px solid #d5dbe1; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #eef2f6; }
td.name, th.name { text-align: left; font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; }
td.model { font-weight: 600; }
td.good { background: #d4edda; } td.bad { background: #f8d7da; }
span.delta { display: block; font-size: 11px; color: #334; }
.legend { font-size: 12px; color: #445; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin: 0 3px 0 10px; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0 14px; }
.kv td { text-align: left; white-space: pre-wrap; font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace;
         font-size: 12px; word-break: break-all; }
.kv { width: 100%; } .kv th { text-align: left; width: 170px; }
.overview td { font-family: inherit; font-size: 13px; word-break: normal; }
details { margin: 8px 0; } summary { cursor: pointer; color: #1f4e9c; }
pre { background: #f6f8fa; padding: 10px; font-size: 11px; overflow-x: auto; max-height: 420px; }
.missing { color: #a05a00; font-style: italic; }
"""


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
    return {
        "dir": results,
        "metrics": _read_json(results / "metrics.json"),
        "table": table,
        "evaluation": _read_json(results / "evaluation.json") or {},
        "provenance": _read_json(results / "provenance.json"),
        "train_log": _read_csv(results / "train_log.csv"),
    }


# ----------------------------------------------------------------------------------------------------------------
# Figures


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def curves_figure(table: dict, channel: str) -> str:
    """RMSE and ACC vs lead for one channel, the three forecasts as lines (like the WB2 headline figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
    for ax, (col, label) in zip(axes, ((1, "RMSE"), (2, "ACC")), strict=True):
        for f in FORECASTS:
            rows = [r for r in table[channel].get(f, []) if r[col] is not None]
            if not rows:
                continue
            color, dash = STYLE[f]
            ax.plot([r[0] for r in rows], [r[col] for r in rows], dash, color=color, marker="o", ms=3, label=f)
        ax.set_xlabel("lead time (h)")
        ax.set_ylabel(label)
        ax.set_title(f"{channel}: {label}")
        ax.grid(alpha=0.3)
        leads = [r[0] for r in table[channel].get("model", [])]
        if leads:
            ax.set_xlim(0, max(leads) * 1.02)
    axes[0].set_ylim(bottom=0)
    axes[0].legend(frameon=False)
    return _png(fig)


def training_figure(log: list[dict[str, str]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [
        ("loss", "training loss", True),
        ("lr", "learning rate", False),
        ("grad_norm", "gradient norm", True),
        ("samples_per_s", "samples / s", False),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 2.9), constrained_layout=True)
    steps = [_float(r.get("step")) for r in log]
    for ax, (col, label, logy) in zip(axes, columns, strict=True):
        pts = [
            (s, _float(r.get(col)))
            for s, r in zip(steps, log, strict=True)
            if s is not None and _float(r.get(col)) is not None
        ]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#1f4e9c", lw=1.2)
            if logy and all(p[1] > 0 for p in pts):
                ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _png(fig)


# ----------------------------------------------------------------------------------------------------------------
# HTML pieces


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.{digits}g}"


def scorecard(results: dict) -> str:
    """RMSE and ACC tables: rows channels, per key lead the model and both references, references coloured
    green where the model beats them and red where it does not."""
    table, ev = results["table"], results["evaluation"]
    channels = ev.get("channels") or sorted(table)
    headline = [c for c in ev.get("headline", []) if c in table]
    channels = headline + [c for c in channels if c not in headline and c in table]
    leads = ev.get("key_leads_hours") or sorted({r[0] for r in table[channels[0]]["model"]})
    parts = []
    for col, metric, lower_better in ((1, "RMSE", True), (2, "ACC", False)):
        head1 = "".join(f'<th colspan="3">{h} h</th>' for h in leads)
        head2 = "<th>model</th><th>persistence</th><th>climatology</th>" * len(leads)
        rows = []
        for ch in channels:
            values = {f: {r[0]: r[col] for r in table[ch].get(f, [])} for f in FORECASTS}
            cells = [f'<td class="name">{html.escape(ch)}</td>']
            for h in leads:
                m = values["model"].get(h)
                cells.append(f'<td class="model">{_fmt(m)}</td>')
                for ref in ("persistence", "climatology"):
                    r = values[ref].get(h)
                    if m is None or r is None:
                        cells.append(f"<td>{_fmt(r)}</td>")
                        continue
                    better = m < r if lower_better else m > r
                    if lower_better:
                        delta = f"model {100.0 * (m - r) / r:+.1f}%" if r else ""
                    else:
                        delta = f"model {m - r:+.3f}"
                    cls = "good" if better else "bad"
                    cells.append(f'<td class="{cls}">{_fmt(r)}<span class="delta">{delta}</span></td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        parts.append(
            f"<h3>{metric} ({'physical units; lower' if lower_better else 'anomaly correlation; higher'} "
            "is better)</h3>"
            f'<table class="scorecard" id="scorecard-{metric.lower()}"><thead><tr><th class="name" rowspan="2">'
            f"channel</th>{head1}</tr><tr>{head2}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    legend = (
        '<p class="legend"><span class="swatch" style="background:#d4edda"></span>the model beats this reference'
        '<span class="swatch" style="background:#f8d7da"></span>it does not. RMSE: model relative to the reference '
        "in percent; ACC: model minus reference. Climatology has no anomaly, so its ACC is 0 by definition.</p>"
    )
    return "".join(parts) + legend


def _short(value: Any, n: int = 12) -> str:
    return str(value)[:n] if value else "–"


def _kv_rows(stamp: dict | None) -> dict[str, str]:
    """Flatten the interesting parts of a provenance stamp into label -> text."""
    if not stamp:
        return {}
    versions = stamp.get("versions") or {}
    lock = stamp.get("lock") or versions.get("lock") or {}  # older stamps nest packages and lock under versions
    versions = versions.get("packages", versions)
    hw = stamp.get("hardware") or {}
    gpu = hw.get("gpu") or {}
    inputs = stamp.get("inputs") or {}
    dirty = stamp.get("dirty")
    mem = hw.get("memory_bytes")
    return {
        "commit": str(stamp.get("commit", "–")),
        "branch": str(stamp.get("branch") or "–"),
        "dirty": {True: "YES: uncommitted code (see diff sha256)", False: "no (clean)"}.get(dirty, "unknown"),
        "changed files": "\n".join(stamp.get("changed") or []) or "–",
        "diff sha256": str(stamp.get("diff_sha256") or "–"),
        "code sha256": str(stamp.get("code_sha256") or "–"),
        "params sha256": str(stamp.get("params_sha256") or "–"),
        "seed": str(stamp.get("seed")),
        "data / inputs": "\n".join(
            f"{k}: {v.get('md5') if isinstance(v, dict) else v}"
            + (f" ({v.get('from')})" if isinstance(v, dict) else "")
            for k, v in sorted(inputs.items())
        )
        or "–",
        "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if isinstance(v, str)) or "–",
        "lock file": f"{lock.get('path') or '–'} sha256 {_short(lock.get('sha256'))}, "
        f"{len(lock.get('mismatches') or {})} mismatches"
        if lock.get("path")
        else "none found",
        "python": str(stamp.get("python", "–")),
        "platform": str(stamp.get("platform", "–")),
        "hardware": (
            f"{hw.get('cpu', '–')}, {hw.get('cpu_usable', '?')}/{hw.get('cpu_count', '?')} cores"
            + (f", {mem / 2**30:.0f} GiB" if mem else "")
            + (f", GPU {gpu.get('count')} x {', '.join(gpu.get('names') or [])}" if gpu.get("count") else ", no GPU")
        )
        if hw
        else "–",
        "host": str(hw.get("hostname", "–")),
        "job": str(stamp.get("job_id") or "–")
        + (f" ({(stamp.get('job') or {}).get('scheduler')})" if (stamp.get("job") or {}).get("scheduler") else ""),
        "world size": str(stamp.get("world_size", "–")),
        "command": str(stamp.get("command", "–")),
        "time (UTC)": str(stamp.get("time", "–")),
    }


def provenance_block(results: dict) -> str:
    evaluation = results["provenance"]
    trained = results["evaluation"].get("model_provenance")
    a, b = _kv_rows(evaluation), _kv_rows(trained)
    labels = list(a or b)
    if not labels:
        return '<p class="missing">No provenance found (results/provenance.json, model meta). </p>'
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(a.get(k, '–'))}</td><td>{html.escape(b.get(k, '–'))}</td></tr>"
        for k in labels
    )
    raw = "".join(
        f"<details><summary>{title} (raw JSON)</summary><pre>{html.escape(json.dumps(obj, indent=2, sort_keys=True))}"
        f"</pre></details>"
        for title, obj in (("evaluation provenance.json", evaluation), ("training provenance (model.pt)", trained))
        if obj
    )
    return (
        '<table class="kv"><thead><tr><th>field</th><th>this evaluation</th><th>training run of the model</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>{raw}"
    )


def build_html(results: dict) -> str:
    ev, metrics, stamp = results["evaluation"], results["metrics"], results["provenance"] or {}
    table = results["table"]
    headline = [c for c in ev.get("headline", []) if c in table] or sorted(table)[:3]
    model = ev.get("model") or {}
    model_desc = ", ".join(f"{k}={v}" for k, v in sorted(model.items())) or "unknown model"
    dirty = stamp.get("dirty")
    commit = _short(stamp.get("commit"), 10)
    banner = (
        f'<div class="banner dirty"><b>Dirty:</b> evaluated on uncommitted code at {commit} '
        f"(diff sha256 {_short(stamp.get('diff_sha256'))}). These results are not reproducible from a commit.</div>"
        if dirty
        else f'<div class="banner clean">Clean: code at commit <b>{commit}</b>, params sha256 '
        f"{_short(stamp.get('params_sha256'))}.</div>"
        if dirty is False
        else '<div class="banner dirty">No git commit recorded for this evaluation.</div>'
    )
    span = " .. ".join
    overview = {
        "model": f"{model_desc}; trained {ev.get('model_step', '?')} steps",
        "commit": f"{stamp.get('commit', 'unknown')}" + (" (dirty)" if dirty else ""),
        "test forecasts": f"{ev.get('n_inits', metrics.get('n_inits', '?'))} initial times every "
        f"{ev.get('init_every_hours', '?')} h, {span(ev.get('init_times', []))} "
        f"(test split {span(ev.get('test_split', []))})",
        "lead times": f"{ev.get('lead_hours', '?')} h steps up to {max(ev.get('leads_hours') or [0])} h",
        "climatology": f"train split {span(ev.get('train_split', []))}, day of year x hour of day, "
        f"+-{ev.get('climatology_window_days', '?')} days window",
        "channels": ", ".join(ev.get("channels") or sorted(table)),
    }
    summary = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in overview.items())
    curves = "".join(
        f"<h3>{html.escape(ch)}</h3>" + _img(curves_figure(table, ch), f"RMSE and ACC of {ch}") for ch in headline
    )
    maps = []
    for entry in ev.get("maps", []):
        path = results["dir"] / entry["file"]
        if path.exists():
            b64 = base64.b64encode(path.read_bytes()).decode("ascii")
            maps.append(_img(b64, f"{entry['channel']}, lead {entry['lead_hours']} h ({entry['file']})"))
    maps_html = (
        f'<p class="sub">From the first test initial time ({html.escape(str(ev.get("map_init", "?")))}); truth and '
        "forecast share a colour scale; the error is forecast minus truth.</p>" + "".join(maps)
        if maps
        else '<p class="missing">No maps (results/maps/) were written.</p>'
    )
    log = results["train_log"]
    training = (
        _img(training_figure(log), "training curves") + f'<p class="sub">{len(log)} log rows, last step '
        f"{html.escape(str(log[-1].get('step', '?')))}, final loss {_fmt(_float(log[-1].get('loss')))}.</p>"
        if log
        else '<p class="missing">No results/train_log.csv: the training curve is not shown.</p>'
    )
    title = "Forecast evaluation report"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{CSS}</style></head>
<body><main>
<h1>{title}</h1>
<table class="kv overview" id="overview"><tbody>{summary}</tbody></table>
{banner}
<section id="scorecard"><h2>Scorecard</h2>
<p class="sub">Scores as in WeatherBench2: latitude-weighted (cell area) spatial means per initial time, then the
mean over initial times; RMSE is the square root of the time-mean MSE; ACC against the climatology.</p>
{scorecard(results)}</section>
<section id="curves"><h2>Scores by lead time</h2>{curves}</section>
<section id="maps"><h2>Maps</h2>{maps_html}</section>
<section id="training"><h2>Training</h2>{training}</section>
<section id="provenance"><h2>Provenance</h2>{provenance_block(results)}</section>
</main></body></html>
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="report", description=__doc__.split("\n")[0])
    p.add_argument("--results", default="results", help="directory written by evaluate (default: results/)")
    p.add_argument("--out", default=None, help="HTML file (default: <results>/report.html)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    results = load_results(Path(args.results))
    out = Path(args.out) if args.out else Path(args.results) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_html(results), encoding="utf-8")
    print(f"report: wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
