"""Checksums of shard stores: a manifest written with each shard, checked when the shard is read.

`data/checksums.json` inside the store = {"format": 1, "hash": "xxh3_64", "files": {path: [bytes, hex digest]}},
listing every other file of the store (metadata, coordinates, one chunk file per time step of `data`). It lives in
the `data` array's folder because zarr ignores files there (at the store's root it would warn on every open).

What is checked, and when (ShardChecks):
  opening a shard   every listed file exists with its listed size (a stat each: a deleted or truncated chunk is
                    found before training starts); the small files (metadata, coordinates) are hashed
  each chunk read   the byte count (the loader's readinto must fill the buffer and hit the end of the file), and
                    the content hash the first time this process reads that chunk (`verify="first"`, the default) or
                    every time (`verify="always"`)
Why xxh3_64: ~70 GB/s on one core, on bytes still in cache right after the read, against ~25 GB/s for crc32c and
~5 GB/s for zlib.crc32 (measured with `nox -s bench`). A page-cache read runs at ~20 GB/s here, so hashing every
read would cost ~30 % of it; hashing each chunk once per process costs that only in the first epoch, and a chunk
damaged on disk is still caught the first time anything reads it.
A damaged shard raises DataError naming the shard, the time step, the file and the fix.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

from ..errors import DataError
from ..fileio import atomic_write_text

RAW_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}]  # a shard's chunks: plain float32 bytes
MANIFEST = "data/checksums.json"
HASH = "xxh3_64"
BLOCK = 8 * 2**20  # bytes hashed per read when hashing whole files


def new_hasher():
    import xxhash

    return xxhash.xxh3_64()


def file_digest(path: Path) -> str:
    hasher = new_hasher()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(max(1, min(BLOCK, os.fstat(f.fileno()).st_size)))  # a chunk's size, not 8 MiB, per file
        view = memoryview(buf)
        while n := f.readinto(buf):
            hasher.update(view[:n])
    return hasher.hexdigest()


def raw_chunk_files(store: str | Path) -> list[Path] | None:
    """Chunk files of a shard's `data` array, one per time step, if the chunks are plain little-endian float32 bytes
    (then reading a file into a buffer is exactly reading the array); None when another layout needs zarr to decode."""
    array_dir = Path(store) / "data"
    try:
        meta = json.loads((array_dir / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    shape = meta.get("shape", [])
    plain = (
        sys.byteorder == "little"
        and meta.get("data_type") == "float32"
        and meta.get("codecs") == RAW_CODECS
        and meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape") == [1] + shape[1:]
        and meta.get("chunk_key_encoding", {}).get("name") == "default"
        and len(shape) == 4
    )
    if not plain:
        return None
    sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")  # "/": older shards
    return [array_dir / sep.join(["c", str(t), "0", "0", "0"]) for t in range(shape[0])]


def _listing(store: Path) -> dict[str, list]:
    """{relative path: [bytes, xxh3 hex]} of every file of a store but its manifest."""
    return {rel: [path.stat().st_size, file_digest(path)] for path in sorted(store.rglob("*"))
            if path.is_file() and (rel := path.relative_to(store).as_posix()) != MANIFEST}


def write_manifest(store: str | Path) -> Path:
    """Hash every file of a finished (not yet published) shard store into its manifest.json."""
    store = Path(store)
    payload = {"format": 1, "hash": HASH, "files": _listing(store)}
    atomic_write_text(store / MANIFEST, json.dumps(payload, indent=0) + "\n")
    return store / MANIFEST


def store_digest(store: str | Path) -> str:
    """sha256 of a store's content: of its manifest (every file's size and xxh3), or, for a store without one
    (static.zarr, older shards), of the same listing computed here."""
    import hashlib

    store = Path(store)
    manifest = store / MANIFEST
    text = manifest.read_bytes() if manifest.is_file() else json.dumps(_listing(store), sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()


def write_index(stores: list[str], out: str | Path) -> Path:
    """The shards' index ({"format": 1, "stores": {name: store_digest}}), what the DVC stages that read the shards
    depend on instead of the data/shards folder. DVC hashes a folder dependency by looking at every file in it, for
    each stage that lists it, on every `dvc repro` (at 0.25 degrees, tens of thousands of chunk files, five times);
    this file changes exactly when a store's content does."""
    payload = {"format": 1, "stores": {Path(s).name: store_digest(s) for s in sorted(stores)}}
    atomic_write_text(out, json.dumps(payload, indent=1) + "\n")
    return Path(out)


def fix_hint(store: str | Path) -> str:
    return (f"Fix: `dvc checkout data/shards` restores the shards from the DVC cache (`dvc pull data/shards` from the "
            f"remote), or rerun that shard's job: `snakemake --cores 1 --force {store}`.")


