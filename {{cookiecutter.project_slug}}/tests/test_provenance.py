"""Provenance stamps and the dirty-code guard, on throwaway git repositories."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _pkg_name() -> str:
    """The generated package: FORGE_PKG, else the one directory under src/ that has provenance.py."""
    if os.environ.get("FORGE_PKG"):
        return os.environ["FORGE_PKG"]
    src = Path(__file__).resolve().parents[1] / "src"
    return next(p.parent.name for p in src.glob("*/provenance.py"))


prov = importlib.import_module(_pkg_name() + ".provenance")
config = importlib.import_module(_pkg_name() + ".config")
environment = importlib.import_module(_pkg_name() + ".environment")
hashes = importlib.import_module(_pkg_name() + ".hashes")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "DVC_NO_ANALYTICS": "1",
}
DVC_YAML = """\
stages:
  train:
    cmd: python -m pkg.train
    deps: [src]
    params: [seed, train]
    outs: [models/model.pt]
  evaluate:
    cmd: python -m pkg.evaluate
    deps: [src, models/model.pt]
    params: [evaluate]
    outs:
      - results/provenance.json:
          cache: false
    metrics:
      - reports/metrics.json:
          cache: false
"""


@pytest.fixture(autouse=True)
def _git_env(monkeypatch):
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed project: code under src/, params.yaml, dvc.yaml, dvc.lock, a tracked metrics file."""
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "train.py").write_text("LR = 1\n")
    (root / "params.yaml").write_text("seed: 0\ntrain:\n  lr: 0.001\n")
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (root / ".gitignore").write_text("/models\n")
    (root / "reports").mkdir()
    (root / "reports" / "metrics.json").write_text('{"rmse": 1.0}\n')
    (root / "results").mkdir()
    (root / "results" / "provenance.json").write_text("{}\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


def test_clean_repo_state(repo):
    state = prov.git_state(repo)
    assert state["commit"] == git(repo, "rev-parse", "HEAD")
    assert state["branch"] == "main"
    assert state["dirty"] is False and state["changed"] == [] and state["diff_sha256"] is None
    assert len(state["code_sha256"]) == 64
    assert prov.ensure_clean_or_allowed(False, "train", root=repo)["dirty"] is False


def test_edited_source_refuses_train_with_clear_message(repo):
    (repo / "src" / "pkg" / "train.py").write_text("LR = 2\n")
    with pytest.raises(prov.DirtyCodeError) as err:
        prov.ensure_clean_or_allowed(False, "train", root=repo)
    msg = str(err.value)
    assert "train refuses to run" in msg
    assert "src/pkg/train.py" in msg
    assert "train.allow_dirty: true" in msg and "git commit" in msg


def test_allow_dirty_runs_and_stamp_says_dirty(repo):
    (repo / "src" / "pkg" / "train.py").write_text("LR = 2\n")
    state = prov.ensure_clean_or_allowed(True, "evaluate", root=repo)
    assert state["dirty"] is True and len(state["diff_sha256"]) == 64
    stamp = prov.collect(params={"seed": 1}, command=["train"], root=repo)
    assert stamp["dirty"] is True
    assert stamp["diff_sha256"] == state["diff_sha256"]
    assert stamp["changed"] == ["src/pkg/train.py"]
    assert stamp["commit"] == git(repo, "rev-parse", "HEAD")


def test_diff_hash_follows_the_diff(repo):
    target = repo / "src" / "pkg" / "train.py"
    target.write_text("LR = 2\n")
    first = prov.git_state(repo)["diff_sha256"]
    assert prov.git_state(repo)["diff_sha256"] == first  # stable
    target.write_text("LR = 3\n")
    assert prov.git_state(repo)["diff_sha256"] != first
    git(repo, "add", "-A")  # staged changes are still uncommitted code
    assert prov.git_state(repo)["dirty"] is True


def test_pipeline_and_experiment_edits_are_not_code(repo):
    # what `dvc exp run -S`, `dvc repro` and DVC itself rewrite: params, lock, .gitignore, outs, results, *.dvc
    (repo / "params.yaml").write_text("seed: 0\ntrain:\n  lr: 0.01\n")
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {train: {}}\n")
    (repo / ".gitignore").write_text("/models\n/data\n")
    (repo / "reports" / "metrics.json").write_text('{"rmse": 0.5}\n')
    (repo / "results" / "provenance.json").write_text('{"a": 1}\n')
    (repo / "src" / "new_untracked.py").write_text("x = 1\n")  # untracked files are not code
    state = prov.ensure_clean_or_allowed(False, "train", root=repo)
    assert state["dirty"] is False and state["changed"] == []


def test_deleting_or_editing_dvc_yaml_is_code(repo):
    (repo / "dvc.yaml").write_text(DVC_YAML.replace("python -m pkg.train", "python -m pkg.train --fast"))
    assert prov.git_state(repo)["changed"] == ["dvc.yaml"]
    git(repo, "checkout", "--", "dvc.yaml")
    (repo / "src" / "pkg" / "train.py").unlink()
    assert prov.git_state(repo)["changed"] == ["src/pkg/train.py"]


def test_code_hash_ignores_params_commits_but_not_code_commits(repo):
    before = prov.git_state(repo)["code_sha256"]
    (repo / "params.yaml").write_text("seed: 1\ntrain:\n  lr: 0.001\n")
    git(repo, "commit", "-qam", "params only")
    assert prov.git_state(repo)["code_sha256"] == before
    (repo / "src" / "pkg" / "train.py").write_text("LR = 5\n")
    git(repo, "commit", "-qam", "code")
    assert prov.git_state(repo)["code_sha256"] != before


def test_project_in_a_subdirectory_of_the_repo(repo, tmp_path):
    # only the project directory's files count; a change elsewhere in the repository is not this project's code
    (repo / "other.txt").write_text("a\n")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-qm", "other")
    (repo / "other.txt").write_text("b\n")
    sub = repo / "src"
    assert prov.git_state(sub)["dirty"] is False
    assert prov.git_state(repo)["changed"] == ["other.txt"]


def test_outside_git_and_before_first_commit(tmp_path, capsys):
    state = prov.ensure_clean_or_allowed(False, "train", root=tmp_path)
    assert state["commit"] == "unknown" and state["dirty"] is None
    assert "warning" in capsys.readouterr().err
    git(tmp_path, "init", "-q")
    assert prov.git_state(tmp_path)["commit"] == "unknown"
    stamp = prov.collect(root=tmp_path)
    assert stamp["commit"] == "unknown" and stamp["dirty"] is None
    json.dumps(stamp)


def test_params_hash_is_of_the_values_used(tmp_path):
    rendered = Path(__file__).resolve().parents[1].joinpath("params.yaml").read_text()
    (tmp_path / "a.yaml").write_text(rendered)
    (tmp_path / "b.yaml").write_text(rendered.replace("lr: 2.0e-3", "lr: 0.002"))  # same value, other spelling
    (tmp_path / "c.yaml").write_text(rendered.replace("lr: 2.0e-3", "lr: 0.003"))
    a, b, c = (config.load_params(tmp_path / f"{n}.yaml") for n in "abc")
    assert prov.params_hash(a) == prov.params_hash(b) != prov.params_hash(c)
    assert prov.params_hash(a) == prov.params_hash(a.model_dump(mode="json"))
    assert prov.params_hash({"x": 1, "y": 2}) == prov.params_hash({"y": 2, "x": 1})
    stamp = prov.collect(params=a, root=tmp_path)
    assert stamp["seed"] == a.seed and stamp["params_sha256"] == prov.params_hash(a)
    assert stamp["params"]["train"]["lr"] == 0.002


def test_md5_matches_dvc(tmp_path):
    """Files and directories hash to exactly what `dvc add` records."""
    git(tmp_path, "init", "-q")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.bin").write_bytes(bytes(range(256)) * 10)
    (data / "sub" / "b.txt").write_text("line\r\nother\n")
    (tmp_path / "one.txt").write_text("hello\r\n")
    run = [sys.executable, "-m", "dvc"]
    subprocess.run([*run, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".dvcignore").write_text("__pycache__/\n")  # left out of directory hashes, by DVC and by us
    (data / "__pycache__").mkdir()
    (data / "__pycache__" / "m.pyc").write_bytes(b"cache")
    subprocess.run([*run, "add", "-q", "data", "one.txt"], cwd=tmp_path, check=True, capture_output=True)
    import yaml

    for name in ("data", "one.txt"):
        recorded = yaml.safe_load((tmp_path / f"{name}.dvc").read_text())["outs"][0]["md5"]
        assert prov.md5_path(tmp_path / name, root=tmp_path) == recorded


def test_inputs_given_computed_or_from_dvc_lock(tmp_path, monkeypatch):
    (tmp_path / "stats.json").write_text("{}")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  data:\n    cmd: x\n    outs:\n    - path: data/shards\n"
        "      md5: abc.dir\n      size: 10\n      nfiles: 1\n"
    )
    got = prov.input_hashes({"stats.json": None, "data/shards": None, "x": "given123", "nope": None},
                            root=tmp_path)
    assert got["stats.json"] == {"md5": prov.md5_file(tmp_path / "stats.json"), "from": "computed"}
    assert got["data/shards"] == {"md5": "abc.dir", "from": "dvc.lock"}
    assert got["x"] == {"md5": "given123", "from": "given"}
    assert got["nope"] == {"md5": None, "from": "missing"}
    monkeypatch.setattr(hashes, "HASH_LIMIT_BYTES", 0)  # too big to hash: the lock entry is used
    (tmp_path / "data" / "shards").mkdir(parents=True)
    (tmp_path / "data" / "shards" / "f").write_text("1")
    assert prov.input_hashes(["data/shards"], root=tmp_path)["data/shards"]["from"] == "dvc.lock"


def test_versions_checked_against_the_lock(tmp_path):
    numpy_version = importlib.metadata.version("numpy")
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "lock.txt").write_text(
        f"# header\nnumpy=={numpy_version}\npydantic==0.0.1\nnot-a-real-package-xyz==1.0\n"
    )
    info = environment.package_versions(tmp_path)
    assert info["packages"]["numpy"] == numpy_version
    assert info["lock"]["path"] == "requirements/lock.txt" and len(info["lock"]["sha256"]) == 64
    assert set(info["lock"]["mismatches"]) == {"pydantic"}
    assert info["lock"]["mismatches"]["pydantic"]["lock"] == "0.0.1"
    assert info["lock"]["missing"] == ["not-a-real-package-xyz"]


