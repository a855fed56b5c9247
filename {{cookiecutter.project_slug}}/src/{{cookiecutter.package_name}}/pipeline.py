"""What the Snakefile asks of the package, so that the workflow files hold rules only (`snakemake --lint` clean).

`plan()` validates params.yaml and, in Snakemake's main process, checks it against the data (preflight.py) and
fingerprints the source before the DAG exists: a bad value stops `snakemake` and `dvc repro` before any job runs,
so no rule's outputs are removed for nothing. Cluster jobs parse the Snakefile again; they skip both (the main
process did them), so a compute node without network never opens a remote source here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import deps, fingerprint, preflight
from .config import Params, load_params
from .errors import ForgeError

PACKAGE = Path(__file__).resolve().parent.name
# The command rules run. `python3` is the interpreter that runs Snakemake (its folder goes first on PATH, see
# use_this_python); with `--sdm conda` the rule's environment puts its own python3 first.
CLI = f"python3 -m {PACKAGE}.cli"


@dataclass(frozen=True)
class Plan:
    params: Params
    blocks: list[str]  # shard numbers, "0000", "0001", ...
    source_digest: str  # sha256 of the source fingerprint (job processes read the one the fingerprint rule wrote)

    @property
    def synthetic(self) -> bool:
        return self.params.data.source == "synthetic"

    def code(self, rule: str) -> str:
        """sha256 of the code the rule runs (its .smk file and the import closure of its modules, deps.py): a rule
        param, so that Snakemake, like DVC, reruns the rule when a module it imports changes (Snakemake's own
        "code" trigger sees only the rule's text)."""
        digest = hashlib.sha256()
        for path in deps.code_deps(Path("."), [rule]):
            digest.update(path.encode() + b"\0" + hashlib.sha256(Path(path).read_bytes()).digest())
        return digest.hexdigest()

    def reads(self, rule: str) -> dict[str, Any]:
        """{leaf key: value} of the params the rule reads (deps.RULES): its `params:`, so that Snakemake reruns it
        when, and only when, one of them changes."""
        values = self.params.model_dump(mode="json")
        out = {}
        for key in deps.param_keys([rule]):
            node = values
            for part in key.split("."):
                node = node[part]
            out[key] = node
        return out


def use_this_python() -> None:
    """Put the folder of the interpreter running Snakemake first on PATH, so rules run `python3` from the same
    environment even when the venv is not activated (`.venv/bin/snakemake ...`)."""
    here = Path(sys.executable).parent
    if (here / "python3").exists():
        os.environ["PATH"] = f"{here}{os.pathsep}{os.environ.get('PATH', '')}"


def plan(params_file: str, main_process: bool) -> Plan:
    """The validated params, the shard plan, and (main process only) the preflight checks and source digest.

    A problem the user can fix ends Snakemake with its message alone (`error: ...`, exit 1), not a traceback."""
    from .data.shard import plan_blocks

    try:
        params = load_params(params_file)
        if main_process:
            preflight.check(params, params_file)
            digest = fingerprint.compute(params.data.source)["sha256"]
        else:  # a cluster job: the digest the fingerprint rule wrote, so that its params look unchanged there too
            digest = (fingerprint.read() or {}).get("sha256", "")
        blocks = [f"{i:04d}" for i in range(len(plan_blocks(params)))]
    except ForgeError as exc:
        raise SystemExit(f"error: {exc}") from None
    return Plan(params=params, blocks=blocks, source_digest=digest)


def remove_stale_shards(keep: list[str], log: str) -> None:
    """Remove block_*.zarr shards (and static.zarr) next to `keep` that the plan no longer has (fewer blocks after a
    params change, data.static emptied); name each in `log`."""
    folder = Path(keep[0]).parent if keep else Path("data/shards")
    made = [*folder.glob("block_*.zarr"), *folder.glob("static.zarr")]
    stale = sorted(set(map(str, made)) - set(map(str, keep)))
    for path in stale:
        shutil.rmtree(path)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    Path(log).write_text("".join(f"removed {p}\n" for p in stale) or "no stale shards\n")


def write_shards_index(stores: list[str], out: str, log: str) -> None:
    """data/shards/index.json (data/integrity.py, a code dep of the shards stage, says what it holds)."""
    from .data.integrity import write_index

    write_index(stores, out)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    Path(log).write_text(f"{out}: {len(stores)} stores\n")
