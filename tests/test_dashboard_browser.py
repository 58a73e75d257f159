"""The dashboard rendered in JupyterLab in headless Chromium: a real notebook submits tasks and an
actor; the DOM shows DAG nodes that change state and CPU bars that move. Screenshots go to
test-artifacts/ (gitignored).

Needs /usr/bin/chromium (Debian's; ``make browser`` installs it, ``make test`` runs that) and Python
playwright; without them the tests fail, saying so. Never ``playwright install``: it downloads a
browser from the internet.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import time
import uuid

import anywidget  # noqa: F401  (the test extra installs these: missing is an error, not a skip)
import jupyterlab  # noqa: F401
import notebook  # noqa: F401
import numpy  # noqa: F401
import pytest
from playwright import sync_api as playwright_sync

from .jupyter_servers import jupyter_app, lab_env, launch_chromium, require_chromium

ROOT = pathlib.Path(__file__).parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(autouse=True, scope="module")
def _chromium():
    require_chromium()


#: the task and the actor the dashboard's cells run (shared with the Dask and Ray dashboard test)
WORKLOAD_DEFS = (
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
)

CELLS = [
    # 0: a cluster and the dashboard
    "import time, jpar\n"
    "jpar.init(num_engines=2)\n"
    "board = jpar.dashboard()\n"
    "board",
    # 1: a DAG of CPU-bound tasks and an actor, submitted without blocking the kernel
    WORKLOAD_DEFS +
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


def _notebook(path: pathlib.Path, cells: list = CELLS) -> None:
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
                     "source": src} for i, src in enumerate(cells)],
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
    yield from _server("notebook", "JupyterNotebookApp", tmp_path)


def _server(app: str, app_class: str, tmp_path):
    env, settings = lab_env(tmp_path)
    with jupyter_app(app, tmp_path, env, (f"--{app_class}.expose_app_in_browser=True",
                                          f"--LabServerApp.app_settings_dir={settings}",
                                          "--ServerApp.disable_check_xsrf=True")) as (url, token):
        yield url, token, tmp_path


_PROMPT = ("document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')[{index}]"
           ".querySelector('.jp-InputArea-prompt').textContent.trim()")


def _prompt(page, index: int) -> str:
    return page.evaluate(f"() => {_PROMPT.format(index=index)}")


def _run_cell(page, index: int, timeout: float = 30.0) -> None:
    """Select cell ``index`` and run it (Shift+Enter), retrying once if the kernel ignored it."""
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)
    started = f"() => !['[ ]:', '[ ]', ''].includes({_PROMPT.format(index=index)})"
    for attempt in range(2):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Escape")        # command mode: Shift+Enter then runs the selected cell
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(started, timeout=(8 if attempt == 0 else timeout) * 1000)
            return
        except playwright_sync.TimeoutError:
            pass
    raise AssertionError(f"cell {index} did not start: prompt {_prompt(page, index)!r}")


def _wait_done(page, index: int, timeout: float = 40.0) -> None:
    done = (f"() => {{ const t = {_PROMPT.format(index=index)};"
            " return t !== '' && !t.includes('*') && t !== '[ ]:' && t !== '[ ]'; }")
    try:
        page.wait_for_function(done, timeout=timeout * 1000)
    except playwright_sync.TimeoutError:
        raise AssertionError(f"cell {index} did not finish: prompt {_prompt(page, index)!r}") from None


# Records, from the moment it is installed, every state each DAG node showed and every CPU value the
# bars showed (a MutationObserver: no change between two looks is missed): window.jparSeen.
RECORD_DAG = """() => {
  const seen = window.jparSeen = {states: {}, cpu: []};
  const look = () => {
    for (const g of document.querySelectorAll('.jpar-dash svg.jpar-dag g.jpar-node')) {
      const id = g.getAttribute('data-id'), st = g.getAttribute('data-state');
      const s = seen.states[id] = seen.states[id] || [];
      if (!s.includes(st)) s.push(st);
    }
    for (const e of document.querySelectorAll('.jpar-dash .jpar-cpu-fill')) {
      const v = [Math.round(parseFloat(e.getAttribute('data-cpu'))), e.style.width];
      if (!seen.cpu.some(x => x[0] === v[0] && x[1] === v[1])) seen.cpu.push(v);
    }
  };
  look();
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     attributeFilter: ['data-state', 'data-cpu', 'style']});
}"""

ALL_DONE = """() => {
  const nodes = Array.from(document.querySelectorAll('.jpar-dash svg.jpar-dag g.jpar-node'));
  return nodes.length >= 7 && nodes.every(g => g.getAttribute('data-state') === 'done');
}"""


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
            page.evaluate(RECORD_DAG)
            _run_cell(page, 1)
            _wait_done(page, 1)

            # nodes appear and change state while the tasks run
            try:
                page.wait_for_function("() => Object.values(window.jparSeen.states).some(s => s.includes('running'))",
                                       timeout=20_000)
                page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard-running.png"))
                page.wait_for_function(ALL_DONE, timeout=30_000)
            except playwright_sync.TimeoutError:
                pass    # the assertions below say what was seen
            seen = page.evaluate("() => window.jparSeen.states")
            cpu_seen = {tuple(v) for v in page.evaluate("() => window.jparSeen.cpu")}
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
            latency = page.get_attribute(".jpar-dash", "data-latency-ms")   # measured by the view itself
            assert latency is not None and int(latency) >= 0, latency
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
            page.evaluate(RECORD_DAG)
            _run_cell(page, 1)
            _wait_done(page, 1)
            try:
                page.wait_for_function(ALL_DONE, timeout=30_000)
            except playwright_sync.TimeoutError:
                pass    # the assertions below say what was seen
            seen = page.evaluate("() => window.jparSeen.states")
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


# The README's picture: a DAG that runs, engines that burn CPU, a store that holds numpy arrays;
# and a second dashboard that groups tasks by function (its boxes are what the dark theme showed white).
LOAD_CELLS = [
    "import time, jpar, numpy as np\n"
    "jpar.init(num_engines=2)\n"
    "board = jpar.dashboard()\n"
    "board",
    "grouped = jpar.dashboard(group_above=4)\n"
    "grouped",
    CELLS[1].replace("'submitted'", "")
    + "arrays = [jpar.put(np.full(1_500_000, float(i))) for i in range(3)]   # 12 MB each, in the store\n"
    "sums = [burn.remote(0.6, arr) for arr in arrays]\n"
    "'submitted'",
    "print(sum(jpar.get([a, b, c, d, *sums])) > 0, jpar.get(calls))",
    "board.close(); grouped.close()\njpar.shutdown()\n'stopped'",
]

LUMINANCE = """(css) => {
  const m = css.match(/rgba?\\(([^)]+)\\)/);
  if (!m) return null;
  const [r, g, b] = m[1].split(',').slice(0, 3).map(x => parseFloat(x) / 255)
    .map(c => c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4));
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}"""


def _contrast(a: float, b: float) -> float:
    """WCAG contrast ratio of two relative luminances (1 to 21; 4.5 is the floor for text)."""
    hi, lo = max(a, b), min(a, b)
    return (hi + 0.05) / (lo + 0.05)


def _colours(page, board: int) -> dict:
    """Computed colours (as luminances) in dashboard number ``board`` of the page."""
    return page.evaluate(f"""() => {{
      const lum = {LUMINANCE};
      const dash = document.querySelectorAll('.jpar-dash')[{board}];
      const fill = sel => {{ const e = dash.querySelector(sel); return e ? lum(getComputedStyle(e).fill) : null; }};
      return {{
        background: lum(getComputedStyle(dash.querySelector('.jpar-dagbox')).backgroundColor),
        label: fill('g.jpar-node > text'),
        group_box: fill('g.jpar-node > rect'),
        group_count: fill('g.jpar-node > text:nth-of-type(2)'),
        text: lum(getComputedStyle(dash).color),
      }};
    }}""")


def test_dashboard_dark_theme_and_the_readme_screenshot(lab):
    """Under load (a running DAG, busy engines, numpy arrays in the object store) the dashboard is
    photographed for the README (docs/img/dashboard.png, so the picture stays true); in JupyterLab
    Dark its DAG labels contrast with their background and grouped boxes are dark, not white."""
    url, token, root = lab
    _notebook(root / "load.ipynb", LOAD_CELLS)
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1100})
            page.goto(f"{url}/lab/workspaces/t{uuid.uuid4().hex[:8]}/tree/load.ipynb?reset&token={token}")
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=45_000)
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return k && k.status === 'idle'; }", timeout=45_000)
            for i in (0, 1):
                _run_cell(page, i)
                _wait_done(page, i)
            page.wait_for_function("() => document.querySelectorAll('.jpar-dash .jpar-cpu-fill').length >= 4",
                                   timeout=20_000)
            _run_cell(page, 2)
            _wait_done(page, 2)

            # the picture: tasks running, engines busy, the store holding bytes. Every moment that
            # shows all three is photographed, and the busiest kept (CPU depends on this machine's load)
            board = page.locator(".jpar-dash").first
            board.scroll_into_view_if_needed()
            deadline = time.monotonic() + 30
            best, seen = -1.0, []
            while time.monotonic() < deadline:
                now = page.evaluate("""() => {
                  const d = document.querySelector('.jpar-dash');
                  const cells = Array.from(d.querySelectorAll('.jpar-store td')).map(e => e.textContent);
                  return {running: d.querySelectorAll('g.jpar-node[data-state="running"]').length,
                          nodes: d.querySelectorAll('g.jpar-node').length,
                          cpu: Math.max(0, ...Array.from(d.querySelectorAll('.jpar-cpu-fill'))
                                 .map(e => parseFloat(e.dataset.cpu) || 0)),
                          used: cells.length >= 2 ? cells[1] : '', na: d.querySelectorAll('.jpar-store-na').length};
                }""")
                seen.append(now)
                shows_load = (now["running"] and now["nodes"] >= 10 and not now["na"]
                              and re.match(r"[1-9][\d.]* MiB", now["used"]))
                if shows_load and now["cpu"] > best:
                    board.screenshot(path=str(ARTIFACTS / "dashboard-load.png"))
                    best = now["cpu"]
                if best >= 40 or (best >= 0 and not now["running"]):
                    break
                page.wait_for_timeout(150)
            page.screenshot(path=str(ARTIFACTS / "dashboard-load-page.png"))
            assert best >= 0, seen[-5:]        # some moment showed a running DAG and bytes in the store
            (ROOT / "docs" / "img").mkdir(exist_ok=True)
            shutil.copy(ARTIFACTS / "dashboard-load.png", ROOT / "docs" / "img" / "dashboard.png")

            # dark theme: labels readable on the DAG's background; grouped boxes dark, their text readable
            page.wait_for_function("() => document.querySelectorAll('.jpar-dash')[1]"
                                   ".querySelector('svg.jpar-dag').dataset.mode === 'groups'", timeout=20_000)
            page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                          " {theme: 'JupyterLab Dark'})")
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=15_000)
            page.wait_for_function(f"() => ({LUMINANCE})(getComputedStyle(document.querySelector("
                                   "'.jpar-dash .jpar-dagbox')).backgroundColor) < 0.05", timeout=10_000)
            tasks, groups = _colours(page, 0), _colours(page, 1)
            (ARTIFACTS / "dashboard-dark-colours.txt").write_text(
                f"relative luminance in JupyterLab Dark\ntask view: {tasks}\ngroup view: {groups}\n")
            assert tasks["background"] < 0.05, tasks                           # the theme's dark background
            assert _contrast(tasks["label"], tasks["background"]) >= 4.5, tasks
            assert _contrast(tasks["text"], tasks["background"]) >= 4.5, tasks
            assert groups["group_box"] < 0.1, groups                           # no white boxes
            assert _contrast(groups["label"], groups["group_box"]) >= 4.5, groups
            assert _contrast(groups["group_count"], groups["group_box"]) >= 3.0, groups
            page.locator(".jpar-dash").nth(1).scroll_into_view_if_needed()
            page.locator(".jpar-dash").nth(0).screenshot(path=str(ARTIFACTS / "dashboard-dark.png"))
            page.locator(".jpar-dash").nth(1).screenshot(path=str(ARTIFACTS / "dashboard-dark-grouped.png"))
            for i in (3, 4):
                _run_cell(page, i)
                _wait_done(page, i)
        finally:
            browser.close()