class ShardChecks:
    """The manifest of one shard store, checked at open (`chunk_files`: the data array's chunk file of each time
    step, or None for a layout without one file per step; `label(t)`: time step t as text, for messages;
    `chunk_bytes`: the size of one step's chunk file, checked even in a store without a manifest)."""

    def __init__(self, store: str | Path, chunk_files: list[Path] | None, label, chunk_bytes: int | None = None):
        self.store, self.label = str(store), label
        root = Path(store)
        self.paths = list(chunk_files or [])
        self.rel = [p.relative_to(root).as_posix() for p in self.paths]
        files = self._manifest(root, chunk_bytes)
        step_of = {rel: t for t, rel in enumerate(self.rel)}
        for t, rel in enumerate(self.rel):
            if rel not in files:
                raise self.damaged(t, f"is not listed in {MANIFEST}")
        for rel, (size, digest) in files.items():
            what = self._file(rel, step_of.get(rel))
            try:
                actual = os.stat(root / rel).st_size
            except FileNotFoundError:
                raise self._error(what, "is missing") from None
            if actual != size:
                raise self._error(what, f"has {actual} bytes, {size} expected (truncated or overwritten)")
            if digest and rel not in step_of and file_digest(root / rel) != digest:
                raise self._error(what, "does not match its checksum (garbled)")
        self.expect = [files[rel] for rel in self.rel]

    def _manifest(self, root: Path, chunk_bytes: int | None) -> dict[str, tuple[int, str | None]]:
        try:
            manifest = json.loads((root / MANIFEST).read_text())
            if manifest.get("hash") != HASH:
                raise ValueError(f"hash {manifest.get('hash')!r}")
            return {str(k): (int(v[0]), str(v[1])) for k, v in manifest["files"].items()}
        except FileNotFoundError:  # a store made by other means (or a copy that lost it): sizes only
            warnings.warn(f"{self.store}: no {MANIFEST}, so a garbled chunk cannot be detected (missing and truncated "
                          f"ones still are). {fix_hint(self.store)}", stacklevel=3)
            return {rel: (chunk_bytes, None) for rel in self.rel} if chunk_bytes else {}
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise DataError(f"{self.store}/{MANIFEST} is damaged ({e}). {fix_hint(self.store)}") from None

    def known(self, t: int) -> bool:
        """Whether time step t has its own chunk file (then reads of it are checked)."""
        return t < len(self.expect)

    def hashable(self, t: int) -> bool:
        """Whether the manifest has a checksum of time step t's chunk file."""
        return t < len(self.expect) and self.expect[t][1] is not None

    def compare(self, t: int, hasher) -> None:
        """Compare the checksum of the bytes of step t's chunk fed to `hasher` (None: not hashed) with the manifest."""
        if hasher is not None and hasher.hexdigest() != self.expect[t][1]:
            raise self.damaged(t, "does not match its checksum (garbled)")

    def check_file(self, t: int, hash_it: bool) -> None:
        """Step t's chunk file exists with its size, and (hash_it) its checksum: for readers other than readinto."""
        try:
            size = os.stat(self.paths[t]).st_size
        except FileNotFoundError:
            raise self.damaged(t, "is missing") from None
        if size != self.expect[t][0]:
            raise self.damaged(t, f"has {size} bytes, {self.expect[t][0]} expected (truncated or overwritten)")
        if hash_it and self.hashable(t) and file_digest(self.paths[t]) != self.expect[t][1]:
            raise self.damaged(t, "does not match its checksum (garbled)")

    def damaged(self, t: int, what: str) -> DataError:
        return self._error(self._file(self.rel[t], t), what)

    def _file(self, rel: str, t: int | None) -> str:
        return f"file {rel}" + (f" (time step {self.label(t)})" if t is not None else "")

    def _error(self, what: str, problem: str) -> DataError:
        return DataError(f"{self.store}: {what} {problem}. The shard is damaged (a partial copy or a filesystem "
                         f"fault). {fix_hint(self.store)}")


def open_checks(store: str | Path, times, step_bytes: int) -> ShardChecks:
    """The checks of one shard store whose `data` array has the time steps `times` (datetime64) and `step_bytes`
    bytes per step: every reader of shards (loader, evaluation, statistics, climatology) opens shards through it."""
    import numpy as np

    times = np.asarray(times).astype("datetime64[m]")
    return ShardChecks(store, raw_chunk_files(store), lambda i: str(times[i]), step_bytes)


class CheckedSteps:
    """Checks each time step of several shards before it is read by a reader other than the loader's readinto:
    the chunk file's existence and size every time, its checksum the first time this process reads it."""

    def __init__(self, checks: list[ShardChecks]):
        self.checks = checks
        self._hashed: set[tuple[int, int]] = set()

    def before_read(self, shard: int, step: int) -> None:
        checks = self.checks[shard]
        if not checks.known(step):
            return
        first = (shard, step) not in self._hashed
        checks.check_file(step, hash_it=first)
        self._hashed.add((shard, step))
