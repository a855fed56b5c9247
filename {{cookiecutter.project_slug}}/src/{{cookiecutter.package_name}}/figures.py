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
