"""Command-line options the steps share, declared once.

argparse rather than typer/click: no extra dependency, and each step keeps a plain `main(argv)` that the CLI,
Snakemake rules and tests call the same way. A step asks for the shared options by name:

    p = cliargs.parser("evaluate", __doc__, "params", "shards", "stats", "model")
    p.add_argument("--out", default="results", help="...")   # options of its own as usual
"""

from __future__ import annotations

import argparse

# name -> (default, help). The defaults are the project's layout (the same paths as dvc.yaml and the Snakefile).
SHARED: dict[str, tuple[str, str]] = {
    "params": ("params.yaml", "params file"),
    "shards": ("data/shards", "directory of block_NNNN.zarr shards"),
    "stats": ("data/stats.json", "normalization statistics of the train split"),
    "model": ("models/model.pt", "trained model file"),
    "device": ("cpu", "cpu (bitwise reproducible) or cuda (faster)"),
}


def parser(prog: str, doc: str | None, *shared: str, **overrides: str) -> argparse.ArgumentParser:
    """An ArgumentParser for `prog` with the shared options `shared`; `overrides` change a default (name=value)."""
    doc = (doc or "").strip()
    summary, _, rest = doc.partition("\n")
    p = argparse.ArgumentParser(prog=prog, description=summary, epilog=rest.strip() or None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in shared:
        default, help_ = SHARED[name]
        default = overrides.get(name, default)
        p.add_argument(f"--{name}", default=default, help=f"{help_} (default: {default})")
    return p
