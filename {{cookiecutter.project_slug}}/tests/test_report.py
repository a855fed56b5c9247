"""The HTML report: built from an evaluation's outputs, opened in a real headless Chromium.

The browser test drives Debian's chromium over the DevTools protocol (websocket-client): it loads the file, fails on
any console error, checks that the scorecard, the curves, the maps, the training curve and the provenance block are
laid out visibly inside the page, and keeps a full-page screenshot (its path is printed; under $FORGE_ARTIFACTS
when set). Without chromium the test FAILS unless FORGE_ALLOW_NO_BROWSER=1.
"""

from __future__ import annotations

import html.parser
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from browser import check_rendered, render_in_chromium

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
        "climatology": {"climatology": "computed", "train": ["2000-01-01", "2000-12-31T18:00"], "window_days": 15,
                        "window_shape": "triangular"},
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
    # the ACC reference as evaluation.json records it: the computed window's shape and width, or the external store
    clim = "train split 2000-01-01 .. 2000-12-31T18:00, day of year x hour of day, triangular window of +-15 days"
    assert clim in page
    external = report_mod.climatology_text({"climatology": "gs://wb2/era5-clim.zarr"})
    assert external == "external store gs://wb2/era5-clim.zarr, day of year x hour of day"


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


def test_provenance_shows_the_job_and_the_data_source(tmp_path, pkg_name, report_mod, monkeypatch):
    """Provenance schema 2: the job is stamp["job"] = {scheduler, id} (no "job_id"); stamp["source"] is the source
    fingerprint, shown as what data.source was and its sha256."""
    fingerprint = importlib.import_module(f"{pkg_name}.fingerprint")
    prov = importlib.import_module(f"{pkg_name}.provenance")
    results = make_results(pkg_name, tmp_path / "results")
    root = tmp_path / "project"
    for name in ("t2m", "z500"):
        (root / "era5" / name).mkdir(parents=True)
        (root / "era5" / name / "2000.nc").write_bytes(name.encode())
    found = fingerprint.compute(["era5/t2m/*.nc", "era5/z500/*.nc"], root)
    fingerprint.write(found, root / fingerprint.FINGERPRINT)
    monkeypatch.delenv("PBS_JOBID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    stamp = prov.write_provenance(results / "provenance.json", params={"seed": 0}, command="evaluate", root=root)
    assert stamp["schema"] == 2 and "job_id" not in stamp
    evaluation = json.loads((results / "evaluation.json").read_text())
    evaluation["model_provenance"] = {"commit": "0123456789abcdef", "job": {"scheduler": "pbs", "id": "9.pbs01"},
                                      "source": {"source": "synthetic", "kind": "synthetic", "sha256": "5e" * 32}}
    (results / "evaluation.json").write_text(json.dumps(evaluation))
    rows = {label: (here, trained) for label, here, trained in
            report_mod.provenance_view(report_mod.load_results(results))["rows"]}
    assert rows["job"] == ("77_3 (slurm)", "9.pbs01 (pbs)")
    assert rows["data source"] == (
        f"era5/t2m/*.nc, era5/z500/*.nc (list, 2 files), fingerprint sha256 {found['sha256']}",
        f"synthetic (synthetic), fingerprint sha256 {'5e' * 32}")
    report_mod.main(["--results", str(results)])
    page = (results / "report.html").read_text()
    assert f"<tr><th>data source</th><td>era5/t2m/*.nc, era5/z500/*.nc (list, 2 files), fingerprint sha256 " \
           f"{found['sha256']}</td>" in page
    (root / fingerprint.FINGERPRINT).unlink()  # a stamp without a fingerprint says so
    no_source = prov.collect(params={"seed": 0}, command="evaluate", root=root)
    assert report_mod.stamp_fields(no_source)["data source"] == "not recorded"


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


def test_significance_marks_by_hand(pkg_name):
    sc = importlib.import_module(f"{pkg_name}.scorecard")
    per_lead = {"t": {"model": [(6, 1.0, 0.9, 0.1), (24, 2.0, 0.8, 0.1)],
                      "persistence": [(6, 2.0, 0.85, 0.0), (24, 2.1, 0.7, 0.0)], "climatology": []}}  # fmt: skip
    marks = {("RMSE", "t", "persistence", 6): {"difference": -1.0, "low": -1.2, "high": -0.8, "significant": 1},
             ("RMSE", "t", "persistence", 24): {"difference": -0.1, "low": -0.3, "high": 0.1, "significant": 0}}
    rmse = sc.scorecard(per_lead, ["t"], [6, 24], marks)[0]
    cells = [c for c in rmse["rows"][0]["cells"] if c.get("ref") == "persistence"]
    assert [c["text"] for c in cells] == ["-50.0 %*", "-4.8 %"]  # the mark only where the interval excludes zero
    assert cells[0]["title"].endswith("interval [-1.2, -0.8]: significant")
    assert cells[1]["title"].endswith("interval [-0.3, 0.1]: not significant")
    assert rmse["counts"][0] == "better than persistence in 2 of 2 scores; significant (*): 1 better, 0 worse"
    # without intervals: no mark, no tooltip, no count
    plain = sc.scorecard(per_lead, ["t"], [6, 24])[0]
    assert "title" not in plain["rows"][0]["cells"][2]
    assert plain["counts"][0] == "better than persistence in 2 of 2 scores"


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
# Real browser (browser.py)


def test_report_renders_in_headless_chromium(tmp_path, pkg_name, report_mod, capsys):
    results = make_results(pkg_name, tmp_path / "results")
    report_mod.main(["--results", str(results), "--out", str(results / "report.html")])
    state, png, errors = render_in_chromium(results / "report.html", SECTIONS, tmp_path, "report_screenshot.png")
    with capsys.disabled():
        print(f"\n[report screenshot] {png}")
    assert errors == [], f"console errors in the report: {errors}"
    check_rendered(state, png, SECTIONS)
    assert state["sections"]["scorecard"]["rows"] >= 3 * (2 + len(CHANNELS))  # three tables, 2 header rows each
    assert "geopotential_500" in state["sections"]["scorecard"]["text"]
    assert state["sections"]["curves"]["images_ok"] == 3
    prov_text = state["sections"]["provenance"]["text"]
    assert "commit" in prov_text and "params sha256" in prov_text and "0123456789abcdef" in prov_text
