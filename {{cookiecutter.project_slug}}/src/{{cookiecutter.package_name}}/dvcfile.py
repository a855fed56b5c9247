"""The pipeline's dvc.yaml files and their dvc.lock files, read as YAML (each once per use): the stages with their
command, deps, params and outs.

DVC_FILES: dvc.yaml holds the pipeline; workflow/dvc.yaml holds only the `fingerprint` stage, which runs on
every `dvc repro`. DVC rewrites the lock file of every stage it runs, and rewriting the pipeline's dvc.lock (30 KB,
parsed and dumped with ruamel.yaml's round-trip mode) costs 0.3 s; in a file of its own, that run rewrites only
workflow/dvc.lock (a few lines). DVC names such a stage by its file ("workflow/dvc.yaml:fingerprint", `address`).
Paths are relative to the project root here, whatever the file's folder and `wdir`.

Stages run under `dvc repro`, which holds the repository lock, so nothing here calls the dvc CLI.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
DVC_FILES = ("dvc.yaml", "workflow/dvc.yaml")  # the pipeline, then the fingerprint stage (see above)


def lock_file(dvc_file: str) -> str:
    """The dvc.lock beside a dvc.yaml."""
    return str(PurePosixPath(dvc_file).with_name("dvc.lock"))


LOCK_FILES = tuple(lock_file(f) for f in DVC_FILES)


def address(dvc_file: str, name: str) -> str:
    """A stage as DVC's commands name it (`dvc status`, `dvc repro TARGET`): "name" in ./dvc.yaml, else
    "path/dvc.yaml:name"."""
    return name if dvc_file == DVC_FILES[0] else f"{dvc_file}:{name}"


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
    file: str = DVC_FILES[0]  # the dvc.yaml it is in, relative to the project root
    wdir: str = "."  # where its command runs and its paths start (its `wdir`), relative to the project root

    @property
    def address(self) -> str:
        return address(self.file, self.name)

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


def _path(entry: Any, base: str = ".") -> str | None:
    """The entry's path relative to the project root (`base`: the stage's working directory, relative to it)."""
    path = next(iter(entry)) if isinstance(entry, dict) else entry
    if not isinstance(path, str) or "${" in path:  # a templated path names no fixed file
        return None
    return _from_root(path, base)


def _from_root(path: str, base: str) -> str:
    return posixpath.normpath(posixpath.join(base, path.strip("/")))


def _base(dvc_file: str, spec: dict) -> str:
    """The stage's working directory (its `wdir`, from its dvc.yaml's folder), relative to the project root."""
    return _from_root(str(spec.get("wdir") or "."), posixpath.dirname(dvc_file) or ".")


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


def _stage(name: str, spec: dict, dvc_file: str = DVC_FILES[0]) -> Stage:
    outs = [e for key in ("outs", "metrics", "plots") for e in spec.get(key) or []]
    base = _base(dvc_file, spec)
    return Stage(
        name=name,
        cmd=str(spec.get("cmd") or ""),
        deps=tuple(p for e in spec.get("deps") or [] if (p := _path(e, base))),
        params=_param_keys(spec.get("params")),
        outs=tuple(p for e in outs if (p := _path(e, base))),
        uncached=tuple(p for e in outs if _uncached(e) and (p := _path(e, base))),
        always_changed=bool(spec.get("always_changed")),
        file=dvc_file,
        wdir=base,
    )


def _specs(root: Path, dvc_file: str) -> dict[str, dict]:
    spec = read_yaml(root / dvc_file)
    found = spec.get("stages") if isinstance(spec, dict) else None
    return {n: s for n, s in found.items() if isinstance(s, dict)} if isinstance(found, dict) else {}


def stages(root: Path | str = ".") -> dict[str, Stage]:
    """The stages of the project's DVC_FILES, by address, in file order ({} when there are none)."""
    root = Path(root)
    return {address(f, name): _stage(name, spec, f) for f in DVC_FILES for name, spec in _specs(root, f).items()}


def outs(all_stages: dict[str, Stage]) -> list[str]:
    """Every out, metric and plot path of the stages."""
    return [out for stage in all_stages.values() for out in stage.outs]


def stage_of(path: str, all_stages: dict[str, Stage]) -> Stage | None:
    """The stage that produces `path` (or a folder above it)."""
    return next((stage for stage in all_stages.values() if stage.owns(path)), None)


def read_lock(root: Path | str = ".", all_stages: dict[str, Stage] | None = None) -> dict | None:
    """The pipeline's lock files as one mapping {"stages": {address: entry}}, dep and out paths relative to the
    project root; None when root/dvc.lock is missing or unreadable. all_stages: `stages(root)`, when already read
    (for the stages' working directories)."""
    root = Path(root)
    lock = read_yaml(root / LOCK_FILES[0])
    if not isinstance(lock, dict):
        return None
    merged = {**lock, "stages": dict(lock.get("stages") or {})}
    for dvc_file in DVC_FILES[1:]:
        other = read_yaml(root / lock_file(dvc_file))
        locked = other.get("stages") if isinstance(other, dict) else None
        if not locked:
            continue
        if all_stages is None:
            all_stages = stages(root)
        for name, entry in locked.items():
            stage = all_stages.get(address(dvc_file, name))
            base = stage.wdir if stage else _base(dvc_file, {})
            merged["stages"][address(dvc_file, name)] = _rebased(entry, base)
    return merged


def _rebased(entry: Any, base: str) -> Any:
    """A lock entry with its dep and out paths relative to the project root (DVC writes them relative to wdir)."""
    if base == "." or not isinstance(entry, dict):
        return entry
    out = dict(entry)
    for key in ("deps", "outs"):
        out[key] = [{**e, "path": _from_root(e["path"], base)} if isinstance(e, dict) and isinstance(e.get("path"), str)
                    else e for e in entry.get(key) or []]
    return out


def lock_hashes(lock: dict | None) -> dict[str, str]:
    """{path: md5} of every dep and out a dvc.lock records."""
    hashes = {}
    for stage in ((lock or {}).get("stages") or {}).values():
        for key in ("deps", "outs"):
            for entry in (stage or {}).get(key) or []:
                if isinstance(entry, dict) and entry.get("path") and entry.get("md5"):
                    hashes[str(entry["path"]).strip("/")] = entry["md5"]
    return hashes
