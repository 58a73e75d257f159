"""The dashboard rendered in JupyterLab in headless Chromium: a real notebook submits tasks and an
actor; the DOM shows DAG nodes that change state and CPU bars that move. Screenshots go to
test-artifacts/ (gitignored).

Needs /usr/bin/chromium (Debian's; ``make test`` installs it) and Python playwright; skipped
without them. Never ``playwright install``: it downloads a browser from the internet.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time
import uuid

import pytest

from .jupyter_servers import CHROMIUM, jupyter_app, lab_env, launch_chromium

ROOT = pathlib.Path(__file__).parent.parent
ARTIFACTS = ROOT / "test-artifacts"

playwright_sync = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
pytest.importorskip("anywidget")
pytestmark = [pytest.mark.timeout(150),
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium (make browser)")]

CELLS = [
    # 0: a cluster and the dashboard
    "import time, jpar\n"
    "jpar.init(num_engines=2)\n"
    "board = jpar.dashboard()\n"
    "board",
    # 1: a DAG of CPU-bound tasks and an actor, submitted without blocking the kernel
    "@jpar.remote\n"
    "def burn(seconds, *deps):\n"
    "    end = time.perf_counter() + seconds\n"
    "    n = 0\n"
    "    while time.perf_counter() < end:\n"
    "        n += 1\n"
    "    return n\n"
    "\n"
    "@jpar.remote\n"
    "class Counter:\n"
    "    def __init__(self):\n"
    "        self.n = 0\n"
    "    def incr(self, k=1):\n"
    "        time.sleep(0.3)\n"
    "        self.n += k\n"
    "        return self.n\n"
    "\n"
    "a = burn.remote(1.5)\n"
    "b = burn.remote(1.5)\n"
    "c = burn.remote(0.8, a, b)\n"
    "d = burn.remote(0.5, c)\n"
    "counter = Counter.remote()\n"
    "calls = [counter.incr.remote() for _ in range(3)]\n"
    "'submitted'",
    # 2: wait for everything, then stop
    "print(sum(jpar.get([a, b, c, d]) ) > 0, jpar.get(calls))",
    "board.close()\njpar.shutdown()\n'stopped'",
]


def _notebook(path: pathlib.Path) -> None:
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
                     "source": src} for i, src in enumerate(CELLS)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 with a token and a free port, serving tmp_path; stopped by its pid."""
    yield from _server("jupyterlab", "LabApp", tmp_path)


@pytest.fixture()
def notebook7(tmp_path):
    """Jupyter Notebook 7 (the same front-end components as JupyterLab, another application)."""
    pytest.importorskip("notebook")
    yield from _server("notebook", "JupyterNotebookApp", tmp_path)


def _server(app: str, app_class: str, tmp_path):
    env, settings = lab_env(tmp_path)
    with jupyter_app(app, tmp_path, env, (f"--{app_class}.expose_app_in_browser=True",
                                          f"--LabServerApp.app_settings_dir={settings}",
                                          "--ServerApp.disable_check_xsrf=True")) as (url, token):
        yield url, token, tmp_path


def _run_cell(page, index: int, timeout: float = 30.0) -> None:
    """Select cell ``index`` and run it (Shift+Enter), retrying once if the kernel ignored it."""
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
    cell = cells.nth(index)
    prompt = cell.locator(".jp-InputArea-prompt")
    for attempt in range(2):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Escape")        # command mode: Shift+Enter then runs the selected cell
        page.keyboard.press("Shift+Enter")
        deadline = time.monotonic() + (8 if attempt == 0 else timeout)
        while time.monotonic() < deadline:
            text = prompt.inner_text().strip()
            if text not in ("[ ]:", "[ ]", ""):
                return
            page.wait_for_timeout(100)
    raise AssertionError(f"cell {index} did not start: prompt {prompt.inner_text()!r}")


def _wait_done(page, index: int, timeout: float = 40.0) -> None:
    prompt = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index).locator(
        ".jp-InputArea-prompt")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = prompt.inner_text().strip()
        if text and "*" not in text and text not in ("[ ]:", "[ ]"):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"cell {index} did not finish: prompt {prompt.inner_text()!r}")


def _states(page) -> dict:
    return page.eval_on_selector_all(
        ".jpar-dash svg.jpar-dag g.jpar-node",
        "els => Object.fromEntries(els.map(e => [e.getAttribute('data-id'), e.getAttribute('data-state')]))")


def _cpu(page) -> list:
    return page.eval_on_selector_all(".jpar-dash .jpar-cpu-fill",
                                     "els => els.map(e => [parseFloat(e.getAttribute('data-cpu')), e.style.width])")


