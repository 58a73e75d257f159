"""The jpar sidebar in a real JupyterLab in headless Chromium: a cluster started with
``jpar start --head`` shows up within ~2 s, its CPU bars and task counts move under load, the
start/stop and +1 engine buttons work, the init button writes into the active notebook, and the dark theme
renders. Screenshots go to test-artifacts/ (gitignored).

Needs /usr/bin/chromium (Debian's; ``make test`` installs it) and Python playwright; skipped without
them. Clusters live in a private JPAR_RUNTIME_DIR and every head started here is stopped by its pid
if the stop button did not stop it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
import uuid

import psutil
import pytest

from .jupyter_servers import CHROMIUM, jupyter_app, lab_env, launch_chromium, process_gone

ROOT = pathlib.Path(__file__).parent.parent
ARTIFACTS = ROOT / "test-artifacts"

playwright_sync = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium (make browser)")]

LOAD = """
import sys, time, jpar
jpar.init(address=sys.argv[1])

@jpar.remote
def burn(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return 1

for _ in range(3):
    jpar.get([burn.remote(0.2) for _ in range(4)])        # many short tasks: tasks/s moves
jpar.get([burn.remote(3.0) for _ in range(2)])            # then both engines busy: CPU bars move
jpar.shutdown()
"""


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 with a token and a free port; jpar clusters in tmp_path/jpar."""
    env, settings = lab_env(tmp_path, JPAR_RUNTIME_DIR=str(tmp_path / "jpar"))
    with jupyter_app("jupyterlab", tmp_path, env, ("--LabApp.expose_app_in_browser=True",
                                                   f"--LabServerApp.app_settings_dir={settings}")) as (url, token):
        yield from _with_heads(url, token, tmp_path, env)


def _with_heads(url, token, tmp_path, env):
    heads: list[int] = []
    try:
        yield url, token, tmp_path, env, heads
    finally:
        for pid in heads:   # heads the stop button did not stop (a failed test)
            try:
                psutil.Process(pid).terminate()
                psutil.Process(pid).wait(10)
            except psutil.Error:
                pass


def _card(address: str) -> str:
    return f".jp-jpar-cluster[data-address='{address}']"


def _bars(page, address: str, kind: str) -> list:
    return page.eval_on_selector_all(f"{_card(address)} .jp-jpar-bar[data-kind='{kind}']",
                                     "els => els.map(e => parseFloat(e.dataset.value))")


def _clusters(url: str, token: str) -> list:
    return json.loads(urllib.request.urlopen(f"{url}/jpar/clusters?token={token}", timeout=10).read())["clusters"]


def test_sidebar_in_jupyterlab(lab):
    url, token, root, env, heads = lab
    ARTIFACTS.mkdir(exist_ok=True)
    (root / "empty.ipynb").write_text(json.dumps({
        "cells": [], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}))
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/workspaces/s{uuid.uuid4().hex[:8]}/tree/empty.ipynb?reset&token={token}")
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook", timeout=45_000)
            page.locator(".jp-SideBar [data-id='jpar-clusters']").click()     # the left-bar tab (LabIcon)
            page.wait_for_selector(".jp-jpar-conn[data-state='live']", timeout=10_000)
            assert page.locator(".jp-jpar-cluster").count() == 0

            # 1. a cluster started from a terminal appears within ~2 s
            out = subprocess.run([sys.executable, "-m", "jpar.cli", "start", "--head", "-n", "2"], env=env,
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            t_started = time.monotonic()
            heads.append(int(out.stdout.split("pid ")[1].split(")")[0]))
            address = out.stdout.split(" at ")[1].split()[0]
            page.wait_for_selector(_card(address), timeout=10_000)
            appeared = time.monotonic() - t_started
            page.wait_for_function(
                f"() => document.querySelectorAll(\"{_card(address)} .jp-jpar-engine\").length === 2",
                timeout=10_000)
            engines_shown = time.monotonic() - t_started
            assert appeared < 2.5, appeared
            (ARTIFACTS / "sidebar-latency.txt").write_text(
                f"jpar start --head returned -> card shown: {appeared * 1000:.0f} ms; "
                f"both engines shown: {engines_shown * 1000:.0f} ms\n")

            # 2. under load: CPU bars, task counts and tasks/s move; the load's driver is listed
            load = subprocess.Popen([sys.executable, "-c", LOAD, address], env=env)
            try:
                cpu_seen, done_seen, rates, drivers = set(), set(), set(), 0
                shot = False
                deadline = time.monotonic() + 25
                while load.poll() is None and time.monotonic() < deadline:
                    cpu_seen.update(round(v) for v in _bars(page, address, "cpu"))
                    done_seen.add(page.get_attribute(f"{_card(address)} .jp-jpar-chip[data-state='done']",
                                                     "data-count"))
                    rates.add(float(page.get_attribute(f"{_card(address)} .jp-jpar-rate", "data-rate")))
                    drivers = max(drivers, page.locator(f"{_card(address)} .jp-jpar-driver").count())
                    if not shot and max(cpu_seen, default=0) >= 50:
                        page.locator(".jp-jpar-panel").screenshot(path=str(ARTIFACTS / "sidebar-load.png"))
                        shot = True
                    page.wait_for_timeout(150)
                assert load.wait(timeout=30) == 0
            finally:
                if load.poll() is None:
                    load.kill()
                    load.wait()
            def counts() -> dict:
                return page.eval_on_selector_all(f"{_card(address)} .jp-jpar-chip",
                                                 "els => Object.fromEntries(els.map(e => [e.dataset.state,"
                                                 " parseInt(e.dataset.count)]))")

            def settled(c: dict) -> bool:   # all 14 tasks finished (the head may count a re-dispatch as cancelled)
                return (sum(c.get(k, 0) for k in ("waiting", "queued", "assigned", "running")) == 0
                        and c.get("done", 0) >= 12 and sum(c.get(k, 0) for k in ("done", "failed", "cancelled")) >= 14)

            deadline = time.monotonic() + 15
            while not settled(counts()) and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            assert settled(counts()), page.inner_text(_card(address))
            assert max(cpu_seen) - min(cpu_seen) >= 30, cpu_seen
            assert len(done_seen) >= 3, done_seen
            assert max(rates) > 0, rates
            assert drivers >= 1
            assert all(v > 0 for v in _bars(page, address, "mem"))
            if not shot:
                page.locator(".jp-jpar-panel").screenshot(path=str(ARTIFACTS / "sidebar-load.png"))

            # 3. the init button writes jpar.init(address=...) into the active notebook
            page.locator(f"{_card(address)} [data-action='insert']").click()
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell'))"
                f".some(c => c.textContent.includes('jpar.init(address=\"{address}\")'))", timeout=5_000)

            # 3b. the dashboard button inserts and runs a cell: the widget renders, the kernel shows as a driver
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return k && k.status === 'idle'; }", timeout=30_000)
            page.locator(f"{_card(address)} [data-action='dashboard']").click()
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jpar-dash", timeout=30_000)
            page.wait_for_function(
                f"() => document.querySelectorAll(\"{_card(address)} .jp-jpar-driver\").length >= 1", timeout=10_000)

            # the kernel detaches (shut down while its cluster runs, so it cleans up its own segments)
            for k in json.loads(urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=5).read()):
                req = urllib.request.Request(f"{url}/api/kernels/{k['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(req, timeout=15).read()
            page.wait_for_function(
                f"() => document.querySelectorAll(\"{_card(address)} .jp-jpar-driver\").length === 0", timeout=10_000)
            page.wait_for_selector(".jp-jpar-notebook[data-attached='false']", timeout=15_000)   # not stale

            # 4. the +1 engine button: a third engine joins
            page.locator(f"{_card(address)} [data-action='add-engine']").click()
            page.wait_for_function(
                f"() => document.querySelectorAll(\"{_card(address)} .jp-jpar-engine\").length === 3",
                timeout=10_000)

            # 5. the start button: a second cluster with 1 engine
            page.fill(".jp-jpar-n", "1")
            page.locator("[data-action='start']").click()
            page.wait_for_function("() => document.querySelectorAll('.jp-jpar-cluster').length === 2", timeout=20_000)
            other = next(c for c in _clusters(url, token) if c["address"] != address)
            heads.append(other["pid"])
            page.wait_for_function(
                f"() => document.querySelectorAll(\"{_card(other['address'])} .jp-jpar-engine\").length === 1",
                timeout=10_000)

            # 6. dark theme
            page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                          " {theme: 'JupyterLab Dark'})")
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=15_000)
            page.wait_for_timeout(500)
            bg = page.evaluate("() => getComputedStyle(document.querySelector('.jp-jpar-panel')).backgroundColor")
            fg = page.evaluate("() => getComputedStyle(document.querySelector('.jp-jpar-panel')).color")
            lum = [sum(int(x) for x in c[c.index("(") + 1:c.index(")")].split(",")[:3]) for c in (bg, fg)]
            assert lum[0] < 200 and lum[1] > 400, (bg, fg)        # dark background, light text
            page.locator(".jp-jpar-panel").screenshot(path=str(ARTIFACTS / "sidebar-dark.png"))
            page.screenshot(path=str(ARTIFACTS / "sidebar-page-dark.png"))

            ids = [page.get_attribute(_card(a), "data-cluster-id") for a in (address, other["address"])]
            (ARTIFACTS / "sidebar-clusters.txt").write_text(" ".join(ids) + "\n")

            # 7. the stop buttons stop both clusters and their cards go
            for a in (other["address"], address):
                page.locator(f"{_card(a)} [data-action='stop']").click()
                page.wait_for_selector(_card(a), state="detached", timeout=15_000)
            for pid in heads:
                assert process_gone(pid), f"head {pid} still running after the stop button"
            assert page.locator(".jp-jpar-cluster").count() == 0
        finally:
            browser.close()


