"""The planning benchmark (benchmarks/bench_plan.py, part of `nox -s bench`) runs on this project: a short DAG, as
`bench_data.py --quick` plans it, so a change to the params or the pipeline cannot break the benchmark unseen."""

from __future__ import annotations

import importlib.util
import re
import sys

BENCH_DIR = "benchmarks"


def load(project_root, name: str):
    spec = importlib.util.spec_from_file_location(name, project_root / BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_dry_run_ratio_is_measured_on_a_short_dag(project_root, tmp_path):
    bench_plan = load(project_root, "bench_plan")
    assert bench_plan.PROJECT == project_root
    ratio, project_s, bare_s = bench_plan.dry_run_ratio(tmp_path, 100, repeats=1)  # both DAGs must plan 100 shard jobs
    assert project_s > 0 and bare_s > 0 and ratio == project_s / bare_s
    shape = (tmp_path / "plan-bare" / "Snakefile").read_text()
    assert len(re.findall(r"^rule ", shape, re.M)) > 3  # the project's rules, read off its DAG
