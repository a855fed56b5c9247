"""The JSON endpoints behind the pages: validate and save params, queue and run, cancel, apply, and the live data.

Every POST here passed security.Guard (token, CSRF header, same origin). Its body names values and names only:
each value goes through the same validation as params.yaml, each name must exist in `dvc exp show` or in the
project's profiles/ or logs/ui/, and the command it leads to is one of commands.py's fixed argument lists.
A user error (bad value, unknown name, a command that failed) is a 400 with the message; nothing was changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import ForgeError, ParamsError
from . import commands, schema, watch
from .params_file import PARAMS, changes_from_form, errors_by_key, read_raw, save, sha256, unknown_key, validate
from .schema import text_of


def endpoint(fn: Callable[..., Any]) -> Callable:
    """A blocking handler run in a worker thread; ForgeError -> 400 {"error", "fields", "other"}."""

    @functools.wraps(fn)
    async def wrapped(request: Request) -> JSONResponse:
        body: dict = {}
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            return JSONResponse(await run_in_threadpool(fn, request.app.state.project, body, request))
        except ParamsError as exc:
            fields, other = errors_by_key(exc, list(schema.fields_by_key()))
            return JSONResponse({"error": str(exc), "fields": fields, "other": other}, status_code=400)
        except ForgeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return wrapped


def _values(body: dict) -> dict[str, str]:
    values = body.get("values") or {}
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ForgeError("'values' must map params keys to the texts of the form's fields.")
    return values


def _current(project) -> tuple[str, dict]:
    text = (project.root / PARAMS).read_text()
    return text, read_raw(text)


# ----------------------------------------------------------------------------------------------------------------
# Configure


@endpoint
def validate_form(project, body: dict, request: Request) -> dict:
    """Live validation: the CLI's messages for the form's values; writes nothing."""
    _, raw = _current(project)
    fields = schema.fields_by_key()
    changes: dict = {}
    try:
        changes = changes_from_form(raw, _values(body), fields)
        validate(raw, changes)
    except ParamsError as exc:
        by_key, other = errors_by_key(exc, list(fields))
        return {"ok": False, "fields": by_key, "other": other, "changed": sorted(changes)}
    return {"ok": True, "fields": {}, "other": [], "changed": sorted(changes)}


@endpoint
def save_params(project, body: dict, request: Request) -> dict:
    text, raw = _current(project)
    changes = changes_from_form(raw, _values(body), schema.fields_by_key())
    if not changes:
        return {"saved": False, "changed": [], "sha256": sha256(text)}
    new_text = save(project.root / PARAMS, changes, body.get("sha256"))
    return {"saved": True, "changed": [f"{k} = {text_of(v)}" for k, v in changes.items()], "sha256": sha256(new_text)}


# ----------------------------------------------------------------------------------------------------------------
# Launch


@endpoint
def queue(project, body: dict, request: Request) -> dict:
    """Queue experiments: the form's changed values as one experiment, or a sweep {key: "v1, v2"}."""
    _, raw = _current(project)
    fields = schema.fields_by_key()
    sweep = body.get("sweep")
    if sweep:
        if not isinstance(sweep, dict) or not all(isinstance(v, str) for v in sweep.values()):
            raise ForgeError("'sweep' must map params keys to comma-separated values.")
        unknown = [k for k in sweep if k not in fields]
        if unknown:
            raise unknown_key(unknown[0], fields)
        combos = commands.plan_sweep(raw, {k: commands.sweep_values(fields[k], t) for k, t in sweep.items()})
    else:
        changes = changes_from_form(raw, _values(body), fields)
        validate(raw, changes)
        combos = [changes]
    names = commands.queue(project.root, combos)
    project.experiments.refresh()
    return {"queued": names, "overrides": [{k: text_of(v) for k, v in c.items()} for c in combos]}


def _profile(body: dict) -> str | None:
    profile = body.get("profile") or None
    if profile is not None and not isinstance(profile, str):
        raise ForgeError("'profile' must be the name of a folder in profiles/.")
    return profile


@endpoint
def queue_start(project, body: dict, request: Request) -> dict:
    workers = body.get("workers", 1)
    argv = commands.queue_start_argv(workers)
    env = commands.queue_start_env(project.root, _profile(body))
    output = commands.run(argv, project.root, env=env)
    project.queue.started(argv, env)
    project.experiments.refresh()
    return {"output": output}