def test_dashboard_in_jupyterlab(lab):
    url, token, root = lab
    _notebook(root / "dash.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/workspaces/t{uuid.uuid4().hex[:8]}/tree/dash.ipynb?reset&token={token}")
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=45_000)
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return k && k.status === 'idle'; }", timeout=45_000)
            _run_cell(page, 0)
            _wait_done(page, 0)
            page.wait_for_selector(".jpar-dash .jpar-cpu-fill", timeout=20_000)
            cpu_before = _cpu(page)
            _run_cell(page, 1)
            _wait_done(page, 1)

            # nodes appear and change state while the tasks run
            seen: dict[str, set] = {}
            cpu_seen = set()
            shot_running = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for nid, st in _states(page).items():
                    seen.setdefault(nid, set()).add(st)
                for val, width in _cpu(page):
                    cpu_seen.add((round(val), width))
                if not shot_running and any("running" in s for s in seen.values()):
                    page.wait_for_timeout(600)
                    page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard-running.png"))
                    shot_running = True
                states_now = _states(page)
                if len(states_now) >= 7 and all(s == "done" for s in states_now.values()):
                    break
                page.wait_for_timeout(200)
            states_now = _states(page)
            assert len(states_now) >= 7, states_now          # 4 burn tasks + 3 actor calls
            assert all(s == "done" for s in states_now.values()), states_now
            assert sum(1 for s in seen.values() if len(s) >= 2) >= 4, seen   # observed changing state
            assert any("running" in s for s in seen.values()), seen
            kinds = page.eval_on_selector_all(".jpar-dash g.jpar-node text", "els => els.map(e => e.textContent)")
            assert "burn" in kinds and "Counter.incr" in kinds, kinds
            edges = page.eval_on_selector_all(".jpar-dash svg.jpar-dag line", "els => els.length")
            assert edges >= 3
            # CPU bars moved while the engines burned (how high depends on the load of this shared machine)
            values = [v for v, _ in cpu_seen]
            assert len(cpu_seen) >= 3 and max(values) - min(values) >= 10, (cpu_before, cpu_seen)
            actors = page.eval_on_selector_all(".jpar-dash .jpar-actor", "els => els.map(e => e.textContent)")
            assert any("Counter" in a for a in actors), actors
            latency = page.get_attribute(".jpar-dash", "data-latency-ms")
            assert latency is not None and int(latency) < 5000
            (ARTIFACTS / "latency.txt").write_text(
                f"last update: trait set in the kernel -> rendered in the browser: {latency} ms\n")
            # hover shows details
            page.locator(".jpar-dash g.jpar-node").first.hover()
            tip = page.locator(".jpar-dash .jpar-tip")
            assert "state: done" in tip.inner_text()
            page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard.png"))
            page.screenshot(path=str(ARTIFACTS / "dashboard-page.png"))
            _run_cell(page, 2)
            _wait_done(page, 2)
            _run_cell(page, 3)
            _wait_done(page, 3)
            out = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(3).locator(
                ".jp-OutputArea-output").first.inner_text()
            assert "stopped" in out, out
            assert page.locator(".jpar-dash").count() == 0      # the closed widget's view is gone
        finally:
            browser.close()
    if os.environ.get("JPAR_UPDATE_DOCS_IMG"):
        (ROOT / "docs" / "img").mkdir(exist_ok=True)
        shutil.copy(ARTIFACTS / "dashboard-running.png", ROOT / "docs" / "img" / "dashboard.png")


def test_dashboard_in_notebook7(notebook7):
    """Notebook 7 renders the same widget: nodes appear, change state and all finish."""
    url, token, root = notebook7
    _notebook(root / "dash.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/notebooks/dash.ipynb?token={token}")
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=45_000)
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return k && k.status === 'idle'; }", timeout=45_000)
            _run_cell(page, 0)
            _wait_done(page, 0)
            page.wait_for_selector(".jpar-dash .jpar-cpu-fill", timeout=20_000)
            _run_cell(page, 1)
            _wait_done(page, 1)
            seen: dict[str, set] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = _states(page)
                for nid, st in now.items():
                    seen.setdefault(nid, set()).add(st)
                if len(now) >= 7 and all(st == "done" for st in now.values()):
                    break
                page.wait_for_timeout(200)
            now = _states(page)
            assert len(now) >= 7 and all(st == "done" for st in now.values()), now
            assert sum(1 for v in seen.values() if len(v) >= 2) >= 2, seen     # observed changing state
            page.screenshot(path=str(ARTIFACTS / "dashboard-notebook7.png"))
            _run_cell(page, 2)
            _wait_done(page, 2)
            _run_cell(page, 3)
            _wait_done(page, 3)
        finally:
            browser.close()
