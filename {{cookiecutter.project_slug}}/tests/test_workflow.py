"""The Snakemake DAG and the DVC stages agree, and sharding fans out one job per time block."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def stages(project_root: Path) -> dict:
    return yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"]


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env_path = str(cwd / "src")
    import os

    env = {**os.environ, "PYTHONPATH": env_path, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if check and result.returncode:
        raise AssertionError(result.stdout[-5000:] + result.stderr[-5000:])
    return result


def rule_outputs(project: Path) -> dict[str, str]:
    """output file -> rule, from `snakemake --summary` (plans only; runs nothing)."""
    out = snakemake(project, "--summary", "--cores", "1", "--forceall").stdout
    table = {}
    for line in out.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 3:
            table[cols[0]] = cols[2]
    return table


def allowed_rules(cmd: str) -> list[str]:
    return cmd.split("--allowed-rules", 1)[1].split()


def test_every_dvc_out_is_made_by_the_stage_rules(project_root):
    outputs = rule_outputs(project_root)
    for name, stage in stages(project_root).items():
        rules = set(allowed_rules(stage["cmd"]))
        declared = [next(iter(o)) if isinstance(o, dict) else o for key in ("outs", "metrics", "plots")
                    for o in stage.get(key, [])]  # fmt: skip
        for out in declared:
            makers = {rule for path, rule in outputs.items() if path == out or path.startswith(out.rstrip("/") + "/")}
            assert makers, f"dvc.yaml stage {name}: out {out} is no Snakemake rule's output"
            assert makers <= rules, f"dvc.yaml stage {name}: {out} is made by {makers}, not by its rules {rules}"


def test_every_stage_param_is_read_by_its_rules(project_root):
    """DVC reruns a stage when its params change; Snakemake reruns a rule when its `section(...)` changes:
    the two lists must name the same params.yaml sections."""
    rules_text = "\n".join(p.read_text() for p in (project_root / "workflow" / "rules").glob("*.smk"))
    sections = {}
    for block in re.split(r"^(?=rule \w+:)", rules_text, flags=re.M):
        name = re.match(r"rule (\w+):", block)
        read = re.search(r"params:\s*\n\s*section\(([^)]*)\)", block)
        if name:
            sections[name.group(1)] = set(re.findall(r'"(\w+)"', read.group(1))) if read else set()
    for name, stage in stages(project_root).items():
        read = set().union(*(sections.get(rule, set()) for rule in allowed_rules(stage["cmd"])))
        declared = {p.split(".")[0] for p in stage.get("params", [])}
        assert declared == read, f"stage {name}: dvc.yaml params {declared} but its rules read {read}"


@pytest.fixture()
def small_project(project_root, tmp_path) -> Path:
    """A copy of this project with a short period split into 4 blocks."""
    dest = tmp_path / "project"
    outputs = {".git", ".snakemake", "data", "results", "runs", "models", "logs", ".venv", ".nox"}
    shutil.copytree(project_root, dest, ignore=lambda d, names: outputs & set(names) if Path(d) == project_root else ())
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"].update(
        start="2000-01-01", end="2000-01-20T18:00", block_size=20,
        splits={"train": ["2000-01-01", "2000-01-12T18:00"], "val": ["2000-01-13", "2000-01-15T18:00"],
                "test": ["2000-01-16", "2000-01-20T18:00"]},
    )  # fmt: skip
    params["data"]["synthetic"].update(nlat=8, nlon=16)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def shard_jobs(output: str) -> int:
    found = re.search(r"^shard\s+(\d+)", output, re.M)
    return int(found.group(1)) if found else 0


def test_sharding_fans_out_and_rebuilds_only_what_is_missing(small_project):
    first = snakemake(small_project, "shards", "--cores", "2")
    assert shard_jobs(first.stdout + first.stderr) == 4
    shards = sorted((small_project / "data" / "shards").glob("block_*.zarr"))
    assert [p.name for p in shards] == [f"block_{i:04d}.zarr" for i in range(4)]
    untouched = {p.name: p.stat().st_mtime_ns for p in shards}

    shutil.rmtree(shards[2])
    second = snakemake(small_project, "shards", "--cores", "2")
    assert shard_jobs(second.stdout + second.stderr) == 1
    for p in sorted((small_project / "data" / "shards").glob("block_*.zarr")):
        if p.name != "block_0002.zarr":
            assert p.stat().st_mtime_ns == untouched[p.name], f"{p.name} was rebuilt"

    again = snakemake(small_project, "shards", "--cores", "2")
    assert shard_jobs(again.stdout + again.stderr) == 0


def test_shards_target_builds_the_static_fields_and_drops_them_when_unlisted(small_project, pkg_name):
    """`snakemake shards` (the DVC shards stage) writes data/shards/static.zarr when data.static lists fields, and
    removes it again when the list is emptied (a stale store must not be mistaken for the current one)."""
    import importlib

    path = small_project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["data"]["static"] = ["land_sea_mask", "geopotential_at_surface"]
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    done = snakemake(small_project, "shards", "--cores", "2")
    assert re.search(r"^static\s+1", done.stdout + done.stderr, re.M), "one static job"
    store = small_project / "data" / "shards" / "static.zarr"
    names, fields = importlib.import_module(f"{pkg_name}.data.statics").read_static(store)
    assert names == params["data"]["static"] and fields.shape == (2, 8, 16)
    assert len(list(store.parent.glob("block_*.zarr"))) == 4
    params["data"]["static"] = []
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    snakemake(small_project, "shards", "--cores", "2", "--rerun-triggers", "mtime")  # the blocks are unchanged
    assert not store.exists() and len(list(store.parent.glob("block_*.zarr"))) == 4
