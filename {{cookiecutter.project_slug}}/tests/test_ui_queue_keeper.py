"""The web app keeps a started queue going when DVC's worker has left experiments queued (ui/queue_keeper.py)."""

from __future__ import annotations

import functools
import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import ui_support as ui  # noqa: E402


@pytest.fixture()
def keeper_module(pkg_name):
    return importlib.import_module(f"{pkg_name}.ui.queue_keeper")


def test_a_stall_after_start_starts_the_same_command_again(keeper_module, tmp_path):
    calls = []
    keeper = keeper_module.QueueKeeper(tmp_path, stall_s=30, start=lambda argv, root, env: calls.append((argv, env)))
    assert not keeper.seen(["queued", "queued"], 0.0) and not keeper.seen(["queued"], 100.0)  # no Start: not armed
    keeper.started(["dvc", "queue", "start", "-j", "1"], {"SNAKEMAKE_PROFILE": "profiles/local"})
    assert not keeper.seen(["success", "queued"], 1000.0)  # the first answer of a stall
    assert not keeper.seen(["success", "queued"], 1029.0)  # still within stall_s
    assert keeper.seen(["success", "queued"], 1030.0) and keeper.restarts == 1
    assert calls == [(["dvc", "queue", "start", "-j", "1"], {"SNAKEMAKE_PROFILE": "profiles/local"})]
    # a running experiment resets the clock; a new stall is measured from its own first answer
    assert not keeper.seen(["running", "queued"], 1040.0)
    assert not keeper.seen(["success", "queued"], 1050.0) and not keeper.seen(["success", "queued"], 1079.0)
    assert keeper.seen(["success", "queued"], 1080.0) and len(calls) == 2
    # nothing queued: the Start is done, and what is queued later waits for the next one
    assert not keeper.seen(["success", "success"], 1090.0)
    assert not keeper.seen(["queued"], 1100.0) and not keeper.seen(["queued"], 5000.0) and len(calls) == 2


def test_a_failed_restart_is_kept_and_tried_again(keeper_module, tmp_path):
    commands = importlib.import_module(f"{keeper_module.__package__}.commands")

    def refuse(argv, root, env):
        raise commands.CommandError("`dvc queue start` exited with 1: no")

    keeper = keeper_module.QueueKeeper(tmp_path, stall_s=5, start=refuse)
    keeper.started(["dvc", "queue", "start"], None)
    keeper.seen(["queued"], 0.0)
    assert keeper.seen(["queued"], 5.0) and "exited with 1" in keeper.last_error
    keeper.seen(["queued"], 6.0)
    assert keeper.seen(["queued"], 11.0) and keeper.restarts == 2


@pytest.mark.slow
def test_experiments_left_queued_with_no_worker_are_run(keeper_module, pkg_name, tmp_path):
    """Real DVC: two experiments queued, no worker running (as after the worker quit early); the keeper, armed by a
    Start, sees them stalled in `dvc exp show` and starts the queue, and both experiments finish."""
    experiments = importlib.import_module(f"{pkg_name}.ui.experiments")
    commands = importlib.import_module(f"{pkg_name}.ui.commands")
    repo = tmp_path / "repo"
    repo.mkdir()
    sh = functools.partial(ui.sh, repo)  # a user's environment (git identity, no analytics)
    (repo / "params.yaml").write_text("n: 1\n")
    (repo / "dvc.yaml").write_text("stages:\n  count:\n    cmd: echo ${n} > out.txt\n    params: [n]\n"
                                   "    outs: [out.txt]\n")
    sh("git", "init", "-q", "-b", "main")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "baseline")
    for n in (2, 3):
        sh(*commands.dvc("exp", "run", "--queue", f"-Sn={n}"))

    keeper = keeper_module.QueueKeeper(repo, stall_s=2)
    keeper.started(commands.queue_start_argv(1), commands.environment())  # a Start whose worker has already quit
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            runs = [r for r in experiments.load(repo) if r.kind == "experiment"]
            keeper.seen([r.state for r in runs], time.time())
            if len(runs) == 2 and all(r.state in ("success", "failed", "done") for r in runs):
                break
            time.sleep(1)
        assert sorted(r.params.get("n") for r in runs) == [2, 3], runs
        assert all(r.state in ("success", "done") for r in runs), [(r.id, r.state, r.error) for r in runs]
        assert keeper.restarts >= 1 and keeper.last_error is None
    finally:
        subprocess.run(commands.dvc("queue", "stop", "--kill"), cwd=repo, env=ui.env(repo), capture_output=True,
                       timeout=120)
