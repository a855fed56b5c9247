"""Significance between experiments: results/scores/per_init.nc, `compare` of folders and of git / `dvc exp`
revisions (a real tiny git + DVC repo), and the web app's Compare page."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import ui_support as ui
import yaml

CHANNELS = ["geopotential_500", "2m_temperature"]
LEADS = [24, 48]
FORECASTS = ("model", "persistence", "climatology")
PARAMS = {"seed": 0, "shift": 0.0, "write_per_init": True,
          "evaluate": {"headline": CHANNELS, "key_leads_hours": LEADS,
                       "significance": {"samples": 300, "block_length": 0, "confidence": 0.9}}}


@pytest.fixture(scope="module")
def mods(pkg_name):
    return {n: importlib.import_module(f"{pkg_name}.{n}") for n in ("per_init", "compare", "errors", "cli")}


def per_step(shift: float = 0.0, n: int = 40) -> dict:
    """Per-initial-time scores (init, lead, channel) of three forecasts; the model's MSE plus `shift`."""
    rng = np.random.default_rng(0)
    mse = rng.gamma(4.0, 1.0, size=(n, len(LEADS), len(CHANNELS))) + 1.0
    acc = rng.uniform(0.6, 0.9, size=mse.shape)
    out = {"mse": {f: mse * (i + 1) for i, f in enumerate(FORECASTS)}, "acc": {f: acc for f in FORECASTS},
           "bias": {f: mse * 0.1 for f in FORECASTS}}
    out["mse"]["model"] = mse + shift
    return out


def inits(n: int = 40, start: str = "2021-01-01") -> np.ndarray:
    return np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(12, "h")


def write_results(mods, folder: Path, shift: float = 0.0, start: str = "2021-01-01") -> Path:
    ds = mods["per_init"].dataset(per_step(shift), inits(start=start), LEADS, CHANNELS)
    mods["per_init"].write(folder / mods["per_init"].FILE, ds)
    return folder


def run_compare(mods, *argv: str) -> dict:
    assert mods["compare"].main([*argv, "--json", "out.json"]) == 0
    return json.loads(Path("out.json").read_text())


@pytest.fixture
def folders(mods, tmp_path, monkeypatch):
    """results folders A and B = A + 1 on the model's MSE, and params.yaml (confidence 0.9) in the project."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return write_results(mods, tmp_path / "a"), write_results(mods, tmp_path / "b", shift=1.0)


# ----------------------------------------------------------------------------------------------------------------
# the file


def test_per_init_file_layout_and_identical_bytes(mods, tmp_path):
    a, b = write_results(mods, tmp_path / "a"), write_results(mods, tmp_path / "b")
    path = a / "scores" / "per_init.nc"
    assert path.read_bytes() == (b / "scores" / "per_init.nc").read_bytes()
    import xarray as xr

    with xr.open_dataset(path) as ds:  # any xarray reads it, no engine named
        assert ds["mse"].dims == ("forecast", "init_time", "lead_hours", "channel")
        assert ds["mse"].shape == (3, 40, 2, 2) and ds["mse"].dtype == np.float32
        assert ds.init_time.dtype.kind == "M" and (ds.init_time.values == inits()).all()
        assert ds.lead_hours.values.tolist() == LEADS and ds.channel.values.tolist() == CHANNELS
        assert ds.forecast.values.tolist() == list(FORECASTS)
        np.testing.assert_allclose(ds["mse"].sel(forecast="model").values, per_step()["mse"]["model"], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# folders


def test_a_known_shift_is_significant_with_its_sign(mods, folders):
    got = run_compare(mods, "a", "b")
    assert got["confidence"] == 0.9 and got["samples"] == 300  # from params.yaml
    assert {(r["channel"], r["lead_hours"]) for r in got["rows"]} == {(c, h) for c in CHANNELS for h in LEADS}
    mse = per_step()["mse"]["model"]
    for r in (r for r in got["rows"] if r["score"] == "rmse"):
        m = mse[:, LEADS.index(r["lead_hours"]), CHANNELS.index(r["channel"])].mean()
        assert r["difference"] == pytest.approx(np.sqrt(m) - np.sqrt(m + 1.0), rel=1e-4)
        assert r["low"] <= r["difference"] <= r["high"] < 0 and r["significant"]  # A (no shift) is better
    assert all(r["difference"] == 0 for r in got["rows"] if r["score"] == "acc")  # ACC unchanged
    reverse = run_compare(mods, "b", "a")
    assert all(r["difference"] > 0 and r["significant"] for r in reverse["rows"] if r["score"] == "rmse")


def test_identical_runs_differ_by_zero_not_significantly(mods, folders, capsys):
    got = run_compare(mods, "a", "a")
    assert all(r["difference"] == 0 and not r["significant"] for r in got["rows"])
    out = capsys.readouterr().out
    assert "not significant" in out and " significant" not in out.replace("not significant", "")


def test_leads_and_channels_options_choose_the_rows(mods, folders, capsys):
    got = run_compare(mods, "a", "b", "--leads", "48", "--channels", "2m_temperature")
    assert {(r["channel"], r["lead_hours"]) for r in got["rows"]} == {("2m_temperature", 48)}
    table = capsys.readouterr().out
    assert "2m_temperature" in table and "geopotential_500" not in table and " 24h" not in table


def test_runs_without_common_initial_times_or_channels_are_refused(mods, folders, tmp_path, capsys):
    write_results(mods, tmp_path / "later", start="2023-01-01")
    assert mods["cli"].main(["compare", "a", "later"]) == 2
    err = capsys.readouterr().err
    assert "a and later cannot be paired" in err and "0 common initial times" in err and "Fix:" in err
    with pytest.raises(mods["errors"].ComparisonError, match="channels.*temperature_850"):
        mods["compare"].main(["a", "b", "--channels", "temperature_850"])
    with pytest.raises(mods["errors"].ComparisonError, match="per_init.nc is missing"):
        mods["compare"].main(["a", str(tmp_path)])


# ----------------------------------------------------------------------------------------------------------------
# revisions: a tiny git + DVC repo whose one stage writes per-initial-time scores from params.yaml's `shift`


MAKE_SCORES = """
import importlib, json, sys
from pathlib import Path
import yaml
sys.path.insert(0, {tests!r})
from test_compare import write_results

