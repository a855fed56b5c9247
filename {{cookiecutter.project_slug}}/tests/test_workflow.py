"""The Snakemake DAG and the DVC stages agree (outputs, params, code deps), the workflow is lint-clean, and sharding
fans out one job per time block."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def stages(project_root: Path) -> dict:
    """The stages of dvc.yaml and workflow/dvc.yaml (the fingerprint stage, run from the project root)."""
    found = {}
    for name in ("dvc.yaml", "workflow/dvc.yaml"):
        found.update(yaml.safe_load((project_root / name).read_text())["stages"])
    return found


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env_path = str(cwd / "src")
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
    """The rules a stage runs: `--allowed-rules R ...`, or for `<package> COMMAND ...` the rule of that name."""
    if "--allowed-rules" in cmd:
        return cmd.split("--allowed-rules", 1)[1].split()
    return [cmd.split()[1]]


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


def test_snakemake_lint_is_clean(project_root):
    """`snakemake --lint` exits 1 on any lint (rules wired by name, no literal paths or outside variables)."""
    result = snakemake(project_root, "--lint", check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_dvc_yaml_deps_and_params_are_the_codes(pkg_name, project_root):
    """Each stage's code deps = the import closure of what its rules run; its params = the leaf keys they read."""
    deps = importlib.import_module(f"{pkg_name}.deps")
    assert deps.check(project_root) == []
    for stage in stages(project_root).values():
        assert all(not isinstance(p, str) or "." in p or p == "seed" for p in stage.get("params", [])), stage


def test_an_import_without_a_dep_fails(pkg_name, project_root, tmp_path, monkeypatch):
    """The check above can fail: a copy of the package where data/stats.py imports one more module, after a check of
    the unchanged copy filled the imports cache (which must not hide the new import)."""
    deps = importlib.import_module(f"{pkg_name}.deps")
    copy = tmp_path / "src" / pkg_name
    shutil.copytree(project_root / "src" / pkg_name, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "workflow"):
        (tmp_path / name).symlink_to(project_root / name)
    monkeypatch.setattr(deps, "PACKAGE_DIR", copy)
    deps.imported_modules.cache_clear()
    assert deps.check(tmp_path) == []
    assert "data/stats.py" in json.loads((copy / deps.IMPORTS_CACHE).read_text())
    stats = copy / "data" / "stats.py"
    stats.write_text(stats.read_text() + "\n\ndef _later():\n    from ..metrics import rmse  # noqa: F401\n")
    deps.imported_modules.cache_clear()  # a new process, as the next `snakemake` or `dvc repro`
    problems = deps.check(tmp_path)
    assert f"dvc.yaml stage stats: deps lack src/{pkg_name}/metrics.py (imported by data/stats.py)." in problems[0]
    assert any(p.startswith("dvc.yaml stage train: deps lack") for p in problems)  # train imports stats too


