"""The web app: a Starlette application over one project folder.

Stack: Starlette (the ASGI core FastAPI is built on; a dozen routes need no more) + Jinja2 pages + a small
script of our own (static/app.js: fetch + JSON, no framework) + Plotly.js for charts, served from the plotly
wheel's own plotly.min.js. Everything comes from installed packages: no CDN, works offline on a compute node.
uvicorn serves it. The project, git and DVC hold every fact; the app keeps only memos of slow answers (cache.py).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import dvcfile
from .. import provenance as prov
from ..errors import ForgeError
from . import experiments, pipeline
from .cache import Background
from .jobs import Jobs
from .queue_keeper import QueueKeeper
from .security import Guard, csrf_token

HERE = Path(__file__).parent
MAX_MEMOS = 8  # selections whose significance tables are kept
HEADERS = {
    # plotly.js styles its charts inline; no inline script anywhere
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # the token never leaves in a Referer
    "cache-control": "no-store",
}


def plotly_js() -> Path:
    """plotly.min.js as shipped inside the installed plotly wheel (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ForgeError("the plotly package is missing. Fix: pip install -c requirements/lock.txt -e .")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ForgeError(f"{path} is missing from the plotly package. Fix: reinstall plotly from the lock.")
    return path


def page_environment() -> jinja2.Environment:
    """Jinja2 for the pages, with [[ ]] / [% %] / [# #] as delimiters: the project itself is rendered by cookiecutter
    (Jinja's braces), and its pages must come out of that untouched."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, keep_trailing_newline=True,
        variable_start_string="[[", variable_end_string="]]", block_start_string="[%", block_end_string="%]",
        comment_start_string="[#", comment_end_string="#]")


class Project:
    """One project folder and the memos of what git and DVC say about it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = root.name
        self.git = experiments.git_dir(root)
        self.queue = QueueKeeper(root)
        self.experiments = Background(self._load_runs, lambda: experiments.fingerprint(root, self.git),
                                      experiments.max_age)
        self.status = Background(lambda: pipeline.status(root), lambda: pipeline.fingerprint(root))
        self.verify = Background(self._verify, self._verify_fingerprint)
        self.jobs = Jobs(root)
        self.files = experiments.GitFiles(root)
        self._differences: dict[tuple, Background] = {}  # by selection: newest last, at most MAX_MEMOS

    def _load_runs(self) -> list[experiments.Run]:
        runs = experiments.load(self.root)
        self.queue.seen([r.state for r in runs], time.time())  # a started queue whose worker is gone: start it again
        return runs

    def _verify(self) -> dict:
        from ..verify import verify

        report = verify(self.root)
        return {"rows": report.rows, "failed": report.failed, "at": time.strftime("%H:%M:%S")}

    def _verify_fingerprint(self) -> tuple:
        """What verify's verdict depends on: the lock, params, stamps, code and the commit (not .git/index, which
        verify's own `git status` may rewrite)."""
        paths = [self.root / p for p in (*dvcfile.LOCK_FILES, "params.yaml", "results/provenance.json",
                                         "models/model.pt", "src")]
        if self.git is not None:
            paths += [self.git / "HEAD", self.git / "packed-refs", self.git / "refs" / "heads"]
        return experiments.file_stats(paths, skip=(".pyc",))

    def runs(self, wait: float = 0.0) -> tuple[list[experiments.Run], object]:
        snap = self.experiments.get(wait)
        return list(snap.value or []), snap

    def find(self, run_id: str) -> experiments.Run:
        runs, _ = self.runs(wait=30)
        for r in runs:
            if r.id == run_id or (r.rev == run_id and run_id):
                return r
        raise ForgeError(f"no run {run_id!r} in `dvc exp show` (it may have been removed). Fix: reload the page.")

    def differences(self, selected: list[experiments.Run], channels: list[str], wait: float = 20.0):
        """The significance of each selected run against the first (experiments.differences), in the background:
        a commit's scores never change, the workspace's are watched by their file's stats."""
        key = (tuple((r.id, r.rev) for r in selected), tuple(channels))
        task = self._differences.pop(key, None) or Background(
            lambda: experiments.differences(self.root, self.files, selected, channels),
            lambda: experiments.file_stats([self.root / experiments.PER_INIT]))
        self._differences[key] = task
        while len(self._differences) > MAX_MEMOS:
            self._differences.pop(next(iter(self._differences)))
        return task.get(wait)

    def git_state(self) -> dict:
        return prov.git_state(self.root)


def create_app(root: Path, token: str, port: int, hosts: set[str] | None = None) -> Guard:
    """The app for the project at `root`; `hosts`: extra names the Host header may carry (None: any)."""
    from . import api, pages

    project = Project(root)
    templates = Jinja2Templates(env=page_environment())
    csrf = csrf_token(token)
    templates.env.globals.update(project_name=project.name, csrf=csrf)
    plotly = plotly_js()

    async def plotly_route(request):
        return FileResponse(plotly, media_type="text/javascript", headers={"cache-control": "private, max-age=86400"})

    async def not_found(request, exc):
        return PlainTextResponse(f"Not found: {request.url.path}", status_code=404)

    routes = [
        *pages.routes(),
        *api.routes(),
        Route("/static/plotly.min.js", plotly_route),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found})
    app.state.project = project
    app.state.templates = templates
    project.experiments.refresh()  # `dvc exp show` starts now, in the background: the first page need not wait
    return Guard(app, token, port, hosts, HEADERS)
