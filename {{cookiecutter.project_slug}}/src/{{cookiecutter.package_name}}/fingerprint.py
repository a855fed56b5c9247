"""A cheap, honest fingerprint of data.source, so that the shards depend on the data, not only on its name.

    <package> fingerprint [--params params.yaml] [--out data/source.fingerprint.json]

What it covers, without reading any data:
  local path   every file under it (a zarr store, a folder or glob of netCDF files): relative path, size and
               modification time (ns), plus the sha256 of the content of the zarr metadata files. Rewriting one
               chunk changes its mtime, so the fingerprint changes; copying the store without keeping mtimes
               (cp without -p) changes it too.
  URL          per object the version the filesystem reports (ETag, generation, checksum, size, mtime) and the
               content of the metadata objects: all files of a netCDF glob; for a zarr store the metadata objects
               only (listing millions of chunks would take minutes on every run; archives such as WeatherBench2
               are never rewritten in place).
  synthetic    nothing to fingerprint: the synthetic store is made from params and code the shards stage
               already depends on.
  a list       each entry as above, and a sha256 over the entries' fingerprints in their order.
The JSON has no time of computation in it: an unchanged source gives the same bytes, so DVC (the `fingerprint`
stage, which runs on every `dvc repro`) reruns the shards exactly when the source changed. provenance.collect
stamps this file into every shard, the model and the results (key "source").
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from . import cliargs, remote
from .errors import DataError
from .fileio import atomic_write_text

FINGERPRINT = "data/source.fingerprint.json"  # written by `<package> fingerprint` (the fingerprint stage and rule)
METADATA_FILES = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")
VERSION_FIELDS = ("ETag", "etag", "generation", "md5Hash", "crc32c", "VersionId", "version_id", "LastModified",
                  "last_modified", "updated", "mtime", "size")


def read(root: Path | str = ".") -> dict | None:
    """The source fingerprint recorded in root/data/source.fingerprint.json (None when missing or unreadable)."""
    try:
        found = json.loads((Path(root) / FINGERPRINT).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


# Validating params.yaml (config.load_params) imports pydantic and numpy: 0.2 s of every `dvc repro`, where this
# stage is the first to read params.yaml and so the one that stops a typo with one clear error. A file whose exact
# bytes passed with the same validation code (these modules: config.py and what it imports) is not validated again.
VALIDATION_CODE = ("__init__.py", "cliargs.py", "config.py", "errors.py", "regionboxes.py")  # a test compares
VALIDATED = Path(__file__).parent / "__pycache__" / "forge-params-valid.json"  # [sha256 of params + code, ...]
VALIDATED_KEPT = 32  # the newest digests kept (a few params files, a few edits each)


def _validation_key(text: bytes) -> str:
    digest = hashlib.sha256(text)
    for name in VALIDATION_CODE:
        digest.update(b"\0" + (Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def _validated() -> list[str]:
    try:
        found = json.loads(VALIDATED.read_text())
    except (OSError, ValueError):
        return []
    return found if isinstance(found, list) else []


def data_source(params_path: Path | str) -> str | list[str]:
    """data.source of a params file, after validating the whole file (config.load_params: ParamsError naming the
    key and the fix), or when these bytes were validated before (see VALIDATION_CODE), read directly."""
    import yaml

    path = Path(params_path)
    try:
        text = path.read_bytes()
    except OSError:
        text = None
    key = _validation_key(text) if text is not None else None
    if key is not None and key in _validated():
        raw = yaml.safe_load(text)
        source = ((raw.get("data") if isinstance(raw, dict) else None) or {}).get("source")
        if isinstance(source, (str, list)):
            return source  # else the default: config's
    from .config import load_params

    source = load_params(path).data.source  # raises on a bad file
    if key is not None:
        try:
            VALIDATED.parent.mkdir(exist_ok=True)
            atomic_write_text(VALIDATED, json.dumps([*[k for k in _validated() if k != key], key][-VALIDATED_KEPT:]))
        except OSError:  # a read-only install: validate every time
            pass
    return source


def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _walk(top: str):
    """(path, stat) of every file under top, depth first, in name order (os.scandir: one stat per file)."""
    with os.scandir(top) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=True):
                yield from _walk(entry.path)
            elif entry.is_file(follow_symlinks=True):
                yield entry.path, entry.stat()


def _local_files(path: str) -> tuple[str, list[tuple[str, os.stat_result]]]:
    """(the folder names are relative to, [(file, stat)]) for a local folder, file or glob."""
    if os.path.isdir(path):
        return path, list(_walk(path))
    base = os.path.dirname(re.split(r"[*?\[]", path, maxsplit=1)[0])
    return base, [(f, os.stat(f)) for f in sorted(glob.glob(path)) if os.path.isfile(f)]


def _local(path: str, given: str) -> dict:
    base, files = _local_files(path)
    if not files:
        where = "" if path == given else f" (resolved to {path})"
        raise DataError(f"params.yaml: data.source {given!r}{where}: no such file, folder or glob match. "
                        "Fix: set data.source to an existing zarr store, netCDF file or glob (or 'synthetic').")
    entries, metadata = [], {}
    for name, st in files:
        rel = os.path.relpath(name, base or ".")
        entries.append([rel, st.st_size, st.st_mtime_ns])
        if os.path.basename(name) in METADATA_FILES:
            metadata[rel] = hashlib.sha256(Path(name).read_bytes()).hexdigest()
    newest = max(st.st_mtime_ns for _, st in files)
    return {"kind": "local", "files": len(entries), "bytes": sum(e[1] for e in entries),
            "newest_mtime": datetime.fromtimestamp(newest / 1e9, UTC).isoformat(timespec="seconds"),
            "metadata_sha256": _sha256(metadata), "sha256": _sha256([entries, metadata])}


def _versions(info: dict) -> dict:
    return {k: str(info[k]) for k in VERSION_FIELDS if info.get(k) not in (None, "")}


def _remote_objects(fs, root: str) -> list[str]:
    """The objects fingerprinted for a URL: the files of a glob; for a zarr store its metadata objects (top level
    and one level down, the arrays)."""
    if any(c in root for c in "*?["):
        return sorted(fs.glob(root))
    if not fs.isdir(root):
        return [root]
    found = []
    for entry in [root, *sorted(e for e in fs.ls(root, detail=False) if fs.isdir(e))]:
        found += [f"{entry.rstrip('/')}/{m}" for m in METADATA_FILES if fs.exists(f"{entry.rstrip('/')}/{m}")]
    return found


def _remote(url: str) -> dict:
    import fsspec

    remote.require_reachable(url)
    fs, root = fsspec.core.url_to_fs(url)
    objects = _remote_objects(fs, root)
    if not objects:
        raise DataError(f"params.yaml: data.source {url!r}: nothing found there. Fix: check the URL.")
    entries, metadata = [], {}
    for obj in objects:
        entries.append([obj, _versions(fs.info(obj))])
        if obj.rsplit("/", 1)[-1] in METADATA_FILES:
            metadata[obj] = hashlib.sha256(fs.cat_file(obj)).hexdigest()
    return {"kind": "remote", "files": len(entries), "metadata_sha256": _sha256(metadata),
            "sha256": _sha256([entries, metadata])}


def compute(source: str | list[str], root: Path | str = ".") -> dict:
    """The fingerprint of a data.source value (a dict with "source", "kind" and "sha256", JSON-able); a relative
    local path is taken from `root`, the project root. A list of entries gives kind "list": each entry's
    fingerprint, and a sha256 over them in order."""
    if isinstance(source, (list, tuple)):
        parts = [compute(entry, root) for entry in source]
        return {"source": list(source), "kind": "list", "files": sum(p.get("files", 0) for p in parts),
                "entries": parts, "sha256": _sha256([p["sha256"] for p in parts])}
    if source == "synthetic":
        found = {"kind": "synthetic", "sha256": _sha256("synthetic")}
    elif remote.protocol(source) in (None, "file", "local"):
        found = _local(os.path.join(root, source.split("://", 1)[-1]), source)
    else:
        found = _remote(source)
    return {"source": source, **found}


__all__ = ["FINGERPRINT", "compute", "data_source", "read", "refresh", "write"]


def write(found: dict, out: Path | str = FINGERPRINT) -> bool:
    """Write the fingerprint unless the file already holds these bytes (then it is left alone, its mtime too, so
    DVC need not rehash it). True when the file was written."""
    text = json.dumps(found, indent=1, sort_keys=True) + "\n"
    try:
        if Path(out).read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(out, text)
    return True


def refresh(root: Path | str = ".") -> bool:
    """Bring the project's data/source.fingerprint.json up to date with data.source now (what the `fingerprint`
    stage does first on every `dvc repro`), so that `dvc status` afterwards sees a changed source as a changed
    dependency of the shards. True when the source changed since the file was written."""
    root = Path(root)
    return write(compute(data_source(root / "params.yaml"), root), root / FINGERPRINT)


def main(argv: list[str] | None = None) -> int:
    p = cliargs.parser("fingerprint", __doc__, "params")
    p.add_argument("--out", default=FINGERPRINT, help=f"JSON file to write (default: {FINGERPRINT})")
    args = p.parse_args(argv)
    found = compute(data_source(args.params))
    changed = write(found, args.out)
    print(f"{args.out}: {found['kind']} source {found['source']!r}, sha256 {found['sha256'][:12]}"
          f" ({'changed' if changed else 'unchanged'})", file=sys.stderr)
    return 0