def _notebook(path: pathlib.Path, cells: dict) -> None:
    """A notebook file whose code cells have the given ids (JupyterLab keeps them as the cells' ids)."""
    path.write_text(json.dumps({
        "cells": [{"cell_type": "code", "id": cid, "metadata": {}, "execution_count": None, "outputs": [],
                   "source": src} for cid, src in cells.items()],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}))


def _run_cell(page, index: int) -> None:
    page.evaluate(f"() => {{ const nb = window.jupyterapp.shell.currentWidget.content; nb.activeCellIndex = {index};"
                  " void window.jupyterapp.commands.execute('notebook:run-cell'); }")   # not awaited: it may run long


def _kernel_idle(page, timeout: int = 45_000) -> None:
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return k && k.status === 'idle'; }", timeout=timeout)


def _prompt(page, index: int) -> str:
    """The execution prompt of a cell: '[*]:' while it runs (the kernel's status is no guide with
    subshells: their idle messages make a busy kernel look idle)."""
    return page.evaluate(f"() => window.jupyterapp.shell.currentWidget.content.widgets[{index}]"
                         ".node.querySelector('.jp-InputPrompt').textContent.trim()")


def _wait_cell_done(page, index: int, timeout: int = 20_000) -> None:
    page.wait_for_function(f"() => {{ const t = window.jupyterapp.shell.currentWidget.content.widgets[{index}]"
                           ".node.querySelector('.jp-InputPrompt').textContent; return /\\[\\d+\\]/.test(t); }",
                           timeout=timeout)


