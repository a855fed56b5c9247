"""The HTML report: built from an evaluation's outputs, opened in a real headless Chromium.

The browser test drives Debian's chromium over the DevTools protocol (websocket-client): it loads the file, fails on
any console error, checks that the scorecard, the curves, the maps, the training curve and the provenance block are
laid out visibly inside the page, and keeps a full-page screenshot (its path is printed; under $FORGE_ARTIFACTS
when set). Without chromium the test FAILS unless FORGE_ALLOW_NO_BROWSER=1.
"""

from __future__ import annotations

import base64
import html.parser
import importlib
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHANNELS = ["geopotential_500", "geopotential_850", "temperature_500", "temperature_850", "2m_temperature"]
SECTIONS = ["scorecard", "curves", "maps", "training", "provenance"]


def make_results(pkg_name: str, out: Path, with_train_log: bool = True) -> Path:
    """A results/ directory as evaluate writes it, from made-up but plausible scores."""
    res = importlib.import_module(f"{pkg_name}.results")
    prov = importlib.import_module(f"{pkg_name}.provenance")
    leads = [6 * (i + 1) for i in range(12)]
    grow = np.sqrt(np.array(leads, dtype=float) / 6.0)[:, None]
    scale = np.array([900.0, 700.0, 2.5, 2.5, 3.0])[None, :]
    rmse = {"model": 0.3 * grow * scale, "persistence": 0.55 * grow * scale, "climatology": np.ones_like(grow) * scale}
    acc = {
        "model": 1 - 0.05 * grow * np.ones((1, 5)),
        "persistence": 1 - 0.12 * grow * np.ones((1, 5)),
        "climatology": np.full((12, 5), np.nan),  # no anomaly: undefined
    }
    bias = {f: 0.01 * v for f, v in rmse.items()}
    lat = np.linspace(-87.1875, 87.1875, 32)
    lon = np.arange(64) * 5.625
    field = np.cos(np.deg2rad(lat))[:, None] * np.sin(np.deg2rad(2 * lon))[None, :]
    maps = {
        (ch, h): {"truth": field * s, "forecast": (field + 0.1 * field**2) * s}
        for ch, s in (("geopotential_500", 900.0), ("2m_temperature", 3.0))
        for h in (24, 72)
    }
    scores = res.Scores(CHANNELS, leads, 40, rmse, acc, bias, maps, "2001-02-01T00:00")
    info = {
        "init_times": ["2001-02-01T00:00", "2001-03-11T00:00"],
        "init_every_hours": 24,
        "lead_hours": 6,
        "test_split": ["2001-02-01", "2001-03-31T18:00"],
        "train_split": ["2000-01-01", "2000-12-31T18:00"],
        "climatology_window_days": 15,
        "model": {"name": "unet", "width": 32, "depth": 2},
        "model_step": 1200,
        "model_provenance": {"commit": "0123456789abcdef", "dirty": False, "params_sha256": "ab" * 32},
    }
    res.write_results(
        out, scores, ["geopotential_500", "temperature_850", "2m_temperature"], [6, 24, 72], lat, lon, info
    )
    prov.write_provenance(out / "provenance.json", params={"seed": 0}, command="evaluate (test)")
    if with_train_log:
        rows = ["step,loss,lr,grad_norm,samples_per_s,data_wait"]
        rows += [
            f"{s},{1.0 / (1 + s / 50):.5f},{2e-3 * min(1, s / 50):.6f},{0.5 + 1 / (1 + s):.4f},{180 + s % 7},0.01"
            for s in range(0, 1201, 20)
        ]
        (out / "train_log.csv").write_text("\n".join(rows) + "\n")
    return out


@pytest.fixture()
def report_mod(pkg_name):
    return importlib.import_module(f"{pkg_name}.report")


def test_report_is_self_contained(tmp_path, pkg_name, report_mod):
    results = make_results(pkg_name, tmp_path / "results")
    assert report_mod.main(["--results", str(results), "--out", str(results / "report.html")]) == 0
    page = (results / "report.html").read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing fetched
    assert page.count("data:image/png;base64,") == 3 + 4 + 1  # curves, maps, training
    assert "geopotential_500" in page and "0123456789" in page  # scorecard row, model's training commit
    assert 'class="good"' in page  # the made-up model beats persistence


