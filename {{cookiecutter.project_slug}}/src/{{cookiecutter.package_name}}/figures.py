"""Every figure of an evaluation: maps (PNG files in results/maps) and the report's curves (PNG, base64-inlined).

matplotlib with the Agg backend (no display needed); PNGs carry no 'Software' stamp, so identical inputs give
identical bytes.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

FORECASTS = ("model", "persistence", "climatology")
STYLE = {"model": ("#1f4e9c", "-"), "persistence": ("#c0392b", "--"), "climatology": ("#7f8c8d", ":")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig) -> str:
    """The figure as base64 PNG (for an inline <img>); closes it."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def draw_map(path: Path, latitude, longitude, truth, forecast, channel: str, lead: int, init: str, unit: str) -> None:
    """Truth | forecast | error panels on plain lat/lon axes (no coastlines: no map data to download); colour bars
    in `unit`."""
    plt = _pyplot()
    error = forecast - truth
    lo, hi = float(min(truth.min(), forecast.min())), float(max(truth.max(), forecast.max()))
    emax = float(np.abs(error).max()) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.4), constrained_layout=True)
    panels = (
        ("truth", truth, "viridis", lo, hi),
        ("forecast", forecast, "viridis", lo, hi),
        ("forecast - truth", error, "RdBu_r", -emax, emax),
    )
    for ax, (title, field_, cmap, vmin, vmax) in zip(axes, panels, strict=True):
        mesh = ax.pcolormesh(longitude, latitude, field_, cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest")
        ax.set_title(title)
        ax.set_xlabel("longitude (deg E)")
        ax.set_aspect("equal")
        ax.set_xlim(float(longitude[0]), float(longitude[-1]))
        ax.set_ylim(-90, 90)
        ax.set_yticks([-90, -45, 0, 45, 90])
        ax.set_xticks([0, 90, 180, 270, 360])
        fig.colorbar(mesh, ax=ax, shrink=0.8, label=unit)
    axes[0].set_ylabel("latitude (deg N)")
    fig.suptitle(f"{channel}, lead {lead} h, initialized {init}")
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def curves_figure(table: dict, channel: str, unit: str) -> str:
    """RMSE, ACC and bias vs lead for one channel, the three forecasts as lines (like the WB2 headline figures).

    `table[channel][forecast]` = [(lead_hours, rmse, acc, bias)] in lead order (None where undefined: not drawn).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.4), constrained_layout=True)
    panels = ((1, "RMSE", f"RMSE ({unit})"), (2, "ACC", "ACC (dimensionless)"), (3, "bias", f"bias ({unit})"))
    leads = [r[0] for r in table[channel].get("model", [])]
    for ax, (col, title, ylabel) in zip(axes, panels, strict=True):
        for f in FORECASTS:
            rows = [r for r in table[channel].get(f, []) if r[col] is not None]
            if rows:
                color, dash = STYLE[f]
                ax.plot([r[0] for r in rows], [r[col] for r in rows], dash, color=color, marker="o", ms=3, label=f)
        ax.set_xlabel("lead time (h)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{channel}: {title}")
        ax.grid(alpha=0.3)
        if leads:
            ax.set_xlim(0, max(leads) * 1.02)
    axes[0].set_ylim(bottom=0)
    axes[2].axhline(0.0, color="#333", lw=0.8)
    axes[0].legend(frameon=False)
    return png_base64(fig)


def training_figure(log: list[dict[str, float | None]]) -> str:
    """Loss, learning rate, gradient norm and throughput against the optimizer step (rows of train_log.csv)."""
    plt = _pyplot()
    columns = [  # column, title, y label (units), log scale
        ("loss", "training loss", "loss (normalized units)", True),
        ("lr", "learning rate", "learning rate", False),
        ("grad_norm", "gradient norm", "norm (normalized units)", True),
        ("samples_per_s", "throughput", "samples s⁻¹", False),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 2.9), constrained_layout=True)
    for ax, (col, label, ylabel, logy) in zip(axes, columns, strict=True):
        pts = [(r["step"], r[col]) for r in log if r.get("step") is not None and r.get(col) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#1f4e9c", lw=1.2)
            if logy and all(p[1] > 0 for p in pts):
                ax.set_yscale("log")
        ax.set_title(label)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    return png_base64(fig)


def draw_bias_maps(path: Path, latitude, longitude, fields: dict[int, np.ndarray], channel: str, unit: str,
                   n_inits: int) -> None:  # fmt: skip
    """One panel per lead of the time-mean error (forecast - truth), on one symmetric colour scale in `unit`."""
    plt = _pyplot()
    leads = sorted(fields)
    emax = max(float(np.abs(fields[h]).max()) for h in leads) or 1.0
    fig, axes = plt.subplots(1, len(leads), figsize=(4.6 * len(leads) + 0.8, 3.2), constrained_layout=True,
                             squeeze=False)  # fmt: skip
    for ax, h in zip(axes[0], leads, strict=True):
        mesh = ax.pcolormesh(longitude, latitude, fields[h], cmap="RdBu_r", vmin=-emax, vmax=emax, shading="nearest")
        ax.set_title(f"lead {h} h")
        ax.set_xlabel("longitude (deg E)")
        ax.set_aspect("equal")
        ax.set_ylim(-90, 90)
        ax.set_yticks([-90, -45, 0, 45, 90])
        ax.set_xticks([0, 90, 180, 270, 360])
    axes[0][0].set_ylabel("latitude (deg N)")
    fig.colorbar(mesh, ax=list(axes[0]), shrink=0.8, label=f"mean error ({unit})")
    fig.suptitle(f"{channel}: mean of forecast - truth over {n_inits} initial times")
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


LEAD_COLOURS = ("#1f4e9c", "#2e8b57", "#c0392b", "#8e44ad", "#d35400", "#7f8c8d")


def spectra_figure(rows: list[dict], channel: str, energy_unit: str) -> str:
    """Zonal energy spectra of forecast (solid) and truth (dashed) against wavelength, log-log, one colour per lead.

    rows: {"lead", "wavelength_km", "forecast", "truth"} with wavenumber > 0 (k = 0 has no wavelength)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.2), constrained_layout=True)
    for i, lead in enumerate(sorted({r["lead"] for r in rows})):
        pts = sorted((r for r in rows if r["lead"] == lead), key=lambda r: -r["wavelength_km"])
        colour = LEAD_COLOURS[i % len(LEAD_COLOURS)]
        x = [r["wavelength_km"] for r in pts]
        ax.loglog(x, [r["truth"] for r in pts], "--", color=colour, lw=1.2, label=f"truth, {lead} h")
        ax.loglog(x, [r["forecast"] for r in pts], "-", color=colour, lw=1.6, label=f"model, {lead} h")
    ax.invert_xaxis()  # large scales left, small scales right, as WB2 plots them
    ax.set_xlabel("wavelength (km)")
    ax.set_ylabel(f"energy ({energy_unit or 'units?'})")
    ax.set_title(f"{channel}: zonal energy spectrum")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8)
    return png_base64(fig)


