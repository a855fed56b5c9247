"""What the web app runs and reads: fixed argument lists from validated values, `dvc exp show` rows, training and
Snakemake progress, and detached jobs recorded only in their log files."""

from __future__ import annotations

import importlib
import json
import sys
import time

import pytest
import yaml


@pytest.fixture(scope="module")
def ui(pkg_name):
    names = ("commands", "experiments", "watch", "jobs", "schema", "params_file")
    return type("UI", (), {m: importlib.import_module(f"{pkg_name}.ui.{m}") for m in names})


@pytest.fixture(scope="module")
def raw(project_root) -> dict:
    return yaml.safe_load((project_root / "params.yaml").read_text())


def test_queue_is_an_argument_list_of_validated_overrides(ui):
    argv = ui.commands.queue_argv({"train.lr": 0.001, "model.name": "vit", "data.splits.train": ["2000-01-01", "x y"],
                                   "train.deterministic": False})
    assert argv[:2] == [sys.executable, "-m"] and argv[2:6] == ["dvc", "exp", "run", "--queue"]
    assert argv[6:] == ['-Strain.lr=0.001', '-Smodel.name="vit"', '-Sdata.splits.train=["2000-01-01","x y"]',
                        "-Strain.deterministic=false"]


def test_queued_overrides_give_dvc_exactly_the_values(ui, project_root, tmp_path):
    """DVC's own applier of `-S` (Hydra's grammar) turns the argv into exactly the values entered: a list where a
    path was, a mapping replaced (Hydra would merge it into the file's), non-ASCII text. What it would read
    differently, or resolve (`${...}`), is refused naming the key."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    params.write_text((project_root / "params.yaml").read_text().replace("rename: {}", "rename: {old: x}"))
    raw = yaml.safe_load(params.read_text())
    changes = {"data.source": ["era5/t2m/*.nc", "era5/z é/*.nc"], "data.variables": ["2m_temperature"],
               "data.rename": {"tmp2m": "2m_temperature", "10u": "10m_u_component_of_wind"},
               "evaluate.spectra.band": [20.0, 70.5], "train.lr": 0.001}
    argv = ui.commands.queue_argv(changes, raw)
    assert "-S~data.rename" in argv and "-S+data.rename={tmp2m:\"2m_temperature\",10u:\"10m_u_component_of_wind\"}" \
        in argv
    overrides = to_path_overrides([a[2:] for a in argv[6:]])
    assert list(overrides) == ["params.yaml"]
    apply_overrides(str(params), overrides["params.yaml"])
    assert yaml.safe_load(params.read_text()) == ui.params_file.with_changes(raw, changes)
    assert ui.commands.queue_argv({"data.rename": {}}, {})[6:] == ["-S+data.rename={}"]  # not in the file: added
    errors = importlib.import_module(ui.commands.__name__.rsplit(".", 2)[0] + ".errors")
    for key, value in (("data.rename", {"true": "x"}), ("data.rename", {"1": "x"}), ("data.source", "a\\b\""),
                       ("data.source", "x\ny"), ("data.source", "${oc.env:HOME}/era5.zarr")):
        with pytest.raises(errors.ParamsError, match=f"cannot (pass|queue) {key}="):
            ui.commands.queue_argv({key: value}, raw)


def test_names_that_could_be_options_or_paths_are_refused(ui):
    errors = importlib.import_module(ui.commands.__name__.rsplit(".", 2)[0] + ".errors")
    for bad in ("-rf", "--force", "a;b", "$(id)", "../x", "", "a b", "x\n"):
        with pytest.raises(errors.ForgeError, match="bad experiment name"):
            ui.commands.cancel_argv(bad, "queued")
    assert ui.commands.cancel_argv("named-tale", "queued")[-3:] == ["queue", "remove", "named-tale"]
    assert ui.commands.cancel_argv("named-tale", "running")[-3:] == ["queue", "kill", "named-tale"]
    with pytest.raises(errors.ForgeError, match="only queued or running"):
        ui.commands.cancel_argv("named-tale", "success")
    assert ui.commands.branch_argv("named-tale", "lr-study")[-4:] == ["exp", "branch", "named-tale", "lr-study"]
    with pytest.raises(errors.ForgeError, match="bad branch name"):
        ui.commands.branch_argv("named-tale", "--delete")


def test_profiles_are_the_projects_folders(ui, project_root):
    errors = importlib.import_module(ui.commands.__name__.rsplit(".", 2)[0] + ".errors")
    assert ui.commands.pipeline_argv(project_root, None)[-2:] == ["dvc", "repro"]
    assert ui.commands.pipeline_argv(project_root, "local")[-2:] == ["--profile", "profiles/local"]
    assert ui.commands.queue_start_env(project_root, "local")["SNAKEMAKE_PROFILE"] == "profiles/local"
    with pytest.raises(errors.ForgeError, match="unknown profile '../../etc'"):
        ui.commands.pipeline_argv(project_root, "../../etc")
    with pytest.raises(errors.ForgeError, match="1 to 16"):
        ui.commands.queue_start_argv(0)


def test_a_sweep_is_every_combination_each_validated(ui, raw):
    fields = ui.schema.fields_by_key()
    grid = {"train.lr": ui.commands.sweep_values(fields["train.lr"], "1e-3, 3e-3"),
            "model.name": ui.commands.sweep_values(fields["model.name"], "unet, vit"),
            "evaluate.key_leads_hours": ui.commands.sweep_values(fields["evaluate.key_leads_hours"], "[6, 24], [6]")}
    combos = ui.commands.plan_sweep(raw, grid)
    assert len(combos) == 8 and combos[0] == {"train.lr": 0.001, "model.name": "unet",
                                              "evaluate.key_leads_hours": [6, 24]}
    with pytest.raises(ValueError, match=r"experiment train.lr=0.001, model.depth=9:\n.*bad value for 'model.depth'"):
        ui.commands.plan_sweep(raw, {"train.lr": [0.001], "model.depth": [2, 9]})
    with pytest.raises(ValueError, match="at most 64"):
        ui.commands.plan_sweep(raw, {"seed": list(range(65))})


EXP_SHOW = [
    {"rev": "workspace", "name": None, "error": None, "experiments": None,
     "data": {"rev": "workspace", "timestamp": None,
              "params": {"params.yaml": {"data": {"train": {"lr": 0.002}, "model": {"width": 8},
                                                  "evaluate": {"headline": ["geopotential_500"]}}}},
              "metrics": {"results/metrics.json": {"data": {"rmse": {"geopotential_500": {
                  "model": {"6h": 143.1, "12h": 264.3}}}}}}}},
    {"rev": "11ce9f0", "name": "main", "error": None,
     "data": {"rev": "11ce9f0", "timestamp": "2026-12-01T00:10:32",
              "params": {"params.yaml": {"data": {"train": {"lr": 0.002}, "model": {"width": 8}}}}, "metrics": {}},
     "experiments": [
         {"name": "sound-smut", "executor": {"state": "running", "local": {"root": "/p/.dvc/tmp/exps/tmpab",
                                                                           "log": "/p/x.out"}},
          "revs": [{"rev": "4d9a06c", "name": "sound-smut", "data": {
              "params": {"params.yaml": {"data": {"train": {"lr": 0.003}, "model": {"width": 16}}}}}}]},
         {"name": "named-tale", "executor": None, "revs": [{"rev": "8b81cb4", "name": "named-tale", "data": {
             "params": {"params.yaml": {"data": {"train": {"lr": 0.001}, "model": {"width": 8}}}},
             "metrics": {"results/metrics.json": {"data": {"rmse": {"geopotential_500": {
                 "model": {"6h": 150.0, "12h": 270.5}}}}}}}}]},
     ]},
]


def test_exp_show_rows_and_what_differs(ui):
    runs = ui.experiments.parse(json.loads(json.dumps(EXP_SHOW)))
    assert [(r.id, r.kind, r.state, r.baseline) for r in runs] == [
        ("workspace", "workspace", "workspace", ""), ("main", "branch", "committed", "main"),
        ("sound-smut", "experiment", "running", "main"), ("named-tale", "experiment", "done", "main")]
    assert runs[2].workdir == "/p/.dvc/tmp/exps/tmpab" and runs[2].params["train.lr"] == 0.003
    assert ui.experiments.differing(runs) == ["evaluate.headline", "model.width", "train.lr"]  # missing = differs
    assert ui.experiments.differing(runs[2:]) == ["model.width", "train.lr"]
    channels, leads = ui.experiments.headline(runs)
    assert channels == ["geopotential_500"] and leads == ["6h", "12h"]
    assert ui.experiments.score(runs[3], "rmse", "geopotential_500", "12h") == 270.5
    assert ui.experiments.score(runs[2], "rmse", "geopotential_500", "12h") is None
    assert ui.experiments.max_age(runs) == 10.0 and ui.experiments.max_age(runs[:2]) is None


def test_training_progress_from_the_log(ui, tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "params.yaml").write_text("train: {max_steps: 100, batch_size: 4, grad_accum: 1}\n")
    (tmp_path / "logs" / "train.log").write_text("[train] unet, 2 process(es) on cpu (ddp, fp32), global batch 8\n")
    rows = ["step,loss,lr,grad_norm,samples_per_s,data_wait"] + [f"{s},{1 / s:.4f},0.001,0.1,16.0,0.25"
                                                                for s in range(10, 41, 10)]
    (tmp_path / "results" / "train_log.csv").write_text("\n".join(rows) + "\n")
    t = ui.watch.training(tmp_path)
    assert t["step"] == [10, 20, 30, 40] and t["loss"][0] == 0.1 and t["max_steps"] == 100
    assert (t["samples_per_s"], t["data_wait"], t["global_batch"]) == (16.0, 0.25, 8)
    assert t["eta_s"] == pytest.approx(60 * 8 / 16.0)  # 60 steps left, 8 samples each, 16 samples/s
    (tmp_path / "logs" / "train.log").unlink()
    assert ui.watch.training(tmp_path)["eta_s"] == pytest.approx(60 * 4 / 16.0)  # batch_size x grad_accum


SNAKEMAKE_LOG = """\
Building DAG of jobs...
  Command: /venv/bin/snakemake shards --cores all --forcerun synthesize shard