def test_report_without_train_log_or_provenance(tmp_path, pkg_name, report_mod):
    results = make_results(pkg_name, tmp_path / "results", with_train_log=False)
    (results / "provenance.json").unlink()
    report_mod.main(["--results", str(results)])
    page = (results / "report.html").read_text()
    assert "No results/train_log.csv" in page
    assert page.count("data:image/png;base64,") == 3 + 4  # curves and maps still there, no training figure
    # without this evaluation's stamp: said so, and the model's training stamp is still shown
    assert "No git commit recorded for this evaluation." in page
    assert "No results/provenance.json: the provenance of this evaluation is unknown." in page
    assert "0123456789abcdef" in page and "No provenance found" not in page
    # with neither stamp: the provenance section says there is none
    evaluation = json.loads((results / "evaluation.json").read_text())
    del evaluation["model_provenance"]
    (results / "evaluation.json").write_text(json.dumps(evaluation))
    report_mod.main(["--results", str(results)])
    page = (results / "report.html").read_text()
    assert "No provenance found" in page and "0123456789abcdef" not in page


class _Tables(html.parser.HTMLParser):
    """Cells of every <table id=...> in a page: {id: [[(class, style, text), ...] per row]}."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.cell = {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self.current = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self.current is not None:
            self.current.append([])
        elif tag == "td" and self.current is not None:
            self.cell = [attrs.get("class") or "", attrs.get("style") or "", ""]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[2] += data

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.current[-1].append(tuple(self.cell))
            self.cell = None
        elif tag == "table":
            self.current = None


def page_tables(page: str) -> dict:
    parser = _Tables()
    parser.feed(page)
    return {k: [row for row in rows if row] for k, rows in parser.tables.items()}


def _rgb(style: str) -> tuple[int, int, int]:
    code = style.split("background:#")[1][:6]
    return tuple(int(code[i : i + 2], 16) for i in (0, 2, 4))


def test_undefined_acc_renders_as_a_dash_and_is_never_beaten(tmp_path, pkg_name, report_mod):
    results = make_results(pkg_name, tmp_path / "results")
    assert json.loads((results / "metrics.json").read_text())["acc"]["geopotential_500"]["climatology"]["24h"] is None
    report_mod.main(["--results", str(results)])
    page = (results / "report.html").read_text()
    rows = page_tables(page)["scorecard-acc"]
    assert len(rows) == len(CHANNELS)
    for row in rows:
        per_lead = [row[2 + 5 * k : 2 + 5 * (k + 1)] for k in range(3)]  # model, pers, vs pers, clim, vs clim
        for model, _, vs_pers, clim, vs_clim in per_lead:
            assert float(model[2]) > 0 and vs_pers[0] == "good"
            assert clim[2] == "—" and vs_clim == ("undefined", "", "—")  # no number, no colour, not "good"
    assert "better than climatology in 0 of 0 scores; 15 undefined (—), not counted" in page
    # RMSE against the same climatology is defined, and the model loses at 72 h there
    assert "better than climatology in 10 of 15 scores" in page


def test_comparison_colour_follows_the_number_shown(tmp_path, pkg_name, report_mod):
    results = make_results(pkg_name, tmp_path / "results")
    report_mod.main(["--results", str(results)])
    cells = [c for row in page_tables((results / "report.html").read_text())["scorecard-rmse"] for c in row
             if c[0] in ("good", "bad")]  # fmt: skip
    shown = [(float(text.replace("%", "")), _rgb(style)) for _, style, text in cells]
    assert {d > 0 for d, _ in shown} == {True, False}  # both signs occur in this data
    for diff, (r, g, b) in shown:
        assert (g > r) == (diff < 0), (diff, (r, g, b))  # RMSE: negative = model better = green
    # deeper colour (further from white) for a larger difference, within each hue
    for better in (True, False):
        depths = [765 - sum(rgb) for _, rgb in sorted((abs(d), rgb) for d, rgb in shown if (d < 0) == better)]
        assert depths == sorted(depths)
    greens = sorted((abs(d), 765 - sum(rgb)) for d, rgb in shown if d < 0)
    assert greens[0][0] < greens[-1][0] and greens[0][1] < greens[-1][1]


def test_scorecard_colours_by_hand(pkg_name):
    sc = importlib.import_module(f"{pkg_name}.scorecard")
    per_lead = {"t": {"model": [(6, 1.0, 0.9, 0.1)], "persistence": [(6, 2.0, 0.95, -0.2)],
                      "climatology": [(6, 1.0, None, 0.0)]}}  # fmt: skip
    rmse, acc, bias = sc.scorecard(per_lead, ["t"], [6])
    model, pers, vs_pers, clim, vs_clim = rmse["rows"][0]["cells"]
    assert vs_pers["text"] == "-50.0 %" and vs_pers["cls"] == "good" and vs_pers["colour"] == sc.colour("RMSE", -50)
    assert vs_clim["text"] == "+0.0 %" and vs_clim["cls"] == "even" and vs_clim["colour"] == ""  # a tie: no colour
    _, _, vs_pers, _, vs_clim = acc["rows"][0]["cells"]
    assert vs_pers["text"] == "-0.050" and vs_pers["cls"] == "bad"
    assert vs_clim == {"text": "—", "cls": "undefined", "colour": "", "ref": "climatology"}
    assert acc["counts"] == ["better than persistence in 0 of 1 scores",
                             "better than climatology in 0 of 0 scores; 1 undefined (—), not counted"]  # fmt: skip
    assert [c["text"] for c in bias["rows"][0]["cells"]] == ["0.1", "-0.2", "0"] and bias["counts"] == []
    assert rmse["rows"][0]["units"] == "units?" and acc["rows"][0]["units"] == "1"
    # the colour is a function of the difference: sign picks the hue, size the depth
    assert sc.colour("RMSE", -10) != sc.colour("RMSE", 10) and sc.colour("RMSE", -10) != sc.colour("RMSE", -40)
    assert sc.colour("ACC", 0.1) == sc.colour("RMSE", -25)


def test_units_on_every_scorecard_row(tmp_path, pkg_name, report_mod):
    results = make_results(pkg_name, tmp_path / "results")
    report_mod.main(["--results", str(results)])
    tables = page_tables((results / "report.html").read_text())
    units = {row[0][2]: row[1][2] for row in tables["scorecard-rmse"]}
    assert units == {"geopotential_500": "m² s⁻²", "geopotential_850": "m² s⁻²", "temperature_500": "K",
                     "temperature_850": "K", "2m_temperature": "K"}  # fmt: skip
    assert {row[1][2] for row in tables["scorecard-bias"]} == {"m² s⁻²", "K"}
    assert {row[1][2] for row in tables["scorecard-acc"]} == {"1"}


def test_report_needs_metrics(tmp_path, report_mod):
    with pytest.raises(ValueError, match="run the evaluate step"):
        report_mod.main(["--results", str(tmp_path)])


# ----------------------------------------------------------------------------------------------------------------
# Real browser


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


def test_report_renders_in_headless_chromium(tmp_path, pkg_name, report_mod, capsys):
    chrome = _chromium()
    if chrome is None:
        _need("chromium", "apt-get update && apt-get install -y --no-install-recommends chromium")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _need("the websocket-client package", "pip install websocket-client")

    results = make_results(pkg_name, tmp_path / "results")
    report_mod.main(["--results", str(results), "--out", str(results / "report.html")])
    profile = tmp_path / "chromium-profile"
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [
            chrome,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            "--window-size=1280,1000",
            "about:blank",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"chromium exited with {proc.returncode}: {(tmp_path / 'chromium.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        cdp = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            cdp.send(f"{domain}.enable")
        cdp.send("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)
        cdp.send("Page.navigate", url=(results / "report.html").resolve().as_uri())
        cdp.wait_event("Page.loadEventFired")
        state = json.loads(
            cdp.send("Runtime.evaluate", expression=VISIBILITY_JS % json.dumps(SECTIONS), returnByValue=True)["result"][
                "value"
            ]
        )

        height = int(min(state["docH"], 16000))
        cdp.send("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False)
        shot = cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        artifacts = Path(os.environ.get("FORGE_ARTIFACTS") or tmp_path)
        artifacts.mkdir(parents=True, exist_ok=True)
        png = artifacts / "report_screenshot.png"
        png.write_bytes(base64.b64decode(shot["data"]))
        with capsys.disabled():
            print(f"\n[report screenshot] {png}")
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

    assert errors == [], f"console errors in the report: {errors}"
    for sid in SECTIONS:
        box = state["sections"][sid]
        assert box is not None, f"section #{sid} missing"
        assert box["visible"] and box["w"] > 100 and box["h"] > 50, f"section #{sid} not visible: {box}"
        assert box["x"] >= 0 and box["x"] + box["w"] <= state["docW"] + 1 and box["y"] + box["h"] <= state["docH"] + 1
        assert box["images"] == box["images_ok"], f"broken image in #{sid}"
    assert state["sections"]["scorecard"]["rows"] >= 3 * (2 + len(CHANNELS))  # three tables, 2 header rows each
    assert "geopotential_500" in state["sections"]["scorecard"]["text"]
    assert state["sections"]["curves"]["images_ok"] == 3
    prov_text = state["sections"]["provenance"]["text"]
    assert "commit" in prov_text and "params sha256" in prov_text and "0123456789abcdef" in prov_text
    # the screenshot is a real rendering: full page height, not a blank image
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)
    assert pixels.shape[0] >= min(state["docH"], 16000) - 2 and pixels.shape[1] == 1280
    assert float(pixels[..., :3].std()) > 0.05
