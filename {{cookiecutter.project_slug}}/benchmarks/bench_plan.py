"""Planning cost of the pipeline: `snakemake -n` of the project against a bare Snakefile of the same DAG shape, and
`dvc repro` with nothing to do. Used by bench_data.py (one run prints every figure); runnable alone:

    python benchmarks/bench_plan.py [--blocks 1000]

The bare Snakefile is read off the project's own DAG (`snakemake --rulegraph` for the edges between rules, the
dry run's job counts per rule), so it keeps the project's shape when rules are added: one rule per project rule,
as many jobs, each job depending on every output of the rules upstream of it, and no Python at all. Both dry runs
are the same command (`snakemake -n --cores 1`, as a user types it), timed three times in alternation; the figure is
the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
TOP_LEVEL_OUTPUTS = {"data", ".snakemake", ".nox", "results", "runs", "models", "logs", ".git", ".dvc", ".venv"}
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
       "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org", "GIT_COMMITTER_NAME": "bench",
       "GIT_COMMITTER_EMAIL": "bench@example.org",
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def render_params(text: str) -> str:
    """The template's params.yaml without Jinja (only when run unbaked)."""
    text = re.sub(r"\{\{\s*'true' if .*?\}\}", "false", text)
    text = re.sub(r'"\{\{\s*cookiecutter\.data_source\s*\}\}"', '"synthetic"', text)
    text = re.sub(r'"\{\{\s*cookiecutter\.model\s*\}\}"', '"unet"', text)
    return re.sub(r"\{\{.*?\}\}", "bench", text)


def project_copy(dest: Path, **sections: dict) -> Path:
    """The project's code and settings (no outputs, no git) at dest, params.yaml sections updated."""
    import yaml

    shutil.copytree(PROJECT, dest, ignore=lambda d, names: [
        n for n in names if n == "__pycache__" or (Path(d) == PROJECT and n in TOP_LEVEL_OUTPUTS)])
    for pkg in (dest / "src").glob("*/cli.py"):
        if not pkg.parent.name.isidentifier():  # the unbaked template
            pkg.parent.rename(dest / "src" / "my_forecast")
    params = yaml.safe_load(render_params((PROJECT / "params.yaml").read_text()))
    for name, values in sections.items():
        params[name].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def blocks_params(blocks: int) -> dict:
    """data.* for `blocks` shards of 2 six-hourly steps each."""
    at = lambda i: str(np.datetime64("2000-01-01T00:00") + np.timedelta64(6 * int(i), "h"))  # noqa: E731
    n = 2 * blocks
    return {"source": "synthetic", "start": at(0), "end": at(n - 1), "block_size": 2, "splits": {
        "train": [at(0), at(0.7 * n)], "val": [at(0.7 * n + 1), at(0.8 * n)], "test": [at(0.8 * n + 1), at(n - 1)]}}


def snakemake(cwd: Path, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    env = {**ENV, "PYTHONPATH": str(cwd / "src")}
    run = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"snakemake {' '.join(args)} in {cwd} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return elapsed, run.stdout + run.stderr


def dag_shape(cwd: Path) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """Jobs per rule and the edges between rules (producer, consumer) of the default target's DAG."""
    _, plan = snakemake(cwd, "-n", "--cores", "1", "--quiet", "rules")
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", plan, re.M) if rule != "total"}
    _, dot = snakemake(cwd, "--rulegraph", "--cores", "1")
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}
    return counts, edges


def bare_snakefile(counts: dict[str, int], edges: set[tuple[str, str]]) -> str:
    """One rule per project rule, `counts[rule]` jobs of it, and the same edges; shell commands only."""
    outputs = {r: [f"out/{r}/{i}" for i in range(n)] for r, n in counts.items()}
    sinks = [r for r in counts if not any(p == r for p, _ in edges)]
    lines = ["rule bare_all:", "    default_target: True", f"    input: {sum((outputs[r] for r in sinks), [])!r}"]
    for rule in counts:
        inputs = sum((outputs[p] for p, c in sorted(edges) if c == rule), [])
        lines += [f"rule {rule}:", f"    input: {inputs!r}", f'    output: "out/{rule}/{{i}}"',
                  r'    wildcard_constraints: i=r"\d+"', '    shell: "touch {output}"']
    return "\n".join(lines) + "\n"