def test_job_from_scheduler_env(monkeypatch, repo):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "PBS_JOBID"):
        monkeypatch.delenv(key, raising=False)
    assert environment.job() == {"scheduler": None, "id": None}
    monkeypatch.setenv("PBS_JOBID", "123.desched1")
    assert environment.job() == {"scheduler": "pbs", "id": "123.desched1"}
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert environment.job() == {"scheduler": "slurm", "id": "77_3"}
    stamp = prov.collect(root=repo)
    assert stamp["job"] == {"scheduler": "slurm", "id": "77_3"} and "job_id" not in stamp  # one field, not two


def test_write_provenance_records_this_run(repo, monkeypatch):
    """The file holds facts known independently of the stamp: HEAD, the params given, the command, this machine."""
    monkeypatch.setenv("WORLD_SIZE", "3")
    out = repo / "results" / "provenance.json"
    prov.write_provenance(out, params={"seed": 7, "train": {"lr": 0.5}}, command="evaluate --x", root=repo,
                          inputs={"params.yaml": None})
    loaded = json.loads(out.read_text())
    assert loaded["commit"] == git(repo, "rev-parse", "HEAD") and loaded["branch"] == "main"
    assert loaded["seed"] == 7 and loaded["params"] == {"seed": 7, "train": {"lr": 0.5}}
    assert loaded["params_sha256"] == prov.params_hash({"train": {"lr": 0.5}, "seed": 7})
    assert loaded["command"] == "evaluate --x" and loaded["world_size"] == 3
    assert loaded["inputs"]["params.yaml"] == {"md5": prov.md5_file(repo / "params.yaml"), "from": "computed"}
    assert loaded["hardware"]["cpu_count"] == os.cpu_count() and "gpu" in loaded["hardware"]
    assert loaded["versions"]["numpy"] == importlib.metadata.version("numpy")
    assert loaded["source"] is None  # no data/source.fingerprint.json in this repository
    (repo / "data").mkdir()
    (repo / "data" / "source.fingerprint.json").write_text('{"source": "x.zarr", "sha256": "ab"}')
    assert prov.collect(root=repo)["source"] == {"source": "x.zarr", "sha256": "ab"}
    assert prov.git_state(repo)["dirty"] is False  # writing results does not dirty the tree


def test_param_differences():
    old = {"seed": 0, "train": {"lr": 0.001, "max_steps": 10}, "model": {"width": 8}}
    new = {"seed": 0, "train": {"lr": 0.004, "max_steps": 10}, "model": {"width": 8}}
    assert prov.param_differences(old, new) == [("train.lr", 0.001, 0.004)]
    assert prov.param_differences(old, new, ["seed", "model"]) == []
    assert prov.param_differences(old, new, ["train.lr"]) == [("train.lr", 0.001, 0.004)]
    # number spellings (PyYAML reads 1e-3 as a string, DVC as a float) are the same value; a bool is no number
    assert prov.param_differences({"a": {"lr": "1e-3", "l": [1, "2.0"]}}, {"a": {"lr": 0.001, "l": [1.0, 2]}}) == []
    assert prov.param_differences({"x": True}, {"x": 1}) == [("x", True, 1)]
    assert prov.param_differences({"a": {"b": 1}}, {"a": {}}, ["a.b"]) == [("a.b", 1, None)]  # a key gone