@endpoint
def queue_cancel(project, body: dict, request: Request) -> dict:
    run = project.find(str(body.get("name", "")))
    output = commands.run(commands.cancel_argv(run.id, run.state), project.root)
    project.experiments.refresh()
    return {"output": output}


@endpoint
def run_pipeline(project, body: dict, request: Request) -> dict:
    profile = _profile(body)
    argv = commands.pipeline_argv(project.root, profile)
    job = project.jobs.start(argv, f"snakemake profile {profile}" if profile else "dvc repro")
    return {"job": job.id, "command": job.command}


@endpoint
def cancel_job(project, body: dict, request: Request) -> dict:
    job = project.jobs.cancel(str(body.get("job", "")))
    return {"job": job.id, "state": "stopping"}


@endpoint
def log(project, body: dict, request: Request) -> dict:
    """The end of a job's log (?job=ID) or of a queued experiment's (?exp=NAME)."""
    job_id = request.query_params.get("job")
    if job_id:
        job = project.jobs.get(job_id)
        return {"title": job.command, "text": project.jobs.tail(job_id), "running": job.running}
    run = project.find(request.query_params.get("exp", ""))
    path = Path(run.log).resolve() if run.log else None
    if path and path.is_file() and (project.root / ".dvc" / "tmp").resolve() in path.parents:
        text = path.read_text(errors="replace")[-64_000:]
    elif run.state == "queued":
        text = "(queued: no output yet)"
    else:
        text = commands.run(commands.dvc("queue", "logs", commands.checked_name(run.id)), project.root)[-64_000:]
    return {"title": f"experiment {run.id} ({run.state})", "text": text, "running": run.state == "running"}


# ----------------------------------------------------------------------------------------------------------------
# Compare: keep an experiment


@endpoint
def exp_apply(project, body: dict, request: Request) -> dict:
    run = project.find(str(body.get("name", "")))
    if run.kind != "experiment":
        raise ForgeError(f"{run.id} is not an experiment; only experiments can be applied.")
    output = commands.apply(project.root, run.id)
    project.experiments.refresh()
    return {"output": output}


@endpoint
def exp_branch(project, body: dict, request: Request) -> dict:
    run = project.find(str(body.get("name", "")))
    if run.kind != "experiment":
        raise ForgeError(f"{run.id} is not an experiment; only experiments can be made a branch.")
    output = commands.run(commands.branch_argv(run.id, str(body.get("branch", ""))), project.root)
    project.experiments.refresh()
    return {"output": output}


# ----------------------------------------------------------------------------------------------------------------
# live data


def _snap(snap) -> dict:
    return {"ready": snap.ready, "refreshing": snap.refreshing, "error": snap.error}


@endpoint
def experiments_state(project, body: dict, request: Request) -> dict:
    runs, snap = project.runs()
    return {**_snap(snap), "runs": [{"id": r.id, "kind": r.kind, "state": r.state, "finished": r.finished}
                                    for r in runs]}


@endpoint
def pipeline_state(project, body: dict, request: Request) -> dict:
    return _snap(project.status.get())


@endpoint
def verify_state(project, body: dict, request: Request) -> dict:
    return _snap(project.verify.get())


@endpoint
def watch_state(project, body: dict, request: Request) -> dict:
    runs, _ = project.runs()
    dirs = watch.run_dirs(project.root, {r.id: r.workdir for r in runs if r.state == "running"})
    name = request.query_params.get("run", "workspace")
    if name not in dirs:
        raise ForgeError(f"no run {name!r} is being watched here; runs: {', '.join(dirs)}.")
    return {"run": name, "runs": list(dirs), "training": watch.training(dirs[name]),
            "snakemake": watch.snakemake_runs(dirs[name])}


def routes() -> list[Route]:
    post = ["POST"]
    return [
        Route("/api/validate", validate_form, methods=post),
        Route("/api/params", save_params, methods=post),
        Route("/api/queue", queue, methods=post),
        Route("/api/queue/start", queue_start, methods=post),
        Route("/api/queue/cancel", queue_cancel, methods=post),
        Route("/api/run", run_pipeline, methods=post),
        Route("/api/jobs/cancel", cancel_job, methods=post),
        Route("/api/exp/apply", exp_apply, methods=post),
        Route("/api/exp/branch", exp_branch, methods=post),
        Route("/api/log", log),
        Route("/api/experiments", experiments_state),
        Route("/api/pipeline", pipeline_state),
        Route("/api/provenance", verify_state),
        Route("/api/watch", watch_state),
    ]
