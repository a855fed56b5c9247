"""Tie every artifact to the code, params, data and machine that made it.

`collect()` returns one JSON-able dict (the "stamp") that goes into shard attrs, checkpoints, the W&B config,
`results/provenance.json` and the report. `ensure_clean_or_allowed()` is the guard that makes `train` and
`evaluate` refuse uncommitted code.

What counts as "code" (the dirty flag, the diff hash and the code hash): every file git tracks, except the files
that running the pipeline or `dvc exp run -S ...` rewrites by design (NOT_CODE below):
  - params.yaml and dvc.lock (anywhere), *.dvc pointer files, .gitignore files (DVC appends its outs there),
    .dvc/ (DVC's own config), results/ (metrics and plots), and every out/metric/plot path declared in dvc.yaml.
Untracked files are not code: add them to git to make them count.

This module never calls the `dvc` CLI: `dvc repro` holds the repository lock while a stage runs, so stages read
dvc.lock as YAML and compute hashes themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .errors import DirtyCodeError

SCHEMA = 1
UNKNOWN = "unknown"
# Paths (relative to the project root, fnmatch patterns; "*" also crosses "/") that are not code, see above.
NOT_CODE = ("params.yaml", "*/params.yaml", "dvc.lock", "*/dvc.lock", "*.dvc", ".gitignore", "*/.gitignore",
            ".dvc/*", ".dvcignore", "results/*")
# Distributions whose installed version is always listed in the stamp (the full set is checked against the lock).
KEY_PACKAGES = ("torch", "numpy", "xarray", "zarr", "dask", "pydantic", "dvc", "snakemake", "wandb")
LOCK_FILES = ("requirements/lock.txt",)
# Inputs larger than this are not re-hashed by collect(); their dvc.lock entry is used instead.
HASH_LIMIT_BYTES = int(os.environ.get("FORGE_HASH_LIMIT_BYTES", 4 * 1024**3))


# ----------------------------------------------------------------------------------------------------------------
# git


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except OSError:  # git not installed
        return None


def _git_out(args: list[str], cwd: Path) -> str | None:
    res = _git(args, cwd)
    if res is None or res.returncode != 0:
        return None
    return res.stdout.decode("utf-8", "replace").strip()


def dvc_yaml_outs(root: Path) -> list[str]:
    """Out, metric and plot paths declared in dvc.yaml (relative to the project root)."""
    try:
        spec = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    paths = []
    for stage in (spec.get("stages") or {}).values():
        if not isinstance(stage, dict):
            continue
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                if isinstance(path, str) and "${" not in path:
                    paths.append(path.strip("/"))
    return paths


def is_code(path: str, dvc_outs: list[str] = ()) -> bool:
    """Whether a tracked path (relative to the project root, '/' separated) counts as code."""
    if any(fnmatch(path, pattern) for pattern in NOT_CODE):
        return False
    return not any(path == out or path.startswith(out + "/") for out in dvc_outs)


def git_state(root: Path | str = ".") -> dict:
    """commit, branch, dirty, changed code files, diff_sha256 and code_sha256 of the repository at `root`.

    Outside a git repository (or before the first commit) commit is "unknown" and dirty is None.
    code_sha256 hashes the code files of HEAD (paths and blob ids), so two commits that differ only in
    params/dvc.lock/results share it; diff_sha256 hashes `git diff HEAD` of the changed code files (None if clean).
    """
    root = Path(root).resolve()
    state: dict[str, Any] = {"commit": UNKNOWN, "branch": None, "dirty": None, "changed": [],
                             "diff_sha256": None, "code_sha256": None}
    top = _git_out(["rev-parse", "--show-toplevel"], root)
    commit = _git_out(["rev-parse", "--verify", "-q", "HEAD^{commit}"], root) if top else None
    if not top or not commit:
        return state
    state["commit"] = commit
    state["branch"] = _git_out(["symbolic-ref", "--short", "-q", "HEAD"], root)  # None when detached
    prefix = _git_out(["rev-parse", "--show-prefix"], root) or ""  # project dir inside the repo, "" or "sub/"
    outs = dvc_yaml_outs(root)

    def project_code(repo_path: str) -> bool:
        if not repo_path.startswith(prefix):
            return False  # outside the project directory
        return is_code(repo_path[len(prefix):], outs)

    # Code hash of HEAD: "mode type blob<TAB>path" of every code file, in git's order.
    tree = _git(["ls-tree", "-r", "-z", "--full-tree", "HEAD"], root)
    entries = [e for e in tree.stdout.decode("utf-8", "surrogateescape").split("\0") if e] if tree else []
    code_lines = [e for e in entries if project_code(e.split("\t", 1)[1])]
    state["code_sha256"] = hashlib.sha256("\n".join(code_lines).encode("utf-8", "surrogateescape")).hexdigest()

    # Changed code files (staged or not), renames split into delete + add so both names are seen.
    names = _git(["diff", "HEAD", "--name-only", "--no-renames", "-z", "--full-index"], root)
    changed = sorted(n for n in (names.stdout.decode("utf-8", "surrogateescape").split("\0") if names else [])
                     if n and project_code(n))
    state["changed"] = changed
    state["dirty"] = bool(changed)
    if changed:
        top_path = Path(top)
        diff = _git(["diff", "HEAD", "--binary", "--no-renames", "--full-index", "--no-color", "--no-ext-diff",
                     "--", *[":(top,literal)" + n for n in changed]], top_path)
        state["diff_sha256"] = hashlib.sha256(diff.stdout if diff else b"").hexdigest()
    return state


def ensure_clean_or_allowed(allow_dirty: bool, what: str, root: Path | str = ".") -> dict:
    """Return git_state(root); raise DirtyCodeError if tracked code differs from HEAD and allow_dirty is false.

    `what` is the stage name ("train", "evaluate"): the message names its `<what>.allow_dirty` param.
    Outside git (or before the first commit) nothing can be checked: a warning is printed and the run goes on.
    """
    state = git_state(root)
    if state["dirty"] is None:
        print(f"[{what}] warning: not in a git repository with a commit; results will be stamped commit 'unknown'",
              file=sys.stderr)
    elif state["dirty"] and not allow_dirty:
        shown = ", ".join(state["changed"][:10]) + (" ..." if len(state["changed"]) > 10 else "")
        raise DirtyCodeError(
            f"{what} refuses to run: tracked code differs from commit {state['commit'][:10]} "
            f"({state['branch'] or 'detached HEAD'}): {shown}. Results must be tied to a commit. "
            f"Fix: commit the change (git commit -am '...') or stash it (git stash), "
            f"or set {what}.allow_dirty: true in params.yaml to run anyway (results will be stamped dirty "
            f"with the hash of the diff)."
        )
    elif state["dirty"]:
        print(f"[{what}] warning: running on uncommitted code ({len(state['changed'])} files); "
              f"stamped dirty, diff sha256 {state['diff_sha256'][:12]}", file=sys.stderr)
    return state


# ----------------------------------------------------------------------------------------------------------------
# params and data


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def params_hash(params: Any) -> str:
    """sha256 of the canonical JSON of the params actually used.

    A pydantic Params is hashed through model_dump(mode="json"), so defaults count and YAML spelling (comments,
    1e-3 vs 0.001, key order) does not. A dict is hashed as given (validate it first for the same hash).
    """
    if hasattr(params, "model_dump"):
        params = params.model_dump(mode="json")
    return hashlib.sha256(_canonical(params)).hexdigest()


def param_differences(old: Any, new: Any, keys: list[str] | tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every leaf where two params (Params or dicts, e.g. a stamp's
    "params") differ, restricted to the dotted `keys` if given. E.g. resume a checkpoint only when
    param_differences(ckpt["provenance"]["params"], params, ["seed", "data", "model", "train.lr"]) is empty."""
    old = old.model_dump(mode="json") if hasattr(old, "model_dump") else old
    new = new.model_dump(mode="json") if hasattr(new, "model_dump") else new

    def lookup(tree: Any, dotted: str) -> Any:
        for part in dotted.split("."):
            tree = tree.get(part) if isinstance(tree, dict) else None
        return tree

    def walk(key: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for k in sorted(set(a) | set(b)) for d in walk(f"{key}.{k}" if key else k, a.get(k), b.get(k))]
        return [] if a == b else [(key, a, b)]

    if not keys:
        return walk("", old, new)
    return [d for key in keys for d in walk(key, lookup(old, key), lookup(new, key))]