BUSY_CELL = ("@jpar.remote\ndef slow(i):\n    time.sleep(60)\n    return i\n\n"
             "refs = [slow.remote(i) for i in range(6)]\njpar.get(refs)")


def test_sidebar_this_notebook_while_a_cell_is_busy(lab):
    """The notebook's own section comes from its kernel over a comm on a subshell: while a cell
    waits on 6 tasks the sidebar lists them under that cell within a couple of seconds and its
    cancel button ends the cell; the cluster card names the notebook's kernel as a driver with its
    task count, cancels all of a driver's tasks, and removes an engine; all of it survives a kernel
    restart."""
    url, token, root, env, heads = lab
    ARTIFACTS.mkdir(exist_ok=True)
    _notebook(root / "busy.ipynb", {"cell-init": "%load_ext jpar\nimport jpar, time\nctx = jpar.init(num_engines=2)",
                                    "cell-busy": BUSY_CELL})
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/workspaces/s{uuid.uuid4().hex[:8]}/tree/busy.ipynb?reset&token={token}")
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook", timeout=45_000)
            page.locator(".jp-SideBar [data-id='jpar-clusters']").click()
            page.wait_for_selector(".jp-jpar-conn[data-state='live']", timeout=10_000)
            _kernel_idle(page)
            page.wait_for_selector(".jp-jpar-notebook[data-attached='false']", timeout=10_000)

            _run_cell(page, 0)     # %load_ext jpar; jpar.init(): the sidebar finds jpar in the kernel
            _wait_cell_done(page, 0, 45_000)
            page.wait_for_selector(".jp-jpar-notebook[data-attached='true']", timeout=30_000)
            address = page.evaluate("() => document.querySelector('.jp-jpar-cluster').dataset.address")
            card = _card(address)

            # 1. a busy cell: its pending tasks are listed under it, answered on a subshell
            _run_cell(page, 1)
            t0 = time.monotonic()
            page.wait_for_selector(".jp-jpar-cell[data-cell-id='cell-busy'][data-pending='6']", timeout=10_000)
            listed = time.monotonic() - t0
            assert page.get_attribute(".jp-jpar-notebook", "data-subshell") == "true"
            assert "slow ×6" in page.inner_text(".jp-jpar-cell[data-cell-id='cell-busy']")
            assert "cell 2:" in page.inner_text(".jp-jpar-cell[data-cell-id='cell-busy']")
            assert "*" in _prompt(page, 1)          # the cell still waits on its tasks
            # the cluster card: this kernel is a driver with 6 tasks, named by its notebook
            page.wait_for_selector(f"{card} .jp-jpar-driver.jp-mod-current[data-tasks='6']", timeout=10_000)
            assert "busy.ipynb" in page.inner_text(f"{card} .jp-jpar-driver.jp-mod-current")
            page.locator(".jp-jpar-panel").screenshot(path=str(ARTIFACTS / "sidebar-notebook-busy.png"))
            (ARTIFACTS / "sidebar-notebook-latency.txt").write_text(
                f"busy cell started -> its 6 pending tasks listed in the sidebar: {listed * 1000:.0f} ms\n")

            # 2. the cell's cancel button (through the kernel comm) ends the cell
            page.locator(".jp-jpar-cell[data-cell-id='cell-busy'] [data-action='cancel-cell']").click()
            _wait_cell_done(page, 1)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell'))"
                ".some(c => c.textContent.includes('TaskCancelledError'))", timeout=10_000)
            page.wait_for_selector(".jp-jpar-notebook[data-pending='0']", timeout=10_000)

            # 3. the driver's cancel button in the cluster card (through the server and the head)
            _run_cell(page, 1)
            page.wait_for_selector(f"{card} .jp-jpar-driver.jp-mod-current[data-tasks='6']", timeout=15_000)
            page.locator(f"{card} .jp-jpar-driver.jp-mod-current [data-action='cancel-driver']").click()
            _wait_cell_done(page, 1)
            page.wait_for_selector(f"{card} .jp-jpar-driver.jp-mod-current[data-tasks='0']", timeout=10_000)
            assert "cancelled 6 task" in page.inner_text(".jp-jpar-message")

            # 4. -1 engine: the cluster goes from 2 engines to 1, and the engine process ends
            pids = page.eval_on_selector_all(f"{card} .jp-jpar-engine", "els => els.map(e => e.dataset.engineId)")
            assert len(pids) == 2
            page.locator(f"{card} [data-action='remove-engine']").click()
            page.wait_for_function(
                f"() => document.querySelectorAll(\"{card} .jp-jpar-engine\").length === 1", timeout=15_000)
            page.locator(".jp-jpar-panel").screenshot(path=str(ARTIFACTS / "sidebar-notebook-after.png"))

            # 5. a kernel restart: the kernel's cluster goes, the section says so, and comes back after init
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
            page.wait_for_selector(card, state="detached", timeout=20_000)
            page.wait_for_selector(".jp-jpar-notebook[data-attached='false']", timeout=20_000)
            _kernel_idle(page)
            _run_cell(page, 0)
            page.wait_for_selector(".jp-jpar-notebook[data-attached='true']", timeout=30_000)
            page.wait_for_selector(".jp-jpar-driver.jp-mod-current", timeout=10_000)
        finally:
            browser.close()