def ensemble_figure(rows: list[dict], channel: str, unit: str) -> str:
    """CRPS, ensemble-mean RMSE against the deterministic RMSE, spread, and spread-skill ratio against lead.

    rows: {"lead", "crps", "ensemble_mean_rmse", "spread", "spread_skill_ratio", "model_rmse"} in lead order."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.4), constrained_layout=True)
    leads = [r["lead"] for r in rows]
    axes[0].plot(leads, [r["crps"] for r in rows], "-o", ms=3, color="#1f4e9c", label="CRPS (fair)")
    axes[0].set_ylabel(f"CRPS ({unit})")
    axes[1].plot(leads, [r["ensemble_mean_rmse"] for r in rows], "-o", ms=3, color="#1f4e9c", label="ensemble mean")
    axes[1].plot(leads, [r["model_rmse"] for r in rows], "--", color="#c0392b", label="deterministic model")
    axes[1].plot(leads, [r["spread"] for r in rows], ":", color="#2e8b57", label="spread")
    axes[1].set_ylabel(f"RMSE / spread ({unit})")
    axes[2].plot(leads, [r["spread_skill_ratio"] for r in rows], "-o", ms=3, color="#1f4e9c")
    axes[2].axhline(1.0, color="#333", lw=0.8)
    axes[2].set_ylabel("spread-skill ratio (dimensionless)")
    for ax, title in zip(axes, ("CRPS", "RMSE and spread", "spread-skill ratio"), strict=True):
        ax.set_title(f"{channel}: {title}")
        ax.set_xlabel("lead time (h)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(bottom=0)
    axes[1].legend(frameon=False, fontsize=8)
    return png_base64(fig)


def rank_histogram_figure(histograms: dict[int, list[float]], channel: str) -> str:
    """Rank histograms (fraction of points per rank) at a few leads; flat at 1 / (M + 1) for a reliable ensemble."""
    plt = _pyplot()
    leads = sorted(histograms)
    fig, axes = plt.subplots(1, len(leads), figsize=(3.6 * len(leads) + 0.6, 2.9), constrained_layout=True,
                             squeeze=False)  # fmt: skip
    for ax, h in zip(axes[0], leads, strict=True):
        freq = histograms[h]
        ax.bar(range(len(freq)), freq, color="#1f4e9c", width=0.8)
        ax.axhline(1.0 / len(freq), color="#c0392b", lw=1.0, ls="--", label="reliable")
        ax.set_title(f"{channel}, {h} h")
        ax.set_xlabel("rank of the truth among the members")
        ax.set_xticks(range(len(freq)))
    axes[0][0].set_ylabel("fraction of points")
    axes[0][0].legend(frameon=False, fontsize=8)
    return png_base64(fig)


def stations_figure(table: dict[str, list[tuple]], variable: str, unit: str, threshold: float | None) -> str:
    """Station RMSE and accuracy against lead for each forecast; table[forecast] = [(lead, rmse, accuracy)]."""
    plt = _pyplot()
    panels = 2 if threshold else 1  # accuracy needs a threshold
    fig, axes = plt.subplots(1, panels, figsize=(5.4 * panels, 3.3), constrained_layout=True, squeeze=False)
    axes = axes[0]
    for f in FORECASTS:
        rows = table.get(f, [])
        if not rows:
            continue
        colour, dash = STYLE[f]
        axes[0].plot([r[0] for r in rows], [r[1] for r in rows], dash, color=colour, marker="o", ms=3, label=f)
        acc = [(r[0], r[2]) for r in rows if r[2] is not None]
        if acc and threshold:
            axes[1].plot([a[0] for a in acc], [100 * a[1] for a in acc], dash, color=colour, marker="o", ms=3)
    axes[0].set_ylabel(f"RMSE at stations ({unit})")
    axes[0].set_ylim(bottom=0)
    if threshold:
        axes[1].set_ylabel(f"within ±{threshold:g} {unit} (%)")
        axes[1].set_ylim(0, 100)
    for ax, title in zip(axes, ("RMSE", "accuracy")[:panels], strict=True):
        ax.set_title(f"{variable} at stations: {title}")
        ax.set_xlabel("lead time (h)")
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False)
    return png_base64(fig)
