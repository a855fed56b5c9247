"""Finish the new project: the chosen license, then git + DVC, so the first `dvc repro` can run.

Steps: LICENSE from the chosen license; `.cruft.json` (template + commit, so
`cruft update` brings later template changes in); `git init`; the `.dvc/` folder with a local-folder default
remote (written directly, so baking needs no DVC installed); the first commit. Works without a global git identity.
Every project keeps all cluster profiles (local, slurm, pbs): the site answer picks the presets and the default.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CONTEXT = json.loads(r'''{{ cookiecutter | jsonify }}''')

PROJECT = Path.cwd()


def run(*cmd: str, cwd: Path = PROJECT, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, check=check, capture_output=True, text=True)


def choose_license() -> None:
    licenses = PROJECT / "licenses"
    shutil.copyfile(licenses / f"{CONTEXT['license']}.txt", PROJECT / "LICENSE")
    shutil.rmtree(licenses)


# Paths this hook creates that differ between two renders (so they can never be part of a template diff). cruft
# re-renders the template, hooks included, to compute an update; without skipping .git the diff is binary
# and `cruft update` fails with ChangesetUnicodeError; .dvc/config holds a per-render remote path.
CRUFT_SKIP = [".git", ".dvc", ".cruft.json"]


def template_dir() -> Path | None:
    """The template folder cookiecutter rendered, absolute. Cookiecutter passes it as typed (`cookiecutter .`
    gives "."), relative to where it was run, while this hook runs inside the new project."""
    typed = CONTEXT.get("_repo_dir") or ""
    if not typed:
        return None
    for base in (Path(os.environ.get("PWD", "/")), PROJECT.parent, Path.cwd()):
        candidate = base / Path(typed).expanduser()  # an absolute `typed` ignores base
        if (candidate / "cookiecutter.json").exists():
            return candidate.resolve()
    return None


def template_url() -> str:
    """Where cruft can clone the template from: a URL with cookiecutter's abbreviations (gh:, gl:, bb: and the
    user's own) expanded, since cruft does not expand them; else the absolute local folder."""
    template = CONTEXT.get("_template", "")
    try:
        from cookiecutter.config import get_user_config
        from cookiecutter.repository import expand_abbreviations, is_repo_url

        expanded = expand_abbreviations(template, get_user_config().get("abbreviations") or {})
        if is_repo_url(expanded):
            return expanded
    except Exception:  # noqa: BLE001 - cookiecutter internals moved: keep what was typed
        pass
    local = template_dir()
    return str(local) if local else template


def template_commit() -> str | None:
    folder = template_dir()
    if folder is None:
        return None
    found = run("git", "rev-parse", "HEAD", cwd=folder, check=False)
    return (found.stdout.strip() or None) if found.returncode == 0 else None


def write_cruft_stamp() -> None:
    """The file `cruft create` writes (same keys and layout), so `cruft check|diff|update` work on any bake."""
    commit = template_commit()
    url = template_url()
    context = {k: v for k, v in CONTEXT.items() if k not in ("_output_dir", "_repo_dir", "_checkout")}
    context.update({"_template": url, "_commit": commit})
    stamp = {
        "template": url,
        "commit": commit,
        "checkout": CONTEXT.get("_checkout"),
        "context": {"cookiecutter": context},
        "directory": None,
        "skip": CRUFT_SKIP,
    }
    (PROJECT / ".cruft.json").write_text(json.dumps(stamp, ensure_ascii=False, indent=2, separators=(",", ": ")) + "\n")


def dvc_remote_url() -> str:
    answer = CONTEXT["dvc_remote"].strip()
    if "://" in answer:
        return answer
    folder = Path(answer).expanduser() if answer else PROJECT.parent / f"{PROJECT.name}-dvc-remote"
    folder = folder if folder.is_absolute() else (PROJECT / folder)
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def init_dvc() -> None:
    """What `dvc init` writes, plus the default remote. Credentials never go here: `.dvc/config.local` (ignored)."""
    dvc = PROJECT / ".dvc"
    dvc.mkdir(exist_ok=True)
    (dvc / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    (dvc / "config").write_text(
        "[core]\n"
        "    remote = storage\n"
        "    analytics = false\n"
        "['remote \"storage\"']\n"
        f"    url = {dvc_remote_url()}\n"
    )


def init_git() -> None:
    if shutil.which("git") is None:
        print("WARNING: git not found; run `git init && git add -A && git commit` yourself.", file=sys.stderr)
        return
    run("git", "init", "-q", "-b", "main")
    has_identity = run("git", "config", "user.email", check=False).stdout.strip()
    identity = [] if has_identity else ["-c", f"user.name={CONTEXT['author_name']}", "-c", f"user.email={CONTEXT['author_email']}"]
    run("git", "add", "-A")
    run("git", *identity, "commit", "-q", "-m", "Project created from forge-template")


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    choose_license()
    write_cruft_stamp()
    init_dvc()
    init_git()
