"""Which commit made this, and is its code clean? The one place that runs git (read-only).

What counts as "code" (the dirty flag, the diff hash and the code hash): every file git tracks, except the files
that running the pipeline or `dvc exp run -S ...` rewrites by design (NOT_CODE below):
  - params.yaml and dvc.lock (anywhere), *.dvc pointer files, .gitignore files (DVC appends its outs there),
    .dvc/ (DVC's own config), results/ (metrics and plots), and every out/metric/plot path declared in dvc.yaml.
Untracked files are not code: add them to git to make them count.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from . import dvcfile
from .errors import DirtyCodeError

UNKNOWN = "unknown"
# Paths (relative to the project root, fnmatch patterns; "*" also crosses "/") that are not code, see above.
NOT_CODE = ("params.yaml", "*/params.yaml", "dvc.lock", "*/dvc.lock", "*.dvc", ".gitignore", "*/.gitignore",
            ".dvc/*", ".dvcignore", "results/*")


def git(args: list[str], cwd: Path | str) -> subprocess.CompletedProcess | None:
    """Run `git ARGS` in cwd and capture its output as bytes; None when git is not installed."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except OSError:
        return None


def git_out(args: list[str], cwd: Path | str) -> str | None:
    """Stripped stdout of `git ARGS`, or None when it fails."""
    res = git(args, cwd)
    if res is None or res.returncode != 0:
        return None
    return res.stdout.decode("utf-8", "replace").strip()


def git_ok(args: list[str], cwd: Path | str) -> bool:
    """Whether `git ARGS` exits 0 (e.g. `merge-base --is-ancestor A B`)."""
    res = git(args, cwd)
    return res is not None and res.returncode == 0


def _names(res: subprocess.CompletedProcess | None) -> list[str]:
    return [n for n in res.stdout.decode("utf-8", "surrogateescape").split("\0") if n] if res else []


def is_code(path: str, dvc_outs: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether a tracked path (relative to the project root, '/' separated) counts as code."""
    if any(fnmatch(path, pattern) for pattern in NOT_CODE):
        return False
    return not any(dvcfile.inside(path, out) for out in dvc_outs)


def _code_sha256(root: Path, project_code) -> str:
    """sha256 of "mode type blob<TAB>path" of every code file of HEAD, in git's order."""
    entries = _names(git(["ls-tree", "-r", "-z", "--full-tree", "HEAD"], root))
    lines = [e for e in entries if project_code(e.split("\t", 1)[1])]
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def _diff_sha256(top: Path, changed: list[str]) -> str:
    diff = git(["diff", "HEAD", "--binary", "--no-renames", "--full-index", "--no-color", "--no-ext-diff",
                "--", *[":(top,literal)" + n for n in changed]], top)
    return hashlib.sha256(diff.stdout if diff else b"").hexdigest()


def git_state(root: Path | str = ".", dvc_outs: list[str] | None = None) -> dict:
    """commit, branch, dirty, changed code files, diff_sha256 and code_sha256 of the repository at `root`.

    Outside a git repository (or before the first commit) commit is "unknown" and dirty is None.
    code_sha256 hashes the code files of HEAD (paths and blob ids), so two commits that differ only in
    params/dvc.lock/results share it; diff_sha256 hashes `git diff HEAD` of the changed code files (None if clean).
    dvc_outs: the outs of dvc.yaml (read from root/dvc.yaml when not given).
    """
    root = Path(root).resolve()
    state: dict[str, Any] = {"commit": UNKNOWN, "branch": None, "dirty": None, "changed": [],
                             "diff_sha256": None, "code_sha256": None}
    top = git_out(["rev-parse", "--show-toplevel"], root)
    commit = git_out(["rev-parse", "--verify", "-q", "HEAD^{commit}"], root) if top else None
    if not top or not commit:
        return state
    prefix = git_out(["rev-parse", "--show-prefix"], root) or ""  # project dir inside the repo, "" or "sub/"
    outs = dvcfile.outs(dvcfile.stages(root)) if dvc_outs is None else dvc_outs

    def project_code(repo_path: str) -> bool:
        return repo_path.startswith(prefix) and is_code(repo_path[len(prefix):], outs)

    # Changed code files (staged or not), renames split into delete + add so both names are seen.
    names = git(["diff", "HEAD", "--name-only", "--no-renames", "-z", "--full-index"], root)
    changed = sorted(n for n in _names(names) if project_code(n))
    state.update(commit=commit, branch=git_out(["symbolic-ref", "--short", "-q", "HEAD"], root),  # None: detached
                 code_sha256=_code_sha256(root, project_code), changed=changed, dirty=bool(changed),
                 diff_sha256=_diff_sha256(Path(top), changed) if changed else None)
    return state


def uncommitted(root: Path | str, paths: list[str]) -> list[str]:
    """Those of `paths` (relative to root; files or folders) with uncommitted changes: modified, staged, deleted
    or untracked (not ignored), as `git status` lists them."""
    if not paths:
        return []
    res = git(["status", "--porcelain", "-z", "--untracked-files=all", "--no-renames", "--", *paths], root)
    return sorted({entry[3:] for entry in _names(res) if len(entry) > 3})


def ensure_clean_or_allowed(allow_dirty: bool, what: str, root: Path | str = ".") -> dict:
    """Return git_state(root); raise DirtyCodeError if tracked code differs from HEAD and allow_dirty is false.

    `what` is the stage name ("train", "evaluate"): the message names its `<what>.allow_dirty` param.
    Outside git (or before the first commit) nothing can be checked: a warning is printed and the run goes on.
    """
    state = git_state(root)
    if state["dirty"] is None:
        print(f"[{what}] warning: not in a git repository with a commit; results will be stamped commit 'unknown'",
              file=sys.stderr)
    elif state["dirty"] and not allow_dirty:
        shown = ", ".join(state["changed"][:10]) + (" ..." if len(state["changed"]) > 10 else "")
        raise DirtyCodeError(
            f"{what} refuses to run: tracked code differs from commit {state['commit'][:10]} "
            f"({state['branch'] or 'detached HEAD'}): {shown}. Results must be tied to a commit. "
            f"Fix: commit the change (git commit -am '...') or stash it (git stash), "
            f"or set {what}.allow_dirty: true in params.yaml to run anyway (results will be stamped dirty "
            f"with the hash of the diff)."
        )
    elif state["dirty"]:
        print(f"[{what}] warning: running on uncommitted code ({len(state['changed'])} files); "
              f"stamped dirty, diff sha256 {state['diff_sha256'][:12]}", file=sys.stderr)
    return state
