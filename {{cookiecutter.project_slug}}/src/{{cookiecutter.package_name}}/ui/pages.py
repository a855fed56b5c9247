"""The pages (GET, HTML): Configure, Pipeline, Launch, Watch, Compare, Provenance, and each run's report.

Handlers are plain functions: Starlette runs them in worker threads, so a git call or a wait for a first answer
never stalls the server for other requests.

A page renders at once from what is known; an answer still being computed (dvc status, dvc exp show, verify)
shows as "loading" and the page reloads itself when it is ready. Parts that change while a page is open (queue,
jobs) are fragments that app.js fetches again every few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import ForgeError, ParamsError
from ..profiles import site_profiles
from . import experiments, schema, watch
from .params_file import PARAMS, errors_by_key, key_comments, read_raw, sha256, validate
from .schema import lookup, text_of

PAGES = [("/configure", "Configure"), ("/pipeline", "Pipeline"), ("/launch", "Launch"), ("/watch", "Watch"),
         ("/compare", "Compare"), ("/provenance", "Provenance")]
MAX_CHART_RUNS = 8  # experiments overlaid by default (newest finished first)


def render(request: Request, name: str, **context) -> Response:
    project = request.app.state.project
    return request.app.state.templates.TemplateResponse(
        request, name, {"pages": PAGES, "path": request.url.path, "root": str(project.root), **context})


def form_state(root: Path) -> dict:
    """The Configure form: groups of fields with the file's current values and the CLI's messages for them."""
    text = (root / PARAMS).read_text()
    groups = schema.groups(key_comments(text))
    keys = [f.key for g in groups for f in g.fields]
    errors: dict[str, list[str]] = {}
    other: list[str] = []
    try:
        raw = read_raw(text)
    except ParamsError as exc:  # not YAML at all: the form shows the defaults under the message
        raw, other = {}, [str(exc)]
    else:
        try:
            validate(raw, {})
        except ParamsError as exc:
            errors, other = errors_by_key(exc, keys)
    values = {f.key: text_of(lookup(raw, f.key, f.default)) for g in groups for f in g.fields}
    return {"groups": groups, "values": values, "errors": errors, "other_errors": other, "sha256": sha256(text)}


def configure(request: Request) -> Response:
    return render(request, "configure.html", **form_state(request.app.state.project.root))


def pipeline_page(request: Request) -> Response:
    from .pipeline import annotated

    project = request.app.state.project
    snap = project.status.get()
    return render(request, "pipeline.html", stages=annotated(project.root, snap.value if snap.ready else None),
                  snap=snap)


def launch(request: Request) -> Response:
    project = request.app.state.project
    fields = schema.fields_by_key()
    return render(request, "launch.html", keys=list(fields), profiles=site_profiles(project.root))


def queue_fragment(request: Request) -> Response:
    project = request.app.state.project
    runs, snap = project.runs()
    queue = [r for r in runs if r.kind == "experiment" and r.state in ("queued", "running", "failed")]
    recent = [r for r in runs if r.kind == "experiment" and r.state not in ("queued", "running", "failed")][:10]
    return render(request, "_queue.html", queue=queue, recent=recent, snap=snap)


def jobs_fragment(request: Request) -> Response:
    return render(request, "_jobs.html", jobs=request.app.state.project.jobs.list()[:20])


def watch_page(request: Request) -> Response:
    project = request.app.state.project
    runs, _ = project.runs()
    dirs = watch.run_dirs(project.root, {r.id: r.workdir for r in runs if r.state == "running"})
    chosen = request.query_params.get("run") or ("workspace" if len(dirs) == 1 else list(dirs)[-1])
    if chosen not in dirs:
        chosen = "workspace"
    return render(request, "watch.html", runs=list(dirs), chosen=chosen)


def _selected(request: Request, runs: list[experiments.Run]) -> list[experiments.Run]:
    asked = [r for r in request.query_params.get("runs", "").split(",") if r]
    if asked:
        return [r for r in runs if r.id in asked]
    finished = [r for r in runs if r.finished and r.kind == "experiment"]
    base = [r for r in runs if r.kind == "workspace" and r.finished]
    return base + finished[:MAX_CHART_RUNS]


def compare(request: Request) -> Response:
    project = request.app.state.project
    runs, snap = project.runs()
    if not snap.ready:
        return render(request, "compare.html", snap=snap, runs=[], selected=[], keys=[], channels=[], leads=[],
                      lead=None, chart={}, reference=None, significance=None)
    selected = _selected(request, runs)
    channels, leads = experiments.headline(runs)
    lead = request.query_params.get("lead") or (leads[-1] if leads else None)
    chart = {"curves": experiments.curves(project.files, selected, channels), "channels": channels,
             "runs": [r.id for r in selected]}
    finished = [r for r in selected if r.finished]
    significance = project.differences(finished, channels) if len(finished) > 1 else None
    return render(request, "compare.html", snap=snap, runs=runs, selected={r.id for r in selected},
                  keys=experiments.differing(runs), channels=channels, leads=leads, lead=lead,
                  chart=chart, score=experiments.score, text_of=text_of,
                  reference=finished[0] if significance else None, significance=significance)


def provenance_page(request: Request) -> Response:
    project = request.app.state.project
    stamp_path = project.root / "results" / "provenance.json"
    try:
        stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else None
    except ValueError:
        stamp = None
    return render(request, "provenance.html", git=project.git_state(), stamp=stamp, snap=project.verify.get())


def report(request: Request) -> Response:
    project = request.app.state.project
    try:
        run = project.find(request.path_params["run_id"])
    except ForgeError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    path = experiments.report_path(project.root, project.files, run)
    if path is None:
        return PlainTextResponse(f"No report for {run.id}: it is made by the evaluate stage and kept in the DVC "
                                 "cache (`dvc pull` brings it from the remote).", status_code=404)
    return FileResponse(path, media_type="text/html")


def routes() -> list[Route]:
    return [
        Route("/", configure),
        Route("/configure", configure),
        Route("/pipeline", pipeline_page),
        Route("/launch", launch),
        Route("/fragment/queue", queue_fragment),
        Route("/fragment/jobs", jobs_fragment),
        Route("/watch", watch_page),
        Route("/compare", compare),
        Route("/provenance", provenance_page),
        Route("/report/{run_id:path}", report),
    ]
