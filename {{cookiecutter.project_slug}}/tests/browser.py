"""A real headless Chromium for the report tests: Debian's chromium driven over the DevTools protocol
(websocket-client). `render_in_chromium` loads a page, measures where its sections are laid out, collects console
errors and writes screenshots (under $FORGE_ARTIFACTS when set); `check_rendered` asserts the layout. Without
chromium a test using it FAILS unless FORGE_ALLOW_NO_BROWSER=1.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _need(what: str, fix: str):
    if os.environ.get("FORGE_ALLOW_NO_BROWSER") == "1":
        pytest.skip(f"{what} missing and FORGE_ALLOW_NO_BROWSER=1")
    pytest.fail(
        f"{what} is required for the report browser test. Fix: {fix} "
        "(or set FORGE_ALLOW_NO_BROWSER=1 to skip it locally; CI must not).",
        pytrace=False,
    )


class DevTools:
    """A minimal Chrome DevTools Protocol client: send a command, collect events."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def send(self, method: str, **params):
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = next((e for e in self.events if e.get("method") == method), None)
        while seen is None and time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == method:
                seen = msg
        if seen is None:
            raise TimeoutError(f"no {method} within {timeout} s")
        return seen

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
        return out


VISIBILITY_JS = """
(() => {
  const docW = document.documentElement.scrollWidth, docH = document.documentElement.scrollHeight;
  const out = {docW, docH, sections: {}};
  for (const id of %s) {
    const el = document.getElementById(id);
    if (!el) { out.sections[id] = null; continue; }
    const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    const imgs = [...el.querySelectorAll('img')];
    out.sections[id] = {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
      visible: s.display !== 'none' && s.visibility !== 'hidden' && parseFloat(s.opacity) > 0,
      images: imgs.length, images_ok: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
      rows: el.querySelectorAll('tr').length, text: el.innerText.slice(0, 4000)};
  }
  return JSON.stringify(out);
})()
"""


def _start_chromium(tmp_path: Path):
    """Headless Chromium with a DevTools port (written to the profile's DevToolsActivePort file)."""
    chrome = _chromium()
    if chrome is None:
        _need("chromium", "apt-get update && apt-get install -y --no-install-recommends chromium")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _need("the websocket-client package", "pip install websocket-client")
    profile = tmp_path / "chromium-profile"
    log = (tmp_path / "chromium.log").open("wb")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             "--mute-audio", f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
             "--window-size=1280,1000", "about:blank"]  # fmt: skip
    proc = subprocess.Popen([chrome, *flags], stdout=log, stderr=subprocess.STDOUT)
    return proc, log, profile / "DevToolsActivePort"


def render_in_chromium(page: Path, sections: list[str], tmp_path: Path, shot: str, clips: tuple[str, ...] = ()):
    """Load `page` in headless Chromium; return (layout state of `sections`, full-page screenshot path, console
    errors). Screenshots go to $FORGE_ARTIFACTS (else tmp_path): `shot` of the whole page and, for each id in
    `clips`, `<shot stem>_<id>.png` of that section alone."""
    proc, log, port_file = _start_chromium(tmp_path)
    artifacts = Path(os.environ.get("FORGE_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"chromium exited with {proc.returncode}: {(tmp_path / 'chromium.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            target = next(t for t in json.load(resp) if t["type"] == "page")
        cdp = DevTools(target["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            cdp.send(f"{domain}.enable")
        cdp.send("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)
        cdp.send("Page.navigate", url=page.resolve().as_uri())
        cdp.wait_event("Page.loadEventFired")
        expression = VISIBILITY_JS % json.dumps(sections)
        state = json.loads(cdp.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"])
        height = int(min(state["docH"], 16000))
        cdp.send("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False)
        png = artifacts / shot
        png.write_bytes(base64.b64decode(cdp.send("Page.captureScreenshot", format="png",
                                                  captureBeyondViewport=True)["data"]))  # fmt: skip
        for sid in clips:
            box = state["sections"].get(sid)
            if box:
                clip = {"x": box["x"], "y": box["y"], "width": box["w"], "height": min(box["h"], 8000), "scale": 1}
                data = cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
                (artifacts / f"{Path(shot).stem}_{sid}.png").write_bytes(base64.b64decode(data))
        errors = cdp.errors()
        try:
            cdp.send("Browser.close")
        except Exception:  # noqa: BLE001 - the socket may close before the reply
            pass
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return state, png, errors


def check_rendered(state: dict, png: Path, sections: list[str]) -> None:
    """Every section laid out visibly inside the page with its images loaded; the screenshot a real rendering."""
    import matplotlib.image as mpimg

    for sid in sections:
        box = state["sections"][sid]
        assert box is not None, f"section #{sid} missing"
        assert box["visible"] and box["w"] > 100 and box["h"] > 50, f"section #{sid} not visible: {box}"
        assert box["x"] >= 0 and box["x"] + box["w"] <= state["docW"] + 1 and box["y"] + box["h"] <= state["docH"] + 1
        assert box["images"] == box["images_ok"], f"broken image in #{sid}"
    pixels = mpimg.imread(png)
    assert pixels.shape[0] >= min(state["docH"], 16000) - 2 and pixels.shape[1] == 1280
    assert float(pixels[..., :3].std()) > 0.05
