"""`verify` on a tiny real DVC pipeline (two stages, plain python commands) in a throwaway git repo."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _pkg_name() -> str:
    if os.environ.get("FORGE_PKG"):
        return os.environ["FORGE_PKG"]
    src = Path(__file__).resolve().parents[1] / "src"
    return next(p.parent.name for p in src.glob("*/verify.py"))


PKG = _pkg_name()
verify = importlib.import_module(PKG + ".verify")
prov = importlib.import_module(PKG + ".provenance")


MAKE = """\
import pathlib, yaml
p = yaml.safe_load(open("params.yaml"))
out = pathlib.Path("data/out"); out.mkdir(parents=True, exist_ok=True)
(out / "a.txt").write_text(f"seed {p['seed']} lr {p['train']['lr']}\\n")
"""
EVAL = """\
import importlib, json, os, pathlib
prov = importlib.import_module(os.environ["FORGE_PKG"] + ".provenance")
config = importlib.import_module(os.environ["FORGE_PKG"] + ".config")
params = config.load_params("params.yaml")
prov.ensure_clean_or_allowed(params.evaluate.allow_dirty, "evaluate")
pathlib.Path("results").mkdir(exist_ok=True)
text = pathlib.Path("data/out/a.txt").read_text()
pathlib.Path("results/metrics.json").write_text(json.dumps({"n": len(text)}) + "\\n")
prov.write_provenance("results/provenance.json", params=params, inputs={"data/out": None})
"""
DVC_YAML = """\
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [seed, train.lr]
    outs: [data/out]
  evaluate:
    cmd: python evaluate_stage.py
    deps: [evaluate_stage.py, data/out]
    params: [evaluate]
    outs:
      - results/provenance.json:
          cache: false
    metrics:
      - results/metrics.json:
          cache: false
"""


def _params_yaml() -> str:
    """The project's params.yaml."""
    return (Path(__file__).resolve().parents[1] / "params.yaml").read_text()


def run(cwd: Path, *cmd: str) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd}: {res.stdout}\n{res.stderr}"
    return res.stdout