def dry_run_ratio(work: Path, blocks: int, repeats: int = 3) -> tuple[float, float, float]:
    """(ratio, project seconds, bare seconds): medians of `repeats` alternating `snakemake -n --cores 1` (the
    benchmark's three; the test of its mechanics, one)."""
    # the widest climatology window: a short DAG (--quick) has too few training days to cover the test days' window
    # otherwise, which preflight refuses; the window changes no job of the DAG
    proj = project_copy(work / "plan-project", data=blocks_params(blocks), evaluate={"climatology_window_days": 182})
    counts, edges = dag_shape(proj)
    shard_rule = next((r for r in counts if counts[r] == blocks), None)
    if shard_rule is None:
        raise SystemExit(f"no rule with {blocks} jobs in the project's DAG: {counts}")
    bare = work / "plan-bare"
    bare.mkdir()
    (bare / "Snakefile").write_text(bare_snakefile(counts, edges))
    _, check = snakemake(bare, "-n", "--cores", "1", "--quiet", "rules")
    if f"{shard_rule}" not in check or not re.search(rf"^{shard_rule}\s+{blocks}$", check, re.M):
        raise SystemExit(f"the bare Snakefile does not plan {blocks} {shard_rule} jobs:\n{check[-2000:]}")
    times = {"project": [], "bare": []}
    for _ in range(repeats):
        for name, cwd in (("project", proj), ("bare", bare)):
            times[name].append(snakemake(cwd, "-n", "--cores", "1")[0])
    p, b = statistics.median(times["project"]), statistics.median(times["bare"])
    return p / b, p, b


def run(cwd: Path, *cmd: str, timeout: float = 1800) -> str:
    """`cmd` in the project copy at cwd, its stages running the copy's code (PYTHONPATH), whatever is installed."""
    env = {**ENV, "PYTHONPATH": str(cwd / "src")}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def noop_repro_seconds(work: Path) -> tuple[float, float] | None:
    """(wall, CPU) seconds, medians of three `dvc repro` with nothing to do, on the default data (8 shards) after
    one full run with a 10-step training and a 24 h evaluation (the no-op cost does not depend on how long training
    took). On a busy machine the wall time is mostly waiting for a core; the CPU seconds are what it would be alone."""
    if shutil.which("dvc", path=ENV["PATH"]) is None or shutil.which("git") is None:
        return None
    proj = project_copy(work / "noop", train={"max_steps": 10, "log_every": 5, "checkpoint_every": 10},
                        evaluate={"max_lead_hours": 24, "key_leads_hours": [6, 24], "map_leads_hours": [24]})
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "b"]):
        run(proj, *cmd)
    run(proj, "dvc", "repro")
    wall, cpu = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), _children_cpu()
        out = run(proj, "dvc", "repro")
        wall.append(time.perf_counter() - t0)
        cpu.append(_children_cpu() - c0)
        # the fingerprint stage (workflow/dvc.yaml) runs every time
        reran = {s for s in re.findall(r"Running stage '([^']+)'", out) if not s.endswith(":fingerprint")}
        if reran:
            raise SystemExit(f"a second dvc repro reran {sorted(reran)}:\n{out[-2000:]}")
    return statistics.median(wall), statistics.median(cpu)


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=1000, help="shards in the planned DAG (default 1000)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_plan_"))
    try:
        ratio, p, b = dry_run_ratio(work, args.blocks)
        print(f"snakemake -n, {args.blocks} shards: project {p:.2f} s, bare Snakefile {b:.2f} s")
        noop = noop_repro_seconds(work)
        print(f"dry-run ratio: {ratio:.2f}")
        print(f"no-op repro seconds: {'n/a (no dvc or git)' if noop is None else f'{noop[0]:.2f} ({noop[1]:.2f} CPU)'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
