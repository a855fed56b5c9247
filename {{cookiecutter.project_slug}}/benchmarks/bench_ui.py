"""The web app on a project with many experiments: how long until it serves, how long a Compare page takes.

    python benchmarks/bench_ui.py                   # 20 experiments
    python benchmarks/bench_ui.py --experiments 50 --keep

Builds a copy of this project in a temporary folder (git + DVC), with small made-up outputs (no training) saved as
N experiments by `dvc exp save`, each with its own train.lr / model.width and metrics; then starts
`<package> ui --port 0 --no-browser` there and prints (goal in brackets):
  ui start seconds: X            process start -> first page served   [< 3]
  experiments loaded seconds: Z  `dvc exp show --json` in the background, from process start (for information)
  compare page seconds: Y        GET /compare with every experiment listed and their curves   [< 1]
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = os.environ.get("FORGE_PKG") or next(p.parent.name for p in sorted((PROJECT / "src").glob("*/cli.py")))
if importlib.util.find_spec(PACKAGE) is None:  # running from a checkout without installing
    sys.path.insert(0, str(PROJECT / "src"))

COPY = ["src", "Snakefile", "workflow", "dvc.yaml", "params.yaml", "profiles", ".dvcignore", ".gitignore"]
CHANNELS = ["geopotential_500", "temperature_850", "2m_temperature"]
LEADS = [6, 12, 24, 48, 72]


def environment(project: Path) -> dict[str, str]:
    """The app's own subprocess environment (this Python's bin/ first), the copy's src/, a git identity."""
    commands = importlib.import_module(f"{PACKAGE}.ui.commands")
    return commands.environment({"PYTHONPATH": str(project / "src"), "DVC_NO_ANALYTICS": "1",
                                 "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
                                 "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.org"})


def sh(project: Path, *argv: str) -> str:
    done = subprocess.run(argv, cwd=project, env=environment(project), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def fake_outputs(project: Path, k: int) -> None:
    """Small stand-ins for every output of dvc.yaml; scores that depend on k, so experiments differ."""
    (project / "data" / "shards" / "block_0000.zarr").mkdir(parents=True, exist_ok=True)
    (project / "data" / "shards" / "block_0000.zarr" / "zarr.json").write_text('{"zarr_format": 3}\n')
    (project / "data" / "stats.json").write_text("{}\n")
    (project / "models").mkdir(exist_ok=True)
    (project / "models" / "model.pt").write_bytes(b"fake model %d" % k)
    results = project / "results"
    (results / "plots").mkdir(parents=True, exist_ok=True)
    (results / "maps").mkdir(exist_ok=True)
    (results / "maps" / "none.txt").write_text("no maps in a benchmark\n")
    scale = 1.0 + 0.02 * k
    rmse = {ch: {"model": {f"{h}h": round(50 * scale * (1 + h / 24), 3) for h in LEADS},
                 "persistence": {f"{h}h": round(90 * (1 + h / 24), 3) for h in LEADS}} for ch in CHANNELS}
    (results / "metrics.json").write_text(json.dumps({"rmse": rmse, "n_inits": 10}, indent=2) + "\n")
    for ch in CHANNELS:
        for metric, value in (("rmse", lambda h: 50 * scale * (1 + h / 24)), ("acc", lambda h: 1 - 0.003 * h * scale)):
            rows = ["lead_hours,model,persistence,climatology"] + [f"{h},{value(h):.4f},{value(h) * 1.5:.4f},1.0"
                                                                   for h in LEADS]
            (results / "plots" / f"{metric}_{ch}.csv").write_text("\n".join(rows) + "\n")
    for name in ("per_lead.csv", "evaluation.json", "provenance.json"):
        (results / name).write_text("{}\n" if name.endswith(".json") else "lead_hours\n")
    (results / "report.html").write_text(f"<html><body>report {k}</body></html>\n")
    (results / "train_log.csv").write_text("step,loss\n" + "".join(f"{s},{1 / s:.4f}\n" for s in range(1, 50)))


def build(work: Path, n: int) -> Path:
    params_file = importlib.import_module(f"{PACKAGE}.ui.params_file")
    project = work / "project"
    project.mkdir(parents=True)
    for name in COPY:
        src = PROJECT / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.is_file():
            shutil.copy2(src, project / name)
    sh(project, "git", "init", "-q", "-b", "main")
    sh(project, sys.executable, "-m", "dvc", "init", "-q")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "baseline")
    t0 = time.perf_counter()
    for k in range(n):
        params_file.save(project / "params.yaml", {"train.lr": round(1e-4 * (k + 1), 6), "model.width": 8 + 4 * k})
        fake_outputs(project, k)
        sh(project, sys.executable, "-m", "dvc", "exp", "save", "-q", "-n", f"bench-{k:02d}")
    print(f"{n} experiments saved with `dvc exp save` in {time.perf_counter() - t0:.0f} s", flush=True)
    return project


def get(port: int, path: str, token: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers={"Authorization": f"token {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def measure(project: Path, n: int) -> None:
    log = project.parent / "ui.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", f"{PACKAGE}.cli", "ui", "--port", "0", "--no-browser"],
                                cwd=project, env=environment(project), stdout=out, stderr=subprocess.STDOUT)
    try:
        while not (found := re.search(r":(\d+)/\?token=([\w-]+)", log.read_text())):
            if proc.poll() is not None or time.perf_counter() - t0 > 60:
                raise SystemExit(f"the app did not start:\n{log.read_text()}")
            time.sleep(0.02)
        port, token = int(found[1]), found[2]
        status, _ = get(port, "/", token)
        started = time.perf_counter() - t0
        assert status == 200, status
        while not json.loads(get(port, "/api/experiments", token)[1])["ready"]:
            time.sleep(0.05)
        loaded = time.perf_counter() - t0
        t1 = time.perf_counter()
        status, page = get(port, "/compare", token)
        compare = time.perf_counter() - t1
        listed = len(re.findall(rb'<tr data-run="bench-\d+"', page))
        assert status == 200 and listed == n, (status, listed)
        t2 = time.perf_counter()
        get(port, "/compare", token)
        again = time.perf_counter() - t2
    finally:
        proc.terminate()
        proc.wait(20)
    print(f"ui start seconds: {started:.2f}   [goal < 3]")
    print(f"experiments loaded seconds: {loaded:.2f}   (dvc exp show --json of {n} experiments, in the background)")
    print(f"compare page seconds: {compare:.3f}   [goal < 1]  ({listed} experiments listed; again: {again:.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=20, help="experiments to create (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and print its path")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_ui_"))
    try:
        project = build(work, args.experiments)
        measure(project, args.experiments)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