def test_the_imports_cache_is_used(pkg_name, project_root, tmp_path, monkeypatch):
    """Once a file's imports are cached under its text's sha256, a new process does not parse it again."""
    deps = importlib.import_module(f"{pkg_name}.deps")
    copy = tmp_path / pkg_name
    shutil.copytree(project_root / "src" / pkg_name, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(deps, "PACKAGE_DIR", copy)
    deps.imported_modules.cache_clear()
    first = deps.closure([f"{pkg_name}.train"])
    deps.imported_modules.cache_clear()

    def no_parsing(text, path):
        raise AssertionError(f"{path} parsed again")

    monkeypatch.setattr(deps, "_parsed_imports", no_parsing)
    assert deps.closure([f"{pkg_name}.train"]) == first
    deps.imported_modules.cache_clear()


def test_the_fingerprint_stage_has_a_dvc_yaml_of_its_own(pkg_name, project_root):
    """The stage that runs on every `dvc repro` is in workflow/dvc.yaml (run from the project root): DVC rewrites
    the lock file of each stage it runs, and so a no-op repro rewrites only workflow/dvc.lock, not the pipeline's
    dvc.lock. dvcfile reads both files; a stage is named as DVC names it."""
    dvcfile = importlib.import_module(f"{pkg_name}.dvcfile")
    found = dvcfile.stages(project_root)
    fingerprint = found["workflow/dvc.yaml:fingerprint"]
    assert (fingerprint.file, fingerprint.wdir, fingerprint.always_changed) == ("workflow/dvc.yaml", ".", True)
    assert fingerprint.outs == ("data/source.fingerprint.json",) and fingerprint.rules() == ["fingerprint"]
    assert f"src/{pkg_name}/fingerprint.py" in fingerprint.deps
    assert "data/source.fingerprint.json" in found["shards"].deps
    assert [s.name for s in found.values() if s.always_changed] == ["fingerprint"]


def test_paths_of_a_stage_in_another_folder_are_the_project_roots(pkg_name, tmp_path):
    """A stage of workflow/dvc.yaml without `wdir` runs in workflow/: its deps, outs and locked paths (DVC writes
    them relative to the stage's folder) come out relative to the project root, like those of dvc.yaml."""
    dvcfile = importlib.import_module(f"{pkg_name}.dvcfile")
    (tmp_path / "workflow").mkdir()
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "x", "deps": ["in.txt"], "outs": ["out"]}}}))
    (tmp_path / "workflow" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "b": {"cmd": "y", "deps": ["../out", "b.py"], "outs": [{"b.json": {"cache": False}}]}}}))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "a": {"cmd": "x", "deps": [{"path": "in.txt", "md5": "1"}], "outs": [{"path": "out", "md5": "2"}]}}}))
    (tmp_path / "workflow" / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "b": {"cmd": "y", "deps": [{"path": "../out", "md5": "2"}, {"path": "b.py", "md5": "3"}],
              "outs": [{"path": "b.json", "md5": "4"}]}}}))
    found = dvcfile.stages(tmp_path)
    assert list(found) == ["a", "workflow/dvc.yaml:b"]
    b = found["workflow/dvc.yaml:b"]
    assert (b.deps, b.outs, b.uncached, b.wdir) == (("out", "workflow/b.py"), ("workflow/b.json",),
                                                    ("workflow/b.json",), "workflow")
    assert dvcfile.stage_of("workflow/b.json", found) is b
    assert dvcfile.lock_hashes(dvcfile.read_lock(tmp_path)) == {
        "in.txt": "1", "out": "2", "workflow/b.py": "3", "workflow/b.json": "4"}
    assert set(dvcfile.read_lock(tmp_path)["stages"]) == {"a", "workflow/dvc.yaml:b"}