def dvc(cwd: Path, *args: str) -> str:
    return run(cwd, sys.executable, "-m", "dvc", *args)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    for key, value in {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@e.org", "GIT_COMMITTER_NAME": "T",
                       "GIT_COMMITTER_EMAIL": "t@e.org", "GIT_CONFIG_GLOBAL": os.devnull,
                       "GIT_CONFIG_NOSYSTEM": "1", "DVC_NO_ANALYTICS": "1", "FORGE_PKG": PKG}.items():
        monkeypatch.setenv(key, value)
    # stage commands say `python`: make it this interpreter (which can import the package)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(_params_yaml())
    (root / "make.py").write_text(MAKE)
    (root / "evaluate_stage.py").write_text(EVAL)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / ".dvcignore").write_text("__pycache__/\n")
    run(root, "git", "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "pipeline")
    dvc(root, "repro", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "results")
    monkeypatch.chdir(root)
    return root


def rows(report) -> dict[tuple[str, str], tuple[str, str]]:
    return {(check, target): (result, detail) for check, target, result, detail in report.rows}


def test_fresh_results_pass_and_print_a_table(project, capsys):
    assert verify.main(["--output", str(project / "summary.md")]) == 0
    text = capsys.readouterr().out
    assert "| # | check | target | result | detail |" in text and "**PASS**" in text
    table = rows(verify.verify(project))
    assert table[("out", "data/out")][0] == "PASS"
    assert table[("stamp", "results/provenance.json")][0] == "PASS"
    assert table[("dvc status", ".")][0] == "PASS"
    assert (project / "summary.md").read_text().startswith("### verify")


def test_changed_output_fails(project):
    (project / "data" / "out" / "a.txt").write_text("tampered\n")
    report = verify.verify(project, use_dvc=False)
    assert report.failed
    result, detail = rows(report)[("out", "data/out")]
    assert result == "FAIL" and "md5" in detail
    assert verify.main(["--no-dvc"]) == 1


def test_missing_output_says_pull(project):
    import shutil

    shutil.rmtree(project / "data" / "out")
    result, detail = rows(verify.verify(project, use_dvc=False))[("out", "data/out")]
    assert result == "FAIL" and "dvc pull" in detail


def test_params_changed_after_the_run_fail(project):
    text = (project / "params.yaml").read_text()
    was = re.search(r"init_every_hours: (\d+)", text).group(1)
    (project / "params.yaml").write_text(text.replace(f"init_every_hours: {was}", "init_every_hours: 48"))
    table = rows(verify.verify(project, use_dvc=False))
    result, detail = table[("dvc.lock", "stage evaluate")]
    assert result == "FAIL" and f"param evaluate.init_every_hours: locked {was}, now 48" in detail
    result, detail = table[("stamp", "results/provenance.json")]
    assert result == "FAIL" and f"param evaluate.init_every_hours was {was}, params.yaml has 48" in detail
    # a param the evaluate stage does not declare does not fail its stamp (only the stale `make` stage)
    (project / "params.yaml").write_text(text.replace("lr: 2.0e-3", "lr: 0.004"))
    table = rows(verify.verify(project, use_dvc=False))
    assert table[("stamp", "results/provenance.json")][0] == "PASS"
    assert table[("dvc.lock", "stage make")][0] == "FAIL"


def test_committed_code_change_outside_the_stage_deps(project):
    (project / "README.md").write_text("docs\n")
    run(project, "git", "add", "README.md")
    run(project, "git", "commit", "-qm", "docs")
    result, detail = rows(verify.verify(project, use_dvc=False))[("stamp", "results/provenance.json")]
    assert result == "PASS" and "outside stage evaluate's deps" in detail
    (project / "evaluate_stage.py").write_text(EVAL + "\n# changed\n")
    run(project, "git", "commit", "-qam", "code")
    table = rows(verify.verify(project, use_dvc=False))
    result, detail = table[("stamp", "results/provenance.json")]
    assert result == "FAIL" and "evaluate_stage.py" in detail


def test_dirty_stamp_and_dirty_tree_fail(project):
    stamp = json.loads((project / "results" / "provenance.json").read_text())
    stamp.update(dirty=True, diff_sha256="ab" * 32)
    (project / "results" / "provenance.json").write_text(json.dumps(stamp))
    table = rows(verify.verify(project, use_dvc=False))
    assert table[("stamp", "results/provenance.json")][0] == "FAIL"
    assert "uncommitted" in table[("stamp", "results/provenance.json")][1]
    (project / "make.py").write_text(MAKE + "# edit\n")
    assert rows(verify.verify(project, use_dvc=False))[("git", "HEAD")][0] == "FAIL"


def test_experiment_commit_verifies(project):
    """`dvc exp run -S` changes only params.yaml/dvc.lock/results: its stamp names the same code."""
    dvc(project, "exp", "run", "-q", "-S", "evaluate.init_every_hours=48", "-n", "short")
    dvc(project, "exp", "apply", "short")
    run(project, "git", "commit", "-qam", "adopt experiment")
    table = rows(verify.verify(project, use_dvc=False))
    assert table[("stamp", "results/provenance.json")][0] == "PASS", table
    assert not [r for r in table.values() if r[0] == "FAIL"], table


def test_uncommitted_lock_or_results_fail(project):
    """What is verified must be what is committed: an edited dvc.lock or result file fails, even if consistent."""
    assert rows(verify.verify(project, use_dvc=False))[("committed", "dvc.lock, results")][0] == "PASS"
    lock = project / "dvc.lock"
    lock.write_text(lock.read_text() + "# edited\n")
    result, detail = rows(verify.verify(project, use_dvc=False))[("committed", "dvc.lock, results")]
    assert result == "FAIL" and "dvc.lock" in detail and "git add" in detail
    run(project, "git", "checkout", "--", "dvc.lock")
    metrics = project / "results" / "metrics.json"
    metrics.write_text('{"n": 999}\n')
    result, detail = rows(verify.verify(project, use_dvc=False))[("committed", "dvc.lock, results")]
    assert result == "FAIL" and "results/metrics.json" in detail
    assert verify.main(["--no-dvc"]) == 1


def test_dvc_yaml_parsed_once(project, monkeypatch):
    """One read of dvc.yaml per verify, not one per stamp or per changed file."""
    dvcfile = importlib.import_module(PKG + ".dvcfile")
    reads = []
    original = dvcfile.read_yaml
    monkeypatch.setattr(dvcfile, "read_yaml", lambda path: reads.append(Path(path)) or original(path))
    (project / "README.md").write_text("docs\n")  # a committed code change: the stamp walks the changed files
    run(project, "git", "add", "README.md")
    run(project, "git", "commit", "-qm", "docs")
    verify.verify(project, use_dvc=False)
    for name in dvcfile.DVC_FILES:
        assert reads.count(project / name) == 1, (name, reads)
