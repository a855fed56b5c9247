"""Bad params after a good run: `dvc repro` stops with one clear message, exit non-zero, and every output already
made is byte-identical afterwards (nothing is deleted before the check; the check runs before any job).

One small project is reproduced once (module fixture, a few training steps); each case edits params.yaml, runs
`dvc repro`, and puts params.yaml back. Most cases stop while Snakemake builds the DAG of the first stage (config.py
or preflight.py), in seconds.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import FINGERPRINT_STAGE, bake, pip_install_editable, sh

pytestmark = pytest.mark.e2e

# The smallest pipeline that trains and evaluates: 8 x 16 grid, 60 days in 3 shards, 4 training steps.
TINY = {
    "data": {"start": "2000-01-01", "end": "2000-02-29T18:00", "block_size": 80,
             "splits": {"train": ["2000-01-01", "2000-02-09T18:00"], "val": ["2000-02-10", "2000-02-14T18:00"],
                        "test": ["2000-02-15", "2000-02-29T18:00"]},
             "synthetic": {"nlat": 8, "nlon": 16}},
    "model": {"width": 8, "depth": 1},
    "train": {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 2, "checkpoint_every": 2},
    "evaluate": {"max_lead_hours": 24, "init_every_hours": 48, "key_leads_hours": [6, 24], "map_leads_hours": [24],
                 "batch_size": 4, "climatology_window_days": 30},
}
OUTPUTS = ("data", "models", "results", "runs", "dvc.lock")
DELETE = object()

# (dotted key -> value, words of the one message). Each case is one mistake a user makes.
CASES = [
    ({"data.splits.test": ["2001-06-01", "2001-06-30"]}, "'data.splits.test': [2001-06-01, 2001-06-30] reaches "
                                                         "outside the data"),
    ({"evaluate.headline": ["geopotential_501"]}, "evaluate.headline has 'geopotential_501', not a channel of the "
                                                  "data"),
    ({"evaluate.headline": ["geopotential_501"]}, "Did you mean 'geopotential_500'?"),
    ({"evaluate.map_channels": ["t2m"]}, "evaluate.map_channels has 't2m', not a channel of the data"),
    ({"train.batch_size": 1000}, "train.batch_size 1000 is more than the 159 training pairs in data.splits.train"),
    ({"train.rollout_steps": 200}, "train.batch_size 4 is more than the 0 training pairs"),
    ({"data.variables": ["temprature"]}, "data.variables has 'temprature', which the source 'synthetic' lacks"),
    ({"data.variables": ["temprature"]}, "Did you mean 'temperature'?"),
    ({"data.levels": [700]}, "data.levels has 700 hPa, which the source 'synthetic' lacks (it has: [500, 850]). Did "
                             "you mean 850?"),
    ({"evaluate.key_leads_hours": [6, 48]}, "'evaluate.key_leads_hours': [48] lie beyond evaluate.max_lead_hours"),
    ({"evaluate.map_leads_hours": [96]}, "'evaluate.map_leads_hours': [96] lie beyond evaluate.max_lead_hours"),
    ({"evaluate.max_lead_hours": 3}, "'evaluate.max_lead_hours': 3 is shorter than one model step"),
    ({"data.end": "1999-12-31"}, "'data.end': '1999-12-31' is before data.start '2000-01-01'"),
    ({"data.splits.test": ["2000-02-29", "2000-02-29T18:00"]}, "is too short for one forecast of "
                                                               "evaluate.max_lead_hours 24"),
    ({"evaluate.climatology_window_days": 0}, "evaluate.climatology_window_days 0: no training state"),
    ({"model.depth": 5}, "model.depth 5 needs a number of longitudes divisible by 32, but the grid has 16"),
    ({"data.coarsen": 16}, "data.coarsen 16 leaves a 0 x 1 grid"),
    ({"train.init_from": "runs/nowhere.pt"}, "train.init_from 'runs/nowhere.pt' does not exist"),
    # the fingerprint stage (first to run) names the missing source; `snakemake` alone says it in preflight
    ({"data.source": "/nonexistent/era5.zarr", "data.variables": ["geopotential"]}, "'/nonexistent/era5.zarr'"),
    ({"data.source": "https://example.invalid/era5.zarr", "data.variables": ["geopotential"]},
     "cannot reach example.invalid:443"),
    ({"data.source": "/data/era5.zarr"}, "'data.variables': the source '/data/era5.zarr' needs data.variables"),
    ({"train.lrr": 0.001}, "unknown key 'train.lrr'. did you mean 'train.lr'?"),
    ({"train.lr": "fast"}, "bad value for 'train.lr': 'fast'"),
    ({"train.lr": -1.0}, "greater than 0"),
    ({"train.strategy": "zero3"}, "'ddp' or 'fsdp'"),
    ({"train.precision": "fp16"}, "'fp32' or 'bf16'"),
    ({"train.batch_size": 0}, "'train.batch_size': 0 (Input should be greater than or equal to 1)"),
    ({"train.lead_hours": 5}, "multiple of the data time step"),
    ({"model.name": "resnet"}, "'unet' or 'vit'"),
    ({"modle": {"name": "unet"}}, "unknown key 'modle'. did you mean 'model'?"),
    ({"seeds": 1}, "unknown key 'seeds'. did you mean 'seed'?"),
    ({"data.splits.val": ["2000-02-05", "2000-02-14T18:00"]}, "splits 'train' and 'val' overlap"),
    ({"data.splits.val": ["2000-02-14", "2000-02-10"]}, "the range ends (2000-02-10) before it starts"),
    ({"data.start": "yesterday"}, "not an ISO date"),
    ({"data.time_stride": 0}, "'data.time_stride': 0 (Input should be greater than or equal to 1)"),
    ({"data.block_size": 1}, "'data.block_size': 1 (Input should be greater than or equal to 2)"),
    ({"data.synthetic.nlat": 2}, "'data.synthetic.nlat': 2 (Input should be greater than or equal to 4)"),
    ({"data.splits": DELETE}, "missing key 'data.splits'"),
    ({"evaluate.max_lead_hours": "3 days"}, "valid integer"),
    ({"wandb.mode": "cloud"}, "'offline', 'online' or 'disabled'"),
]


def edited(params: dict, changes: dict) -> dict:
    out = copy.deepcopy(params)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return out


def snapshot(project: Path) -> dict[str, str]:
    """sha256 of every file the good run produced (data, model, checkpoints, results, dvc.lock)."""
    files = {}
    for name in OUTPUTS:
        top = project / name
        for path in sorted([top] if top.is_file() else (p for p in top.rglob("*") if p.is_file())):
            files[path.relative_to(project).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> tuple[Path, dict, dict[str, str]]:
    """A default bake with TINY params after one full `dvc repro`, committed: (project, its params, snapshot)."""
    project = bake(tmp_path_factory.mktemp("bad-params"))
    pip_install_editable(project)  # the `<package>` command of the fingerprint stage
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in TINY.items():
        for key, value in values.items():
            if isinstance(value, dict) and key != "splits":
                params[section][key].update(value)
            else:
                params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "commit", "-qam", "Tiny params", cwd=project)
    sh("dvc", "repro", cwd=project, timeout=1200)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-qm", "Results", cwd=project)
    before = snapshot(project)
    assert {"models/model.pt", "results/metrics.json", "data/stats.json", "dvc.lock"} <= set(before)
    assert sum(p.startswith("data/shards/block_") for p in before) > 3
    return project, params, before


@pytest.mark.parametrize("changes,words", CASES, ids=[f"{'+'.join(c)}:{i}" for i, (c, _) in enumerate(CASES)])
def test_bad_params_stop_dvc_repro_and_keep_every_output(good_run, changes, words):
    project, params, before = good_run
    good = (project / "params.yaml").read_text()
    try:
        (project / "params.yaml").write_text(yaml.safe_dump(edited(params, changes), sort_keys=False))
        result = sh("dvc", "repro", cwd=project, check=False, timeout=300)
    finally:
        (project / "params.yaml").write_text(good)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    said = [line for line in output.splitlines() if words in line]
    assert len(said) == 1, output[-3000:]
    assert "Fix:" in said[0] and ("params.yaml" in said[0] or "data.source" in said[0]), said[0]
    assert "Traceback" not in output, output[-3000:]
    assert snapshot(project) == before, "an output changed"


def test_the_good_run_is_still_up_to_date(good_run):
    """After all the failed runs: nothing to do but the fingerprint, which runs on every `dvc repro`."""
    project, _, before = good_run
    status = json.loads(sh("dvc", "status", "--json", cwd=project).stdout)
    assert status == {FINGERPRINT_STAGE: ["always changed"]}, status
    assert snapshot(project) == before


def test_moving_the_test_split_reruns_only_the_evaluation(good_run):
    project, params, _ = good_run
    good = (project / "params.yaml").read_text()
    try:
        moved = edited(params, {"data.splits.test": ["2000-02-17", "2000-02-29T18:00"]})
        (project / "params.yaml").write_text(yaml.safe_dump(moved, sort_keys=False))
        status = json.loads(sh("dvc", "status", "--json", cwd=project).stdout)
    finally:
        (project / "params.yaml").write_text(good)
    # synthetic stations sample the test split
    assert set(status) == {FINGERPRINT_STAGE, "stations", "evaluate"}, status
    assert {"changed deps": {"params.yaml": {"data.splits.test": "modified"}}} in status["evaluate"]