params = yaml.safe_load(open("params.yaml"))
mods = {{"per_init": importlib.import_module({pkg!r} + ".per_init")}}
Path("results/scores").mkdir(parents=True, exist_ok=True)
if params["write_per_init"]:
    write_results(mods, Path("results"), params["shift"])
else:
    Path("results/scores/regions.csv").write_text("older run\\n")
Path("results/metrics.json").write_text(json.dumps({{"rmse": {{"geopotential_500": {{"model": {{"24h": 1.0}}}}}}}}))
"""


def git(root: Path, *argv: str) -> str:
    return ui.sh(root, *argv)


@pytest.fixture(scope="module")
def repo(pkg_name, project_root, tmp_path_factory) -> Path:
    """main: shift 0; experiments `shifted` (shift 2) and `older` (no per_init.nc); a local remote holds all."""
    root = tmp_path_factory.mktemp("compare") / "repo"
    root.mkdir()
    (root / "src").symlink_to(project_root / "src")  # the app runs the project's package
    (root / ".gitignore").write_text("/src\n")
    (root / "Snakefile").write_text("# the app's mark of a project root\n")
    (root / "profiles").mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "make_scores.py").write_text(MAKE_SCORES.format(tests=str(Path(__file__).parent), pkg=pkg_name))
    (root / "dvc.yaml").write_text(textwrap.dedent(f"""\
        stages:
          scores:
            cmd: {sys.executable} make_scores.py
            params: [shift, write_per_init]
            deps: [make_scores.py]
            outs: [results/scores]
            metrics: [{{results/metrics.json: {{cache: false}}}}]
        """))
    dvc = (sys.executable, "-m", "dvc")
    git(root, "git", "init", "-q", "-b", "main")
    git(root, *dvc, "init", "-q")
    git(root, *dvc, "remote", "add", "-d", "storage", str(root.parent / "remote"))
    git(root, *dvc, "repro", "-q")
    git(root, "git", "add", "-A")
    git(root, "git", "commit", "-qm", "baseline")
    git(root, *dvc, "exp", "run", "-q", "-S", "shift=2.0", "-n", "shifted")
    git(root, *dvc, "exp", "run", "-q", "-S", "write_per_init=false", "-n", "older")
    git(root, "git", "checkout", "-q", "--", ".")
    git(root, *dvc, "checkout", "-q", "--force")
    git(root, *dvc, "push", "-q", "--all-commits")
    return root


def test_compare_by_git_revision_and_experiment_name(mods, repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    got = run_compare(mods, "shifted", "main")  # an experiment against a branch, both from the DVC cache
    rows = [r for r in got["rows"] if r["score"] == "rmse"]
    assert len(rows) == 4 and all(r["difference"] > 0 and r["significant"] for r in rows)
    assert got["confidence"] == 0.9
    same = run_compare(mods, "HEAD", "results")  # a revision against the workspace's folder
    assert all(r["difference"] == 0 and not r["significant"] for r in same["rows"])
    assert mods["cli"].main(["compare", "older", "main"]) == 2
    err = capsys.readouterr().err
    assert "older" in err and "results/scores/per_init.nc" in err and "Fix:" in err
    with pytest.raises(mods["errors"].ComparisonError, match="neither a results folder nor a git revision"):
        mods["compare"].main(["no-such-run", "main"])


def test_compare_page_shows_the_interval_against_the_reference(pkg_name, repo):
    with ui.App(pkg_name, repo) as app:
        cookie = {"Cookie": f"forge_ui_{app.port}={app.token}"}

        def page():
            status, _, body = ui.request(app.port, "GET", "/compare?runs=main,shifted,older", cookie)
            text = body.decode()
            return text if status == 200 and 'table class="significance"' in text else None

        html = ui.wait_for(page, 180, "the significance table on the Compare page", every=1.0)
    assert "Significance against main" in html
    section = html[html.index('<table class="significance" data-run="shifted"'):]
    section = section[:section.index("</table>")]
    rows = section.split('<tr data-channel="')[1:]
    assert len(rows) == 4 and all('data-significant="yes"' in r and ">significant<" in r for r in rows)
    interval = [r for r in rows if r.startswith('geopotential_500" data-lead="24"')][0]
    low, high = (float(v) for v in interval.split('class="interval">[')[1].split("]")[0].split(","))
    assert 0 < low < high
    assert 'class="muted no-scores" data-run="older">no per-initial-time scores<' in html