Job stats:
[Tue Dec  1 00:10:10 2026]
localrule synthesize:
    output: data/synthetic.zarr
    jobid: 2
[Tue Dec  1 00:10:11 2026]
Finished jobid: 2 (Rule: synthesize)
1 of 4 steps (25%) done
localrule shard:
    jobid: 3
localrule shard:
    jobid: 1
Finished jobid: 3 (Rule: shard)
2 of 4 steps (50%) done
Error in rule shard:
    message: None
    jobid: 1
"""


def test_snakemake_jobs_done_running_failed(ui, tmp_path):
    folder = tmp_path / ".snakemake" / "log"
    folder.mkdir(parents=True)
    (folder / "2026-12-01T001010.1.snakemake.log").write_text(SNAKEMAKE_LOG.split("Error in rule")[0])
    (folder / "2026-12-01T001020.2.snakemake.log").write_text(SNAKEMAKE_LOG + "Complete log(s): x\n")
    latest, earlier = ui.watch.snakemake_runs(tmp_path)
    assert earlier["done"] == ["shard", "synthesize"] and earlier["running"] == ["shard"] and not earlier["ended"]
    assert earlier["progress"] == 2 and earlier["total"] == 4 and "snakemake shards" in earlier["command"]
    assert latest["failed"] == ["shard"] and latest["running"] == [] and latest["ended"]


def test_jobs_live_in_their_log_files(ui, tmp_path):
    jobs = ui.jobs.Jobs(tmp_path)
    job = jobs.start([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], "sleeper")
    assert job.running and job.state == "running"
    again = ui.jobs.Jobs(tmp_path).list()  # a second app sees it: nothing is kept in memory
    assert [j.id for j in again] == [job.id] and again[0].running

    def until(condition, seconds: float = 120) -> None:  # generous: a loaded CI machine starts Python slowly
        deadline = time.time() + seconds
        while not condition() and time.time() < deadline:
            time.sleep(0.1)

    until(lambda: "started" in jobs.tail(job.id))
    jobs.cancel(job.id)
    until(lambda: not jobs.get(job.id).running)
    stopped = jobs.get(job.id)
    assert not stopped.running and stopped.exit_code not in (None, 0), stopped
    finished = jobs.start([sys.executable, "-c", "print('done')"], "quick")
    until(lambda: not jobs.get(finished.id).running)
    assert jobs.get(finished.id).state == "done" and "done" in jobs.tail(finished.id)
    with pytest.raises(Exception, match="no job"):
        jobs.tail("../../etc/passwd")


def test_pipeline_says_which_param_changed(ui, tmp_path):
    pipeline = importlib.import_module(ui.commands.__name__.rsplit(".", 1)[0] + ".pipeline")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "stats": {"cmd": "x", "deps": ["data"], "params": ["data.splits"], "outs": ["stats.json"]},
        "train": {"cmd": "y", "deps": ["src/a/train.py"], "params": ["seed", "train"], "outs": ["model.pt"]},
        "evaluate": {"cmd": "z", "params": ["evaluate"], "outs": ["results"]}}}))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "stats": {"cmd": "x"}, "train": {"cmd": "y", "params": {"params.yaml": {
            "seed": 0, "train": {"lr": 0.002, "max_steps": 100}}}}}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seed": 0, "train": {"lr": 0.001, "max_steps": 100}}))
    status = {"train": [{"changed deps": {"params.yaml": {"train": "modified"}, "src/a/train.py": "modified"}}]}
    stages = {s.name: s for s in pipeline.annotated(tmp_path, status)}
    assert stages["stats"].state == "up to date" and stages["evaluate"].state == "never run"
    assert stages["train"].state == "changed"
    assert stages["train"].reasons == ["param train.lr: 0.002 -> 0.001", "code src/a/train.py: modified"]
    assert {s.state for s in pipeline.annotated(tmp_path, None)} == {"checking", "never run"}


def test_pipeline_sees_a_changed_source_and_the_fingerprint_stage_as_up_to_date(ui, pkg_name, raw, tmp_path):
    """Real DVC: the fingerprint stage (always_changed) alone is not "changed"; a file of a local data.source
    rewritten outside the repository (where `dvc status` cannot look) makes the shards stale, with that reason."""
    import subprocess

    pipeline = importlib.import_module(f"{pkg_name}.ui.pipeline")
    params = {**raw, "data": {**raw["data"], "source": "store", "variables": ["geopotential"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "z.nc").write_bytes(b"first")
    copy = "import shutil; shutil.copy('data/source.fingerprint.json', 'shards.json')"
    # as in the project: the fingerprint stage in a dvc.yaml of its own, run from the project root
    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "fingerprint": {"cmd": f"{sys.executable} -m {pkg_name}.cli fingerprint", "always_changed": True,
                        "wdir": "..", "outs": [{"data/source.fingerprint.json": {"cache": False, "persist": True}}]}}}))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "shards": {"cmd": f'{sys.executable} -c "{copy}"', "deps": ["data/source.fingerprint.json"],
                   "outs": ["shards.json"]}}}))
    fingerprint = "workflow/dvc.yaml:fingerprint"  # as `dvc status` names it
    env = ui.commands.environment()
    for argv in (["dvc", "init", "--no-scm", "-q"], ["dvc", "repro"]):
        subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, env=env, check=True, capture_output=True)

    stages = {s.name: s for s in pipeline.annotated(tmp_path, pipeline.status(tmp_path))}
    assert {n: s.state for n, s in stages.items()} == {"shards": "up to date", fingerprint: "up to date"}
    assert stages[fingerprint].reasons == ["runs on every `dvc repro`, data.source unchanged (checked just now)"]

    (tmp_path / "store" / "z.nc").write_bytes(b"second, longer")  # the archive changed; nothing in the repo did
    stages = {s.name: s for s in pipeline.annotated(tmp_path, pipeline.status(tmp_path))}
    assert stages["shards"].state == "changed"
    assert stages["shards"].reasons == ["data.source changed (data/source.fingerprint.json: modified)"]

    (tmp_path / "store" / "z.nc").unlink()
    (tmp_path / "store").rmdir()
    stages = {s.name: s for s in pipeline.annotated(tmp_path, pipeline.status(tmp_path))}
    assert stages[fingerprint].state == "changed"
    assert any("data.source cannot be fingerprinted: params.yaml: data.source 'store' (resolved to" in r
               for r in stages[fingerprint].reasons), stages[fingerprint].reasons
