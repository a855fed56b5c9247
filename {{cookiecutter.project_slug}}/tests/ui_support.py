"""Helpers of the web app's tests (test_ui_*.py): a project copy, the app as the CLI starts it, raw HTTP, Chromium.

The app runs as a user starts it (`python -m <package>.cli ui --port 0 --no-browser`, in the project folder) and
is stopped at the end; the browser is Debian's chromium driven by chromedriver through Selenium.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT_FILES = ["src", "Snakefile", "workflow", "dvc.yaml", "params.yaml", "profiles", ".dvcignore", ".gitignore",
                 "requirements"]
URL = re.compile(r"http://(?P<host>[^\s:/]+):(?P<port>\d+)/\?token=(?P<token>[\w-]+)")
GIT_ID = {"GIT_AUTHOR_NAME": "UI Test", "GIT_AUTHOR_EMAIL": "ui-test@example.org",
          "GIT_COMMITTER_NAME": "UI Test", "GIT_COMMITTER_EMAIL": "ui-test@example.org"}


def artifacts() -> Path:
    path = Path(os.environ.get("FORGE_ARTIFACTS", "artifacts")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def copy_project(source: Path, dest: Path) -> Path:
    """The project's own files (no data, results or git) in a fresh folder."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PROJECT_FILES:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=ignore)
        elif path.is_file():
            shutil.copy2(path, dest / name)
    return dest


def env(project: Path, **extra: str) -> dict[str, str]:
    """A user's environment in `project`: this Python's bin/ first on PATH, the project's src/ importable."""
    out = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out.update({"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                "PYTHONPATH": str(project / "src"), "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
                "WANDB_MODE": "offline", **GIT_ID, **extra})
    return out


def sh(project: Path, *argv: str, timeout: float = 600) -> str:
    """Run a command in `project` as a user would; fail with its output."""
    done = subprocess.run(list(argv), cwd=project, env=env(project), capture_output=True, text=True, timeout=timeout)
    output = done.stdout[-4000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{output}"
    return done.stdout


class App:
    """`<package> ui --port 0 --no-browser` in `project`; .url (with token), .port, .token."""

    def __init__(self, pkg_name: str, project: Path) -> None:
        self.project = project
        self.log = open(project.parent / f"ui-{project.name}.log", "w+")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", f"{pkg_name}.cli", "ui", "--port", "0", "--no-browser"],
                                     cwd=project, env=env(project), stdout=self.log, stderr=subprocess.STDOUT,
                                     text=True)
        found = wait_for(lambda: URL.search(Path(self.log.name).read_text()), 60, "the app's address",
                         lambda: self.proc.poll() is None)
        self.url, self.host, self.port, self.token = found[0], found["host"], int(found["port"]), found["token"]
        self.base = f"http://{self.host}:{self.port}"

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(check: Callable, timeout: float, what: str, alive: Callable[[], bool] = lambda: True, every=0.2):
    """check()'s first truthy answer within `timeout` s, else a failure naming `what`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        answer = check()
        if answer:
            return answer
        if not alive():
            pytest.fail(f"gave up waiting for {what}: the process ended")
        time.sleep(every)
    pytest.fail(f"no {what} within {timeout:.0f} s")


def request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
            host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request (no redirects followed, headers exactly as given)."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def chrome(download_dir: Path | None = None):
    """Headless Debian chromium through chromedriver; a missing browser fails the test with the install command."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Debian: chromium + chromedriver from apt. GitHub's Ubuntu runners: Google Chrome + the driver in $CHROMEWEBDRIVER.
    preinstalled = Path(os.environ.get("CHROMEWEBDRIVER", "/nonexistent")) / "chromedriver"
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    if preinstalled.is_file():
        names = names[2:] + names[:2]
    browser = next((shutil.which(n) for n in names if shutil.which(n)), None)
    driver = str(preinstalled) if preinstalled.is_file() else shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("the web app's browser tests need Chromium and its driver. Fix (Debian/Ubuntu, as root): "
                    "apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver",
                    pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def console_errors(driver) -> list[str]:
    """The page's errors, less the 400 answers the app gives to bad input on purpose (Chrome logs them too)."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "the server responded with a status of 400" not in e["message"]]
