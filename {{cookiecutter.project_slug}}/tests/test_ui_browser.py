"""The web app in a real headless Chromium (Debian's chromium + chromedriver, through Selenium).

1. Configure and Watch on a copy of this project: the token opens the app; train.lr and model.width are changed in
   the form; a bad width shows exactly the CLI's message and Save leaves params.yaml byte-identical; a good one
   saves every comment; data.source becomes a list and data.rename a mapping; the loss curve grows while the
   training log grows.
2. (slow) A tiny real project: two experiments queued from the form and run by `dvc queue start`; Compare lists
   both with the params that differ and their headline RMSE, and overlays their curves.
Screenshots go to $FORGE_ARTIFACTS (default ./artifacts). Without Chromium the tests fail with the install line.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import ui_support as ui  # noqa: E402

# A pipeline that runs in seconds: 20 days of an 8 x 16 synthetic grid, a 6-step training, leads to 12 h.
TINY = {"data.end": "2000-01-20T18:00", "data.block_size": 40,
        "data.splits.train": ["2000-01-01", "2000-01-12T18:00"], "data.splits.val": ["2000-01-13", "2000-01-15T18:00"],
        "data.splits.test": ["2000-01-16", "2000-01-20T18:00"], "data.synthetic.nlat": 8, "data.synthetic.nlon": 16,
        "model.width": 8, "model.depth": 1, "train.max_steps": 6, "train.batch_size": 4, "train.log_every": 1,
        "train.checkpoint_every": 3, "train.warmup_steps": 1, "evaluate.max_lead_hours": 12,
        "evaluate.key_leads_hours": [6, 12], "evaluate.map_leads_hours": [12], "evaluate.climatology_window_days": 10}


@pytest.fixture()
def browser():
    driver = ui.chrome()
    yield driver
    driver.quit()


def field(driver, key: str):
    return driver.find_element("id", "f-" + key.replace(".", "-"))


def type_into(driver, key: str, text: str) -> None:
    box = field(driver, key)
    box.clear()
    box.send_keys(text)


def message(driver, key: str) -> str:
    return driver.find_element("id", "f-" + key.replace(".", "-") + "-message").text.strip()


def cli_message(pkg_name: str, project: Path, key_line: str, bad_line: str) -> str:
    """What `check-params` prints for the same bad value written into params.yaml (in a scratch copy)."""
    scratch = project.parent / "cli-check"
    scratch.mkdir(exist_ok=True)
    (scratch / "params.yaml").write_text((project / "params.yaml").read_text().replace(key_line, bad_line))
    done = subprocess.run([sys.executable, "-m", f"{pkg_name}.cli", "check-params"], cwd=scratch,
                          env=ui.env(project), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.startswith("error: "), done.stderr
    return done.stderr.strip()[len("error: "):]


def point_count(driver, chart_id: str) -> int:
    return driver.execute_script(
        f"const c = document.getElementById('{chart_id}'); return c && c.data ? c.data[0].x.length : 0;")


def test_configure_and_watch(pkg_name, project_root, tmp_path, browser):
    project = ui.copy_project(project_root, tmp_path / "project")
    original = (project / "params.yaml").read_bytes()
    with ui.App(pkg_name, project) as app:
        browser.get(app.url)
        assert browser.current_url == app.base + "/"  # the token became a cookie and left the address
        ui.wait_for(lambda: browser.find_elements("id", "f-train-lr"), 20, "the Configure form")
        type_into(browser, "train.lr", "0.001")
        type_into(browser, "model.width", "2")
        expected = cli_message(pkg_name, project, "  width: 32 ", "  width: 2  ")
        assert ui.wait_for(lambda: message(browser, "model.width"), 20, "the width message") == expected
        assert message(browser, "train.lr") == ""
        browser.find_element("id", "save").click()
        ui.wait_for(lambda: "Not saved" in browser.find_element("id", "toast").text, 20, "the refusal")
        assert (project / "params.yaml").read_bytes() == original  # byte-identical
        browser.save_screenshot(str(ui.artifacts() / "ui-configure-invalid.png"))

        type_into(browser, "model.width", "48")
        ui.wait_for(lambda: message(browser, "model.width") == "", 20, "the message to clear")
        browser.find_element("id", "save").click()
        ui.wait_for(lambda: (project / "params.yaml").read_bytes() != original, 20, "params.yaml to be saved")
        saved = (project / "params.yaml").read_text()
        values = yaml.safe_load(saved)
        assert (values["train"]["lr"], values["model"]["width"]) == (0.001, 48)
        before = original.decode().splitlines()
        changed = [d for d in difflib.ndiff(before, saved.splitlines()) if d[:1] in "+-"]
        assert [d[2:].split("#")[0].strip() for d in changed] == ["width: 32", "width: 48", "lr: 2.0e-3", "lr: 0.001"]
        comments = [line[line.index("#"):] for line in before if "#" in line]
        assert comments == [line[line.index("#"):] for line in saved.splitlines() if "#" in line]  # every comment
        browser.save_screenshot(str(ui.artifacts() / "ui-configure.png"))

        # a union and a mapping: data.source becomes a list (which needs data.variables), data.rename is filled
        type_into(browser, "data.source", "[era5/t2m/*.nc, era5/z/*.nc]")
        type_into(browser, "data.rename", "{tmp2m: 2m_temperature}")
        ui.wait_for(lambda: "needs data.variables" in message(browser, "data.variables"), 20, "the cross-key message")
        type_into(browser, "data.variables", "[2m_temperature, geopotential]")
        ui.wait_for(lambda: message(browser, "data.variables") == "", 20, "that message to clear")
        browser.find_element("id", "save").click()
        data = ui.wait_for(lambda: yaml.safe_load((project / "params.yaml").read_text())["data"]["rename"] and
                           yaml.safe_load((project / "params.yaml").read_text())["data"], 20, "the mapping to be saved")
        assert (data["source"], data["rename"], data["variables"]) == (
            ["era5/t2m/*.nc", "era5/z/*.nc"], {"tmp2m": "2m_temperature"}, ["2m_temperature", "geopotential"])
        saved = (project / "params.yaml").read_text().splitlines()
        assert comments == [line[line.index("#"):] for line in saved if "#" in line]  # every comment, still

        log = project / "results" / "train_log.csv"
        log.parent.mkdir()
        rows = ["step,loss,lr,grad_norm,samples_per_s,data_wait"]
        log.write_text("\n".join(rows + [f"{s},{1 / s:.4f},0.001,0.1,120.0,0.05" for s in range(1, 6)]) + "\n")
        browser.get(app.base + "/watch")
        ui.wait_for(lambda: point_count(browser, "loss-chart") == 5, 30, "5 points on the loss curve")
        with log.open("a") as f:  # training goes on while the page is open
            f.write("\n".join(f"{s},{1 / s:.4f},0.001,0.1,120.0,0.05" for s in range(6, 13)) + "\n")
        ui.wait_for(lambda: point_count(browser, "loss-chart") == 12, 30, "the curve to grow to 12 points")
        assert browser.find_element("id", "w-step").text == "12 / 1200"
        assert browser.find_element("id", "w-wait").text == "5 %"
        browser.save_screenshot(str(ui.artifacts() / "ui-watch.png"))
        assert ui.console_errors(browser) == []


@pytest.fixture(scope="module")
def tiny_project(pkg_name, project_root, tmp_path_factory):
    """This project with tiny params, its pipeline run once (`dvc repro`) and committed: the baseline."""
    import importlib

    project = ui.copy_project(project_root, tmp_path_factory.mktemp("ui-tiny") / project_root.name)
    importlib.import_module(f"{pkg_name}.ui.params_file").save(project / "params.yaml", TINY)
    ui.sh(project, "git", "init", "-q", "-b", "main")
    ui.sh(project, sys.executable, "-m", "dvc", "init", "-q")
    ui.sh(project, "git", "add", "-A")
    ui.sh(project, "git", "commit", "-q", "-m", "tiny project")  # the code first: outputs are stamped with it
    ui.sh(project, sys.executable, "-m", "dvc", "repro", timeout=900)
    ui.sh(project, "git", "add", "-A")
    ui.sh(project, "git", "commit", "-q", "-m", "tiny baseline")
    return project


def queue_from_form(browser, lr: str, width: str) -> str:
    type_into(browser, "train.lr", lr)
    type_into(browser, "model.width", width)
    ui.wait_for(lambda: "model.width" in browser.find_element("id", "changed").text, 20, "the change to register")
    browser.execute_script("document.getElementById('toast').textContent = '';")  # no earlier "Queued ..."
    browser.find_element("id", "queue-one").click()
    toast = ui.wait_for(lambda: re.search(r"Queued (\S+)", browser.find_element("id", "toast").text), 120,
                        "the experiment to be queued")
    return toast[1]


@pytest.mark.slow
def test_queue_two_experiments_run_them_and_compare(pkg_name, tiny_project, browser):
    project = tiny_project
    params_before = (project / "params.yaml").read_bytes()
    with ui.App(pkg_name, project) as app:
        browser.get(app.url)
        ui.wait_for(lambda: browser.find_elements("id", "f-train-lr"), 20, "the Configure form")
        names = [queue_from_form(browser, "0.001", "12"), queue_from_form(browser, "0.003", "16")]
        assert len(set(names)) == 2, names
        assert (project / "params.yaml").read_bytes() == params_before  # queueing does not touch the file

        browser.get(app.base + "/launch")
        ui.wait_for(lambda: all(browser.find_elements("css selector", f'tr[data-exp="{n}"]') for n in names), 60,
                    "both experiments in the queue table")
        browser.find_element("id", "queue-start").click()

        def states() -> dict[str, str]:  # read in one go: the table is replaced every 2 s
            return browser.execute_script("return Object.fromEntries([...document.querySelectorAll("
                                          "'#queue-table tr[data-exp]')].map(r => [r.dataset.exp, r.dataset.state]));")

        try:
            ui.wait_for(lambda: all(states().get(n) in ("success", "failed") for n in names), 600,
                        "both experiments to finish", lambda: app.proc.poll() is None, every=2)
        except pytest.fail.Exception as exc:  # what the queue says, for whoever reads the failure
            queue = subprocess.run([sys.executable, "-m", "dvc", "queue", "status"], cwd=project, env=ui.env(project),
                                   capture_output=True, text=True, timeout=120)
            pytest.fail(f"{exc}: {states()}\n{queue.stdout}{queue.stderr}\napp log:\n{app.output()[-3000:]}")
        assert all(states()[n] == "success" for n in names), states()
        browser.save_screenshot(str(ui.artifacts() / "ui-launch.png"))

        browser.get(app.base + "/compare")
        ui.wait_for(lambda: all(browser.find_elements("css selector", f'tr[data-run="{n}"]') for n in names), 60,
                    "both experiments on the Compare page", lambda: app.proc.poll() is None)
        headers = [th.text for th in browser.find_elements("css selector", "#compare-table th.param")]
        assert headers == ["model.width", "train.lr"]  # only what differs
        def cells(name: str) -> dict[str, str]:  # textContent, in one go: a cell scrolled out of view has no .text
            return browser.execute_script(
                "const r = document.querySelector(`tr[data-run='${arguments[0]}']`); return r && Object.fromEntries("
                "[...r.querySelectorAll('td[data-key], td.score')].map(c => [c.dataset.key || c.dataset.channel,"
                " c.textContent.trim()]));", name)

        for name, lr, width in ((names[0], "0.001", "12"), (names[1], "0.003", "16")):
            row = ui.wait_for(lambda n=name, w=width: (cells(n) or {}).get("model.width") == w and cells(n), 30,
                              f"{name}'s params on the Compare page")
            assert (row["train.lr"], row["model.width"]) == (lr, width), row
            assert float(row["geopotential_500"]) > 0, row
        traces = ui.wait_for(lambda: browser.execute_script(
            "const c = document.getElementById('chart-rmse-0'); return c && c.data ? c.data.map(t => t.name) : null;"),
            30, "the RMSE chart")
        assert set(names) <= set(traces), traces
        browser.save_screenshot(str(ui.artifacts() / "ui-compare.png"))
        report = ui.request(app.port, "GET", f"/report/{names[0]}", {"Cookie": f"forge_ui_{app.port}={app.token}"})
        assert report[0] == 200 and b"<html" in report[2][:500].lower()
        assert ui.console_errors(browser) == []
        keep_an_experiment(browser, project, names[0])
        pipeline_and_provenance(browser, app, project)


def click_and_answer(browser, selector: str, answer: str | None = None) -> None:
    """Click a button that asks (confirm / prompt) and answer it."""
    browser.find_element("css selector", selector).click()
    dialog = ui.wait_for(lambda: _dialog(browser), 10, "the dialog")
    if answer is not None:
        dialog.send_keys(answer)
    dialog.accept()


def _dialog(browser):
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return browser.switch_to.alert
    except NoAlertPresentException:
        return None


def keep_an_experiment(browser, project: Path, name: str) -> None:
    """`branch` then `apply + commit` from the Compare page; git shows both."""
    click_and_answer(browser, f'button[data-action="branch"][data-name="{name}"]', "lr-study")
    ui.wait_for(lambda: "lr-study" in ui.sh(project, "git", "branch", "--list", "lr-study"), 60, "the branch")
    click_and_answer(browser, f'button[data-action="apply"][data-name="{name}"]')
    ui.wait_for(lambda: f"Apply experiment {name}" in ui.sh(project, "git", "log", "-1", "--format=%s"), 120,
                "the apply commit")
    applied = yaml.safe_load((project / "params.yaml").read_text())
    assert (applied["train"]["lr"], applied["model"]["width"]) == (0.001, 12)
    assert ui.sh(project, "git", "status", "--porcelain", "--untracked-files=no") == ""  # all of it committed


def pipeline_and_provenance(browser, app, project: Path) -> None:
    browser.get(app.base + "/pipeline")
    # the pipeline's stages and the fingerprint stage (workflow/dvc.yaml)
    stage_count = sum(len(yaml.safe_load((project / name).read_text())["stages"])
                      for name in ("dvc.yaml", "workflow/dvc.yaml"))
    # read in one go: the table is replaced while it is read (an element read one by one goes stale)
    badges = "return [...document.querySelectorAll('table.stages .badge')].map(b => b.textContent.trim());"
    ui.wait_for(lambda: browser.execute_script(badges) == ["up to date"] * stage_count, 120,
                "every stage up to date after the apply", every=1)
    browser.get(app.base + "/provenance")
    head = ui.sh(project, "git", "rev-parse", "HEAD").strip()
    assert browser.find_element("id", "commit").text == head
    try:
        verdict = ui.wait_for(lambda: browser.find_elements("id", "verdict"), 180, "the verify verdict", every=1)
    except pytest.fail.Exception:
        pytest.fail("no verify verdict within 180 s; the page says:\n" + browser.find_element("tag name", "main").text)
    assert verdict[0].text.startswith("PASS: all "), verdict[0].text  # the applied experiment reproduces
    browser.save_screenshot(str(ui.artifacts() / "ui-provenance.png"))
