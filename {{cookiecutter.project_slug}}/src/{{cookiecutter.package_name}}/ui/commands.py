"""The only commands the web app runs: the project's own, as argument lists (never a shell), built from values
that passed the same validation as params.yaml.

    dvc exp run --queue -S key=value ...     one experiment per combination of a sweep
    dvc queue start [-j N]                   run the queue (on the cluster: SNAKEMAKE_PROFILE=profiles/NAME)
    dvc queue kill NAME | dvc queue remove NAME
    dvc exp apply NAME (+ git commit) | dvc exp branch NAME BRANCH
    dvc repro | snakemake --profile profiles/NAME

A name (experiment, branch) comes from a request only after it matched a pattern that cannot start an option and,
for experiments, was found in `dvc exp show`; a profile must be one of the project's profiles/ folders.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ..config import validate_params
from ..errors import ForgeError, ParamsError
from ..profiles import site_profiles
from .params_file import PARAMS, with_changes
from .schema import FormField, parse, text_of

MAX_SWEEP = 64  # experiments queued by one request
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")  # dvc exp names, git refs and revs; never "-..."
QUEUED = re.compile(r"Queued experiment '([^']+)'")


class CommandError(ForgeError):
    """A command the app ran exited non-zero; the message carries the command and the end of its output."""


def dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def snakemake(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The app's environment, with this Python's bin/ first on PATH: the stages' `snakemake` is the one installed
    beside the app, as after `. .venv/bin/activate`."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra or {})
    return env


def run(argv: list[str], root: Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    """Run a short command in the project; its output, or CommandError with the end of it."""
    try:
        done = subprocess.run(argv, cwd=root, env=env or environment(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CommandError(f"`{shown(argv)}` did not finish within {timeout:.0f} s") from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode:
        raise CommandError(f"`{shown(argv)}` exited with {done.returncode}:\n{output[-3000:]}")
    return output


def shown(argv: list[str]) -> str:
    """A command as a person would type it (python -m dvc -> dvc)."""
    words = list(argv)
    if words[:2] == [sys.executable, "-m"]:
        words = words[2:]
    return " ".join(words)


def checked_name(name: str, what: str = "experiment") -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise ForgeError(f"bad {what} name {name!r}: use letters, digits, '.', '_', '-' and '/' "
                         "(not starting with '-').")
    return name


def checked_profile(root: Path, name: str) -> str:
    profiles = site_profiles(root)
    if name not in profiles:
        raise ForgeError(f"unknown profile {name!r}: this project has {', '.join(profiles) or 'none'} (profiles/).")
    return f"profiles/{name}"


# ----------------------------------------------------------------------------------------------------------------
# experiments


def override_text(value: Any) -> str:
    """A validated value as a `-S key=value` override (DVC's override grammar: JSON-like literals)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_text(v) for v in value) + "]"
    raise ParamsError(f"{PARAMS}: cannot pass {value!r} as a -S override")


def queue_argv(overrides: dict[str, Any]) -> list[str]:
    return dvc("exp", "run", "--queue", *[f"-S{key}={override_text(v)}" for key, v in overrides.items()])


def sweep_values(form_field: FormField, text: str) -> list[Any]:
    """'0.001, 0.003' -> [0.001, 0.003]; a list-valued key takes '[6, 24], [6, 72]'. Read like the form's values."""
    try:
        items = yaml.safe_load(f"[{text}]")
    except yaml.YAMLError:
        raise ParamsError(f"{PARAMS}: bad sweep values for '{form_field.key}': {text!r}. Fix: separate values "
                          "with commas, e.g. 0.001, 0.003.") from None
    if not items:
        raise ParamsError(f"{PARAMS}: no sweep values for '{form_field.key}'. Fix: enter at least one value.")
    return [parse(form_field, v if isinstance(v, str) else text_of(v)) for v in items]


def plan_sweep(raw: dict, grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, each checked with the CLI's validation against the file's values."""
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if len(combos) > MAX_SWEEP:
        raise ParamsError(f"a sweep of {len(combos)} experiments; at most {MAX_SWEEP} at once. "
                          "Fix: fewer values per key.")
    for combo in combos:
        try:
            validate_params(with_changes(raw, combo), PARAMS)
        except ParamsError as exc:
            what = ", ".join(f"{k}={text_of(v)}" for k, v in combo.items())
            raise ParamsError(f"experiment {what}:\n{exc}") from None
    return combos


def queue(root: Path, combos: list[dict[str, Any]]) -> list[str]:
    """Queue one experiment per combination; the names DVC gave them."""
    names = []
    for combo in combos:
        output = run(queue_argv(combo), root, timeout=120)
        found = QUEUED.search(output)
        names.append(found[1] if found else "?")
    return names


def queue_start_argv(workers: int) -> list[str]:
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 16:
        raise ForgeError(f"bad number of queue workers {workers!r}: 1 to 16.")
    return dvc("queue", "start", "-j", str(workers))


def queue_start_env(root: Path, profile: str | None) -> dict[str, str]:
    """Queue workers run each experiment's `snakemake` stages; with a profile they submit them to the cluster."""
    return environment({"SNAKEMAKE_PROFILE": checked_profile(root, profile)} if profile else None)


def cancel_argv(name: str, state: str) -> list[str]:
    """Stop a running experiment, or take a queued one out of the queue."""
    if state == "running":
        return dvc("queue", "kill", checked_name(name))
    if state == "queued":
        return dvc("queue", "remove", checked_name(name))
    raise ForgeError(f"experiment {name!r} is {state}: only queued or running experiments can be cancelled.")


def apply(root: Path, name: str) -> str:
    """`dvc exp apply NAME`, then commit its params, dvc.lock and results. Refuses on uncommitted changes, which the
    apply would overwrite or the commit would take along."""
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], root, timeout=60)
    if dirty:
        raise ForgeError("the workspace has uncommitted changes; nothing was applied. Fix: commit or stash them "
                         f"first:\n{dirty}")
    out = [run(dvc("exp", "apply", checked_name(name)), root)]
    out.append(run(["git", "add", "--update"], root, timeout=60))
    if (root / "results").is_dir():
        out.append(run(["git", "add", "--all", "--", "results"], root, timeout=60))
    out.append(run(["git", "commit", "-q", "-m", f"Apply experiment {name}"], root, timeout=60))
    return "\n".join(o for o in out if o)


def branch_argv(name: str, branch: str) -> list[str]:
    return dvc("exp", "branch", checked_name(name), checked_name(branch, "branch"))


def pipeline_argv(root: Path, profile: str | None) -> list[str]:
    """Run the pipeline: `dvc repro` here (versioned by DVC), or `snakemake --profile` through a site profile."""
    return snakemake("--profile", checked_profile(root, profile)) if profile else dvc("repro")
