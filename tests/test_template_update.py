"""Template updates: a baked project records the template commit it came from (.cruft.json), and
`cruft update` brings a later template change in, keeping the project's own edits.

The template is a git repository made in a tmp dir from this checkout (cruft clones templates with git).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, bake, clean_copy, project_env, sh

TEMPLATE = Path(__file__).resolve().parents[1]
PROJECT_DIR = "{{cookiecutter.project_slug}}"
CRUFT = str(BIN / "cruft") if (BIN / "cruft").exists() else shutil.which("cruft") or "cruft"


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=project_env())
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def cruft(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(CRUFT, *args, cwd=project, check=check)


@pytest.fixture
def template_repo(tmp_path) -> Path:
    """A git repository holding this template at one commit ("v1")."""
    repo = clean_copy(TEMPLATE, tmp_path / "forge-template")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "template v1")
    return repo


def change_template(repo: Path) -> str:
    """A small stand-in template change: a rendered new file, an appended README section, a code edit."""
    project = repo / PROJECT_DIR
    (project / "docs").mkdir(exist_ok=True)
    (project / "docs" / "TEMPLATE_NEWS.md").write_text("# News for {{ cookiecutter.project_name }}\n")
    with open(project / "README.md", "a") as fh:
        fh.write("\n## Added by a template update\n\nThis section came from the template.\n")
    module = next((project / "src").glob("*/provenance.py"))
    module.write_text(module.read_text() + "\n# template v2\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "template v2")
    return git(repo, "rev-parse", "HEAD")


def test_bake_records_the_template_commit(template_repo, tmp_path):
    project = bake(tmp_path / "out", template=template_repo)
    stamp = json.loads((project / ".cruft.json").read_text())
    assert stamp["commit"] == git(template_repo, "rev-parse", "HEAD")
    assert Path(stamp["template"]).resolve() == template_repo.resolve()  # something cruft can clone
    assert stamp["context"]["cookiecutter"]["package_name"] == "my_forecast"
    assert (project / ".cruft.json").read_text() == git(project, "show", "HEAD:.cruft.json") + "\n"  # committed
    assert "up to date" in cruft(project, "check").stdout
    # the project is exactly its template (cruft re-renders it and finds no difference)
    assert cruft(project, "diff", "--exit-code", check=False).returncode == 0


def test_cruft_update_brings_a_template_change_in(template_repo, tmp_path):
    project = bake(tmp_path / "out", template=template_repo)
    # the scientist's own edits, committed: they must survive the update
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("lr: 2.0e-3", "lr: 1.0e-3"))
    readme = project / "README.md"
    readme.write_text("Notes of this experiment.\n\n" + readme.read_text())
    git(project, "commit", "-q", "-am", "my experiment")

    new_commit = change_template(template_repo)
    outdated = cruft(project, "check", check=False)
    assert outdated.returncode != 0 and "out of date" in outdated.stdout

    cruft(project, "update", "--skip-apply-ask", "--allow-untracked-files")
    assert (project / "docs" / "TEMPLATE_NEWS.md").read_text() == "# News for My Forecast\n"
    text = readme.read_text()
    assert text.startswith("Notes of this experiment.") and "This section came from the template." in text
    assert next((project / "src").glob("*/provenance.py")).read_text().endswith("# template v2\n")
    assert "lr: 1.0e-3" in params.read_text()
    assert json.loads((project / ".cruft.json").read_text())["commit"] == new_commit
    # the update is an ordinary reviewable change: commit it, and the project is up to date again
    assert not list(project.rglob("*.rej")), "the template change did not apply cleanly"
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Update from the template")
    assert "up to date" in cruft(project, "check").stdout
    assert git(project, "status", "--porcelain") == ""


def test_projects_made_with_cruft_create_update_too(template_repo, tmp_path):
    """`cruft create` (instead of cookiecutter) gives the same .cruft.json and the same update path."""
    out = tmp_path / "out"
    out.mkdir()
    sh(CRUFT, "create", "--no-input", str(template_repo), "--output-dir", str(out), cwd=tmp_path)
    project = out / "my-forecast"
    assert json.loads((project / ".cruft.json").read_text())["commit"] == git(template_repo, "rev-parse", "HEAD")
    if git(project, "status", "--porcelain"):  # cruft writes its own .cruft.json after the hook's first commit
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "cruft state")
    new_commit = change_template(template_repo)
    cruft(project, "update", "--skip-apply-ask", "--allow-untracked-files")
    assert (project / "docs" / "TEMPLATE_NEWS.md").exists()
    assert json.loads((project / ".cruft.json").read_text())["commit"] == new_commit


def test_template_given_as_an_abbreviation_or_relative_path(template_repo, tmp_path):
    """cruft does not expand cookiecutter's abbreviations (gh:owner/repo) nor know where a relative path was
    typed: .cruft.json must hold a URL or absolute path it can clone. A user abbreviation stands in for gh:."""
    remote = template_repo.rename(tmp_path / "forge-template.git")  # ".git": cookiecutter's cue to use git
    config = tmp_path / "cookiecutterrc.yaml"
    config.write_text(
        f"cookiecutters_dir: {tmp_path / 'cookiecutters'}\nreplay_dir: {tmp_path / 'replay'}\n"
        f"abbreviations:\n  mine: file://{tmp_path}/{{0}}\n"
    )
    out = tmp_path / "abbr"
    sh(BIN / "cookiecutter", "--no-input", "mine:forge-template.git", "-o", out, cwd=tmp_path,
       COOKIECUTTER_CONFIG=str(config))
    stamp = json.loads((out / "my-forecast" / ".cruft.json").read_text())
    assert stamp["template"] == f"file://{remote}"
    assert stamp["commit"] == git(remote, "rev-parse", "HEAD")
    assert "up to date" in cruft(out / "my-forecast", "check").stdout

    # `cookiecutter forge-template.git` typed in the template's parent folder (PWD as a shell sets it)
    sh(BIN / "cookiecutter", "--no-input", "forge-template.git", "-o", "rel", cwd=tmp_path, PWD=str(tmp_path))
    stamp = json.loads((tmp_path / "rel" / "my-forecast" / ".cruft.json").read_text())
    assert stamp["template"] == str(remote) and stamp["commit"] == git(remote, "rev-parse", "HEAD")
