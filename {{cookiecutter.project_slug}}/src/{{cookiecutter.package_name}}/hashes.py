"""Data hashes exactly as DVC 3 records them (md5 of a file; md5 of the JSON listing of a folder, plus ".dir"),
computed here because a stage runs while `dvc repro` holds the repository lock (no dvc CLI)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import dvcfile

# Inputs larger than this are not re-hashed by input_hashes(); their dvc.lock entry is used instead.
HASH_LIMIT_BYTES = int(os.environ.get("FORGE_HASH_LIMIT_BYTES", 4 * 1024**3))


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

    return pathspec.GitIgnoreSpec.from_lines(lines).match_file


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


def input_hashes(inputs: dict | list | None, root: Path | str = ".") -> dict[str, dict]:
    """{path: {"md5", "from"}} for the inputs. A given hash string is kept ("given"); otherwise the path is
    hashed like DVC does ("computed"), unless it is larger than HASH_LIMIT_BYTES or missing, then its dvc.lock
    entry is used ("dvc.lock"); with neither, md5 is None ("missing")."""
    if not inputs:
        return {}
    if not isinstance(inputs, dict):
        inputs = {str(p): None for p in inputs}
    root = Path(root)
    locked = None
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
        locked = dvcfile.lock_hashes(dvcfile.read_lock(root)) if locked is None else locked
        md5 = locked.get(os.path.relpath(path, root).replace(os.sep, "/"))
        out[key] = {"md5": md5, "from": "dvc.lock" if md5 else "missing"}
    return out
