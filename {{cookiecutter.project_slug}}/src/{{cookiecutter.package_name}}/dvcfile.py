"""dvc.yaml and dvc.lock, read as YAML (each once per use): the stages with their command, deps, params and outs.

Stages run under `dvc repro`, which holds the repository lock, so nothing here calls the dvc CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Stage:
    """One stage of dvc.yaml. Paths are relative to the project root, without a trailing '/'."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[str, ...]  # dotted keys of params.yaml
    outs: tuple[str, ...]  # outs, metrics and plots
    uncached: tuple[str, ...]  # the outs with `cache: false`: git, not DVC, keeps them
    always_changed: bool

    def owns(self, path: str) -> bool:
        return any(inside(path, out) for out in self.outs)

    def rules(self) -> list[str]:
        """The Snakemake rules the stage's command may run (`--allowed-rules R1 R2 ...`, the last option); for a
        command `<package> COMMAND ...` run without Snakemake, the rule of that name (which runs the same command)."""
        _, found, rest = self.cmd.partition("--allowed-rules")
        if found:
            return rest.split()
        words = self.cmd.split()
        return [words[1]] if len(words) > 1 and words[0] == Path(__file__).resolve().parent.name else []


def inside(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or lies under it."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def read_yaml(path: Path) -> Any:
    """The parsed file, or None when it is missing or not YAML."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None


def _path(entry: Any) -> str | None:
    path = next(iter(entry)) if isinstance(entry, dict) else entry
    if not isinstance(path, str) or "${" in path:  # a templated path names no fixed file
        return None
    return path.strip("/")


def _uncached(entry: Any) -> bool:
    options = next(iter(entry.values())) if isinstance(entry, dict) else None
    return isinstance(options, dict) and options.get("cache") is False


def _param_keys(entries: list) -> tuple[str, ...]:
    keys: list[str] = []
    for entry in entries or []:
        if isinstance(entry, str):
            keys.append(entry)
        elif isinstance(entry, dict):  # {file: [keys]}: only params.yaml's keys are validated by config.py
            for file, file_keys in entry.items():
                if Path(file).name == PARAMS_FILE:
                    keys.extend(file_keys or [])
    return tuple(keys)


def _stage(name: str, spec: dict) -> Stage:
    outs = [e for key in ("outs", "metrics", "plots") for e in spec.get(key) or []]
    return Stage(
        name=name,
        cmd=str(spec.get("cmd") or ""),
        deps=tuple(p for p in map(_path, spec.get("deps") or []) if p),
        params=_param_keys(spec.get("params")),
        outs=tuple(p for p in map(_path, outs) if p),
        uncached=tuple(p for e in outs if _uncached(e) and (p := _path(e))),
        always_changed=bool(spec.get("always_changed")),
    )


def stages(root: Path | str = ".") -> dict[str, Stage]:
    """The stages of root/dvc.yaml in file order ({} when the file is missing or has none)."""
    spec = read_yaml(Path(root) / "dvc.yaml")
    found = spec.get("stages") if isinstance(spec, dict) else None
    if not isinstance(found, dict):
        return {}
    return {name: _stage(name, stage) for name, stage in found.items() if isinstance(stage, dict)}


def outs(all_stages: dict[str, Stage]) -> list[str]:
    """Every out, metric and plot path of the stages."""
    return [out for stage in all_stages.values() for out in stage.outs]


def stage_of(path: str, all_stages: dict[str, Stage]) -> Stage | None:
    """The stage that produces `path` (or a folder above it)."""
    return next((stage for stage in all_stages.values() if stage.owns(path)), None)


def read_lock(root: Path | str = ".") -> dict | None:
    """root/dvc.lock as a mapping, or None when it is missing or unreadable."""
    lock = read_yaml(Path(root) / "dvc.lock")
    return lock if isinstance(lock, dict) else None


def lock_hashes(lock: dict | None) -> dict[str, str]:
    """{path: md5} of every dep and out a dvc.lock records."""
    hashes = {}
    for stage in ((lock or {}).get("stages") or {}).values():
        for key in ("deps", "outs"):
            for entry in (stage or {}).get(key) or []:
                if isinstance(entry, dict) and entry.get("path") and entry.get("md5"):
                    hashes[str(entry["path"]).strip("/")] = entry["md5"]
    return hashes