def test_deps_check_and_write_cover_workflow_dvc_yaml(pkg_name, project_root, tmp_path):
    """A code dep missing from the fingerprint stage is named with its file, and `deps --write` puts it back there,
    leaving the file as the template wrote it."""
    deps = importlib.import_module(f"{pkg_name}.deps")
    (tmp_path / "workflow").mkdir()
    (tmp_path / "src").symlink_to(project_root / "src")
    (tmp_path / "workflow" / "rules").symlink_to(project_root / "workflow" / "rules")
    shutil.copy(project_root / "dvc.yaml", tmp_path / "dvc.yaml")
    text = (project_root / "workflow" / "dvc.yaml").read_text()
    line = f"      - src/{pkg_name}/remote.py\n"
    assert line in text
    (tmp_path / "workflow" / "dvc.yaml").write_text(text.replace(line, ""))
    problems = deps.check(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(
        f"workflow/dvc.yaml stage fingerprint: deps lack src/{pkg_name}/remote.py"), problems
    assert deps.write(tmp_path) == [tmp_path / "dvc.yaml", tmp_path / "workflow" / "dvc.yaml"]
    assert deps.check(tmp_path) == []
    assert (tmp_path / "workflow" / "dvc.yaml").read_text() == text


def rule_blocks(project_root: Path) -> dict[str, str]:
    text = "\n".join(p.read_text() for p in sorted((project_root / "workflow" / "rules").glob("*.smk")))
    return {m.group(1): block for block in re.split(r"^(?=rule \w+:)", text, flags=re.M)
            if (m := re.match(r"rule (\w+):", block))}


def test_rules_read_what_deps_says(pkg_name, project_root):
    """Snakemake reruns a rule when its `params: read=` change, DVC a stage when its params do: both are the leaf
    keys of deps.RULES, and each rule's shell line runs the commands deps.RULES names."""
    deps = importlib.import_module(f"{pkg_name}.deps")
    pipeline = importlib.import_module(f"{pkg_name}.pipeline")
    blocks = rule_blocks(project_root)
    assert set(blocks) == set(deps.RULES), "every rule is in deps.RULES and the other way round"
    plan = pipeline.Plan(params=importlib.import_module(f"{pkg_name}.config").load_params(
        project_root / "params.yaml"), blocks=["0000"], source_digest="")
    for name, rule in deps.RULES.items():
        assert re.findall(r"\{params\.cli\} ([\w-]+)", blocks[name]) == list(rule.commands), name
        if rule.commands:
            assert f'read=PLAN.reads("{name}")' in blocks[name] and f'code=PLAN.code("{name}")' in blocks[name]
            assert list(plan.reads(name)) == deps.param_keys([name])
    for name, stage in stages(project_root).items():
        assert stage.get("params", []) == deps.param_keys(allowed_rules(stage["cmd"])), name
    assert "data.splits.test" not in deps.param_keys(["fingerprint", "synthesize", "shard", "stats", "train"])


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


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@e.org", "GIT_COMMITTER_NAME": "T",
           "GIT_COMMITTER_EMAIL": "t@e.org", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def local_source(project: Path, pkg_name: str, dest: Path) -> Path:
    """A 'real' local zarr source: the synthetic atmosphere of the project's params, written as a plain store."""
    config = importlib.import_module(f"{pkg_name}.config")
    synthetic = importlib.import_module(f"{pkg_name}.data.synthetic")
    synthetic.generate(config.load_params(project / "params.yaml")).to_zarr(dest, mode="w", zarr_format=3,
                                                                              consolidated=False)
    return dest


def test_real_source_never_synthesizes_and_its_change_reruns_the_shards(small_project, pkg_name, tmp_path):
    """With data.source a local zarr store: the shards stage (its dvc.yaml command) makes no synthetic store;
    after one value of the store changes, the fingerprint (refreshed by `fingerprint`) makes `dvc status` list
    the shards stage, and `verify` sees it before the refresh."""
    source = local_source(small_project, pkg_name, tmp_path / "era5.zarr")
    params = yaml.safe_load((small_project / "params.yaml").read_text())
    params["data"].update(source=str(source), variables=["geopotential", "temperature", "2m_temperature"])
    (small_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(small_project, "git", "init", "-q", "-b", "main")
    if not (small_project / ".dvc").is_dir():  # a copy of a baked project has it already
        sh(small_project, sys.executable, "-m", "dvc", "init", "-q")
    sh(small_project, "git", "add", "-A")
    sh(small_project, "git", "commit", "-qm", "real source")
    sh(small_project, sys.executable, "-m", "dvc", "repro", "-q", "shards")
    assert len(list((small_project / "data" / "shards").glob("block_*.zarr"))) == 4
    assert not (small_project / "data" / "synthetic.zarr").exists()
    sh(small_project, "git", "add", "-A")
    sh(small_project, "git", "commit", "-qm", "shards")

    def status() -> dict:
        return json.loads(sh(small_project, sys.executable, "-m", "dvc", "status", "--json", "shards"))

    assert status() == {}
    import zarr

    temperature = zarr.open_array(source / "temperature", mode="r+")
    temperature[3, 0, 2, 2] = temperature[3, 0, 2, 2] + 1.0
    verify = importlib.import_module(f"{pkg_name}.verify")
    report = verify.Report()
    verify.check_source(report, small_project, params)
    assert report.rows[0][2] == "FAIL" and "changed since the shards were made" in report.rows[0][3]
    assert status() == {}  # plain `dvc status` cannot look at a source outside the repository ...
    # ... `<package> status` refreshes the fingerprint first (as the fingerprint stage does), then asks DVC
    changed = json.loads(sh(small_project, sys.executable, "-m", f"{pkg_name}.cli", "status", "--json", "shards"))
    assert set(changed) == {"shards"}, changed
    assert {"changed deps": {"data/source.fingerprint.json": "modified"}} in changed["shards"]
    assert status() == changed  # the refreshed fingerprint stays: plain `dvc status` now sees it too


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