def md5_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dvcignore(root: Path | str = "."):
    """A predicate on paths relative to `root` that says whether the project's .dvcignore excludes them (DVC leaves
    those files out of directory hashes). None when there is no .dvcignore."""
    try:
        lines = (Path(root) / ".dvcignore").read_text().splitlines()
    except OSError:
        return None
    import pathspec  # a dependency of dvc

    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    return spec.match_file


def md5_path(path: Path | str, root: Path | str | None = None) -> str:
    """The md5 DVC 3 records for a path: md5 of the bytes for a file; for a directory, md5 of the JSON list
    [{"md5": ..., "relpath": ...}] of its files sorted by relpath, plus ".dir". Files that root/.dvcignore
    excludes are left out, as DVC does (root defaults to the current directory)."""
    path = Path(path)
    if not path.is_dir():
        return md5_file(path)
    root = Path(root if root is not None else ".").resolve()
    ignored = dvcignore(root)
    listing = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if ignored is not None:
            try:
                if ignored(file.resolve().relative_to(root).as_posix()):
                    continue
            except ValueError:  # outside the project: nothing to ignore
                pass
        listing.append({"md5": md5_file(file), "relpath": file.relative_to(path).as_posix()})
    listing.sort(key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def dvc_lock_hashes(root: Path | str = ".") -> dict[str, str]:
    """{path: md5} of every dep and out recorded in dvc.lock (read as YAML: never the dvc CLI)."""
    try:
        lock = yaml.safe_load((Path(root) / "dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    hashes = {}
    for stage in (lock.get("stages") or {}).values():
        for key in ("deps", "outs"):
            for entry in (stage or {}).get(key) or []:
                if isinstance(entry, dict) and entry.get("path") and entry.get("md5"):
                    hashes[str(entry["path"]).strip("/")] = entry["md5"]
    return hashes


def input_hashes(inputs: dict | list | None, root: Path | str = ".") -> dict[str, dict]:
    """{path: {"md5", "from"}} for the inputs. A given hash string is kept ("given"); otherwise the path is
    hashed like DVC does ("computed"), unless it is larger than HASH_LIMIT_BYTES or missing, then its dvc.lock
    entry is used ("dvc.lock"); with neither, md5 is None ("missing")."""
    if not inputs:
        return {}
    if not isinstance(inputs, dict):
        inputs = {str(p): None for p in inputs}
    root = Path(root)
    lock = None
    out = {}
    for name, given in inputs.items():
        key = str(name)
        if isinstance(given, str) and given:
            out[key] = {"md5": given, "from": "given"}
            continue
        path = Path(key) if Path(key).is_absolute() else root / key
        if path.exists() and _size(path) <= HASH_LIMIT_BYTES:
            out[key] = {"md5": md5_path(path, root), "from": "computed"}
            continue
        lock = dvc_lock_hashes(root) if lock is None else lock
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        md5 = lock.get(rel)
        out[key] = {"md5": md5, "from": "dvc.lock" if md5 else "missing"}
    return out


# ----------------------------------------------------------------------------------------------------------------
# environment


def find_lock(root: Path | str = ".") -> Path | None:
    for name in LOCK_FILES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def read_lock(path: Path | str) -> dict[str, str]:
    """{normalized name: version} of the `name==version` lines of a pip lock file."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[_norm(name.split("[", 1)[0])] = version.strip()
    return pins


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions(root: Path | str = ".") -> dict:
    """Key package versions, plus the lock file's hash, every installed version that differs from the lock
    ("mismatches": empty means what is installed is the lock's) and the locked packages not installed
    ("missing": e.g. the wandb or dev extras). A local build tag (torch 2.13.0+cu128 for the lock's 2.13.0)
    is not a mismatch."""
    versions = {name: _installed(name) for name in KEY_PACKAGES}
    lock = find_lock(root)
    info: dict[str, Any] = {"path": None, "sha256": None, "mismatches": None, "missing": None}
    if lock is not None:
        mismatches, missing = {}, []
        for name, pinned in read_lock(lock).items():
            have = _installed(name)
            if have is None:
                missing.append(name)
            elif have.split("+", 1)[0] != pinned.split("+", 1)[0]:
                mismatches[name] = {"lock": pinned, "installed": have}
        try:
            shown = lock.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            shown = str(lock)
        info = {"path": shown, "sha256": hashlib.sha256(lock.read_bytes()).hexdigest(), "mismatches": mismatches,
                "missing": sorted(missing)}
    return {"packages": versions, "lock": info}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> dict:
    """GPU model and count without initializing CUDA (safe before fork): torch's device count (NVML) when torch
    is already imported, names from torch if CUDA is already up, else from nvidia-smi."""
    torch = sys.modules.get("torch")
    info: dict[str, Any] = {"count": 0, "names": [], "cuda": None,
                            "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if torch is not None:
        try:
            info["cuda"] = torch.version.cuda
            info["count"] = torch.cuda.device_count()
            if info["count"] and torch.cuda.is_initialized():
                info["names"] = [torch.cuda.get_device_name(i) for i in range(info["count"])]
                return info
        except Exception:  # noqa: BLE001 - a broken driver must not stop a stamp
            pass
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False)
        names = [n.strip() for n in res.stdout.splitlines() if n.strip()] if res.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        names = []
    if names:
        info["names"] = names
        info["count"] = info["count"] or len(names)
    return info


def hardware() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    return {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "cpu_usable": usable, "memory_bytes": mem,
            "gpu": _gpus(), "hostname": platform.node()}


def job_id() -> dict:
    if os.environ.get("SLURM_JOB_ID"):
        job = os.environ["SLURM_JOB_ID"]
        if os.environ.get("SLURM_ARRAY_TASK_ID"):
            job += "_" + os.environ["SLURM_ARRAY_TASK_ID"]
        return {"scheduler": "slurm", "id": job}
    if os.environ.get("PBS_JOBID"):
        return {"scheduler": "pbs", "id": os.environ["PBS_JOBID"]}
    return {"scheduler": None, "id": None}


def template_origin(root: Path | str = ".") -> dict | None:
    """Template url and commit from .cruft.json (written at bake time, updated by `cruft update`)."""
    try:
        cruft = json.loads((Path(root) / ".cruft.json").read_text())
    except (OSError, ValueError):
        return None
    return {"template": cruft.get("template"), "commit": cruft.get("commit")}


# ----------------------------------------------------------------------------------------------------------------
# the stamp


def collect(params: Any = None, command: Any = None, inputs: dict | None = None, root: Path | str = ".") -> dict:
    """The provenance stamp (JSON-able).

    params: pydantic Params or dict (stored, hashed, seed taken from it); command: list or str (default sys.argv);
    inputs: {path: md5 or None} (None = hash it, see input_hashes); root: the project root (default cwd).
    """
    git = git_state(root)
    env = package_versions(root)
    if command is None:
        command = [Path(sys.executable).name, *sys.argv]
    if not isinstance(command, str):
        command = shlex.join(str(c) for c in command)
    values = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
    seed = values.get("seed") if isinstance(values, dict) else None
    return {
        "schema": SCHEMA,
        "commit": git["commit"],
        "branch": git["branch"],
        "dirty": git["dirty"],
        "changed": git["changed"],
        "diff_sha256": git["diff_sha256"],
        "code_sha256": git["code_sha256"],
        "params_sha256": params_hash(values) if values is not None else None,
        "params": values,  # the values used, so verify can compare exactly the keys a stage declares
        "inputs": input_hashes(inputs, root),
        "versions": env["packages"],  # {distribution: installed version} of the key packages
        "lock": env["lock"],  # requirements/lock.txt: sha256 and every installed version that differs from it
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hardware": hardware(),
        "seed": seed,
        "command": command,
        "cwd": str(Path(root).resolve()),
        "job": job_id(),
        "job_id": job_id()["id"],
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "template": template_origin(root),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_provenance(path: Path | str, **collect_kwargs: Any) -> dict:
    """collect(**collect_kwargs) and write it as indented JSON to `path` (atomically); return the stamp."""
    stamp = collect(**collect_kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return stamp


def to_json(stamp: dict) -> str:
    """Compact JSON string of a stamp (for zarr attrs and W&B config values)."""
    return json.dumps(stamp, sort_keys=True, separators=(",", ":"))
