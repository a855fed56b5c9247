"""What ran it: package versions (against the lock), hardware, scheduler job and template origin."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions whose installed version is always listed in the stamp (the full set is checked against the lock).
KEY_PACKAGES = ("torch", "numpy", "xarray", "zarr", "dask", "pydantic", "dvc", "snakemake", "wandb")
LOCK_FILES = ("requirements/lock.txt",)


def find_lock(root: Path | str = ".") -> Path | None:
    for name in LOCK_FILES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def read_lock(path: Path | str) -> dict[str, str]:
    """{normalized name: version} of the `name==version` lines of a pip lock file."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[_norm(name.split("[", 1)[0])] = version.strip()
    return pins


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _lock_info(lock: Path, root: Path | str) -> dict:
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
    return {"path": shown, "sha256": hashlib.sha256(lock.read_bytes()).hexdigest(), "mismatches": mismatches,
            "missing": sorted(missing)}


def package_versions(root: Path | str = ".") -> dict:
    """Key package versions, plus the lock file's hash, every installed version that differs from the lock
    ("mismatches": empty means what is installed is the lock's) and the locked packages not installed
    ("missing": e.g. the wandb or dev extras). A local build tag (torch 2.13.0+cu128 for the lock's 2.13.0)
    is not a mismatch."""
    lock = find_lock(root)
    info = _lock_info(lock, root) if lock else {"path": None, "sha256": None, "mismatches": None, "missing": None}
    return {"packages": {name: _installed(name) for name in KEY_PACKAGES}, "lock": info}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_names_from_smi() -> list[str]:
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [n.strip() for n in res.stdout.splitlines() if n.strip()] if res.returncode == 0 else []


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
    names = _gpu_names_from_smi()
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


def job() -> dict:
    """The scheduler job this runs in: {"scheduler": "slurm" | "pbs" | None, "id": "123" | "77_3" | None}."""
    if os.environ.get("SLURM_JOB_ID"):
        job_id = os.environ["SLURM_JOB_ID"]
        if os.environ.get("SLURM_ARRAY_TASK_ID"):
            job_id += "_" + os.environ["SLURM_ARRAY_TASK_ID"]
        return {"scheduler": "slurm", "id": job_id}
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
