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

import anywidget  # noqa: F401  (the test extra installs these: missing is an error, not a skip)
import jupyterlab  # noqa: F401
import notebook  # noqa: F401
import numpy  # noqa: F401
import pytest
from playwright import sync_api as playwright_sync

from .jupyter_servers import jupyter_app, lab_env, launch_chromium, open_notebook, require_chromium

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
            open_notebook(page, url, token, "dash.ipynb")
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
            open_notebook(page, url, token, "load.ipynb")
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
            # a click on a group shows its tasks one by one; a second click folds them
            grouped = page.locator(".jpar-dash").nth(1)
            key = grouped.locator("g.jpar-node[data-kind=function]").first.get_attribute("data-id")
            grouped.locator(f"g.jpar-node[data-id='{key}']").click()
            page.wait_for_function("() => document.querySelectorAll('.jpar-dash')[1]"
                                   ".querySelectorAll('g.jpar-node[data-kind=task]').length >= 2", timeout=15_000)
            assert grouped.locator("text.jpar-lane-label").first.text_content().endswith("(expanded)")
            grouped.screenshot(path=str(ARTIFACTS / "dashboard-dark-expanded.png"))
            opened = grouped.locator("g.jpar-node[data-kind=task]").count()
            assert opened >= 2
            grouped.locator(f"g.jpar-node[data-id='{key}']").click()
            page.wait_for_function("() => document.querySelectorAll('.jpar-dash')[1]"
                                   ".querySelectorAll('g.jpar-node[data-kind=task]').length === 0", timeout=15_000)
            _run_cell(page, 3)
            _wait_done(page, 3)
            # the store table's "free" button, pressed from the keyboard: jpar.free in the kernel, the row goes
            free = page.locator(".jpar-dash").nth(0).locator(".jpar-largest button.jpar-free:not([disabled])").first
            free.wait_for(timeout=20_000)
            oid = free.get_attribute("data-free")
            free.focus()
            page.keyboard.press("Enter")
            page.wait_for_function("(id) => !document.querySelector('.jpar-dash').querySelector("
                                   "`.jpar-largest [data-id=\"${id}\"]`)", arg=oid, timeout=15_000)
            _run_cell(page, 4)
            _wait_done(page, 4)
        finally:
            browser.close()


# ---------------------------------------------------------------- navigation, details, task stream
NAV_CELLS = [
    "import time, jpar\n"
    "jpar.init(num_engines=2)\n"
    "board = jpar.dashboard()\n"
    "board",
    # 298 tasks of three kinds: loads, a long-named transform of each, an actor's calls on some
    "@jpar.remote\n"
    "def load(i):\n"
    "    time.sleep(0.03)\n"
    "    return i\n"
    "\n"
    "@jpar.remote\n"
    "def transform_with_a_rather_long_name(x):\n"
    "    return x * 2\n"
    "\n"
    "@jpar.remote\n"
    "class Accumulator:\n"
    "    def __init__(self):\n"
    "        self.total = 0\n"
    "    def add(self, x):\n"
    "        self.total += x\n"
    "        return self.total\n"
    "\n"
    "acc = Accumulator.remote()\n"
    "xs = [load.remote(i) for i in range(120)]\n"
    "ys = [transform_with_a_rather_long_name.remote(x) for x in xs]\n"
    "calls = [acc.add.remote(y) for y in ys[:58]]\n"
    "'submitted'",
    "print(len(jpar.get(ys)), jpar.get(calls)[-1])",
    "board.close()\njpar.shutdown()\n'stopped'",
]

# every node label's rendered size in px (font size times the zoom), and whether it is on screen
LABEL_SIZES = """() => Array.from(document.querySelectorAll('.jpar-dash svg.jpar-dag g.jpar-node > text')).map(t =>
  t.getScreenCTM().a * parseFloat(getComputedStyle(t).fontSize))"""

TRANSFORM = "() => document.querySelector('.jpar-dash g.jpar-viewport').getAttribute('transform')"
ZOOM = "() => parseFloat(document.querySelector('.jpar-dash svg.jpar-dag').dataset.zoom)"

# the node nearest the bottom-right corner of the graph's box that is wholly inside it (its centre)
CORNER_NODE = """() => {
  const box = document.querySelector('.jpar-dash .jpar-dagbox').getBoundingClientRect();
  let best = null;
  for (const g of document.querySelectorAll('.jpar-dash g.jpar-node')) {
    const r = g.querySelector('circle, rect').getBoundingClientRect();
    if (r.left < box.left + 30 || r.right > box.right - 60 || r.top < box.top + 30 || r.bottom > box.bottom - 4) continue;
    const score = r.right + r.bottom;
    if (!best || score > best.score) best = {score, x: (r.left + r.right) / 2, y: (r.top + r.bottom) / 2,
                                             id: g.dataset.id};
  }
  return best;
}"""

INSIDE = """([inner, outer]) => {
  const a = document.querySelector(inner).getBoundingClientRect(), b = document.querySelector(outer).getBoundingClientRect();
  return a.width > 0 && a.left >= b.left - 1 && a.right <= b.right + 1 && a.top >= b.top - 1 && a.bottom <= b.bottom + 1;
}"""

ALL_NODES_INSIDE = """() => {
  const b = document.querySelector('.jpar-dash .jpar-dagbox').getBoundingClientRect();
  return Array.from(document.querySelectorAll('.jpar-dash g.jpar-node > circle, .jpar-dash g.jpar-node > rect'))
    .every(e => { const r = e.getBoundingClientRect();
                  return r.left >= b.left - 1 && r.right <= b.right + 1 && r.top >= b.top - 1 && r.bottom <= b.bottom + 1; });
}"""


@pytest.mark.timeout(300)
def test_graph_navigation_details_and_task_stream(lab):
    """300 mixed tasks with an actor: the empty state first; during the run the task stream shows bars
    per engine, coloured by function; then labels are >= 10 px at the default zoom, full names shown,
    the actor's calls on their lane, hover details inside the widget, zoom/pan/fit/keys move the view
    (and JupyterLab's 0 0 does not restart the kernel); in the dark theme labels stay legible."""
    url, token, root = lab
    _notebook(root / "nav.ipynb", NAV_CELLS)
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            open_notebook(page, url, token, "nav.ipynb")
            _run_cell(page, 0)
            _wait_done(page, 0)
            page.wait_for_selector(".jpar-dash .jpar-empty", timeout=20_000)

            # the empty state says what will appear
            empty = page.locator(".jpar-dash .jpar-empty")
            assert empty.is_visible() and "Tasks you submit appear here as a graph" in empty.inner_text()
            assert "task stream" in page.eval_on_selector(".jpar-dash svg.jpar-stream", "e => e.textContent")
            page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard-empty.png"))

            # the task stream during the run: bars on both engines' rows, one colour per function
            _run_cell(page, 1)
            page.wait_for_function(
                "() => { const b = document.querySelectorAll('.jpar-dash rect.jpar-stream-bar');"
                " return new Set(Array.from(b).map(r => r.dataset.engine)).size >= 2; }", timeout=30_000)
            page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard-stream-running.png"))
            bars = page.eval_on_selector_all(".jpar-dash rect.jpar-stream-bar",
                                             "els => els.map(r => [r.dataset.name, r.getAttribute('fill'), r.dataset.engine])")
            colours: dict = {}
            for name, fill, _ in bars:
                colours.setdefault(name, set()).add(fill)
            assert all(len(f) == 1 for f in colours.values()), colours     # stable colour per function
            _wait_done(page, 1)
            _run_cell(page, 2)
            _wait_done(page, 2, timeout=90)
            page.wait_for_function("() => { const s = document.querySelector('.jpar-dash svg.jpar-dag');"
                                   " return +s.dataset.nodes >= 298 && s.dataset.mode === 'tasks'"
                                   " && document.querySelectorAll('.jpar-dash g.jpar-node[data-state=\"done\"]').length"
                                   " >= 298; }", timeout=30_000)
            names = set(page.eval_on_selector_all(".jpar-dash g.jpar-node > text", "els => els.map(e => e.textContent)"))
            assert {"load", "transform_with_a_rather_long_name", "Accumulator.add"} <= names, names   # never cut
            lane_labels = page.eval_on_selector_all(".jpar-dash text.jpar-lane-label", "els => els.map(e => e.textContent)")
            assert lane_labels == ["Accumulator actor"], lane_labels
            stream_names = set(page.eval_on_selector_all(".jpar-dash rect.jpar-stream-bar", "els => els.map(r => r.dataset.name)"))
            assert {"load", "transform_with_a_rather_long_name"} <= stream_names, stream_names
            # waits and transfers: tasks queued behind busy engines waited (thin strips under the bars);
            # each transform fetched its ref argument (a bar's data-fetch; hatched where a pixel wide)
            phases = page.eval_on_selector_all(".jpar-dash rect.jpar-stream-bar",
                                               "els => els.map(r => [r.dataset.name, +r.dataset.wait, +r.dataset.fetch])")
            assert any(w > 0 for _, w, _ in phases), phases
            assert any(n == "transform_with_a_rather_long_name" and f > 0 for n, _, f in phases), phases
            assert page.locator(".jpar-dash rect.jpar-stream-wait").count() >= 1

            # memory bars against the host's memory (the engines are local): width = heap / host memory
            mem = page.eval_on_selector_all(
                ".jpar-dash .jpar-bar[data-limit]",
                "els => els.map(b => [+b.dataset.limit, +b.querySelector('.jpar-heap-fill').dataset.heap,"
                " parseFloat(b.querySelector('.jpar-heap-fill').style.width)])")
            assert len(mem) == 2 and all(lim > 0 for lim, _, _ in mem), mem
            assert all(abs(w - 100 * heap / lim) < 0.01 for lim, heap, w in mem), mem

            # labels readable at the default zoom, nodes big enough to point at
            sizes = page.evaluate(LABEL_SIZES)
            assert len(sizes) >= 298 and min(sizes) >= 9.99, min(sizes)
            dot = page.eval_on_selector(".jpar-dash g.jpar-node > circle", "e => e.getBoundingClientRect().width")
            assert dot >= 15, dot
            # the actor's calls: one lane, one row, in submission order left to right
            lanes = page.eval_on_selector_all(".jpar-dash rect.jpar-lane", "els => els.map(e => e.dataset.lane)")
            assert len(lanes) == 1 and lanes[0].startswith("actor:"), lanes
            calls = page.eval_on_selector_all(
                ".jpar-dash g.jpar-node[data-kind=call]",
                "els => els.map(g => [parseInt(g.dataset.id, 16), g.transform.baseVal[0].matrix.e, g.transform.baseVal[0].matrix.f])")
            assert len(calls) == 58 and len({c[2] for c in calls}) == 1, calls[:3]
            xs = [c[1] for c in sorted(calls)]
            assert xs == sorted(xs) and len(set(xs)) == 58, xs[:5]
            page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard-300.png"))

            # hover: the details, inside the widget even near the graph's bottom-right corner
            corner = page.evaluate(CORNER_NODE)
            assert corner, "no node wholly inside the graph's box"
            page.mouse.move(corner["x"], corner["y"])
            tip = page.locator(".jpar-dash .jpar-tip")
            tip.wait_for(state="visible", timeout=5_000)
            text = tip.inner_text()
            assert "function: " in text and "state: done" in text and "engine: " in text and "duration: " in text, text
            assert page.evaluate(INSIDE, [".jpar-dash .jpar-tip", ".jpar-dash"]), "the tooltip leaves the widget"
            page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard-hover.png"))
            page.mouse.click(corner["x"], corner["y"])       # click pins the details under the widget
            assert page.get_attribute(".jpar-dash .jpar-details", "data-id") == corner["id"]
            assert "state: done" in page.locator(".jpar-dash .jpar-details").inner_text()

            # the critical path on demand: a chain of dependent tasks, starting at a load (the slow ones)
            page.click(".jpar-dash .jpar-critical-button")
            crit = page.get_attribute(".jpar-dash svg.jpar-dag", "data-critical")
            count, seconds = int(crit.split()[0]), float(crit.split()[1])
            on = page.eval_on_selector_all(".jpar-dash g.jpar-node.jpar-critical", "els => els.map(g => g.textContent)")
            lit = page.eval_on_selector_all(".jpar-dash line.jpar-edge.jpar-critical", "els => els.length")
            assert count >= 2 and len(on) == count and lit == count - 1, (crit, on, lit)
            assert "load" in on and seconds >= 0.025, (crit, on)
            assert page.evaluate(INSIDE, [".jpar-dash g.jpar-node.jpar-critical > circle", ".jpar-dash .jpar-dagbox"])
            page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard-critical-path.png"))
            page.focus(".jpar-dash .jpar-dagbox")
            page.keyboard.press("c")                                       # the key toggles it off
            assert page.eval_on_selector_all(".jpar-dash .jpar-critical", "els => els.length") == 0

            # zoom, fit and the default view; the keyboard; the wheel; dragging
            page.click(".jpar-dash .jpar-zoom-home")                      # the critical path moved the view
            home, k0 = page.evaluate(TRANSFORM), page.evaluate(ZOOM)
            assert k0 >= 10 / 12 - 1e-3
            assert not page.evaluate(ALL_NODES_INSIDE)          # 298 readable nodes do not fit the box
            page.click(".jpar-dash .jpar-zoom-in")
            assert page.evaluate(ZOOM) > k0 and page.evaluate(TRANSFORM) != home
            page.click(".jpar-dash .jpar-zoom-fit")
            assert page.evaluate(ALL_NODES_INSIDE) and page.evaluate(ZOOM) < k0
            page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard-fit.png"))
            page.click(".jpar-dash .jpar-zoom-home")
            assert page.evaluate(TRANSFORM) == home
            page.focus(".jpar-dash .jpar-dagbox")
            page.keyboard.press("-")
            assert page.evaluate(ZOOM) < k0
            page.keyboard.press("ArrowLeft")
            moved = page.evaluate(TRANSFORM)
            page.keyboard.press("0")
            page.keyboard.press("0")                 # JupyterLab's "restart the kernel" in command mode
            assert page.evaluate(TRANSFORM) == home and moved != home
            box = page.locator(".jpar-dash .jpar-dagbox").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx, cy)
            page.mouse.wheel(0, -300)
            page.wait_for_function(f"() => ({ZOOM})() > {k0}", timeout=5_000)
            page.keyboard.press("0")
            page.mouse.move(box["x"] + 8, box["y"] + box["height"] - 8)     # an empty spot
            page.mouse.down()
            page.mouse.move(box["x"] + 200, box["y"] + box["height"] - 60, steps=5)
            page.mouse.up()
            assert page.evaluate(TRANSFORM) != home
            # the kernel was not restarted by those keys: the widget still gets updates
            before = int(page.get_attribute(".jpar-dash", "data-updates"))
            page.click(".jpar-dash .jpar-head button")         # clear: the kernel answers with an update
            page.wait_for_function(f"() => +document.querySelector('.jpar-dash').dataset.updates > {before}"
                                   " && document.querySelector('.jpar-dash .jpar-empty').style.display !== 'none'",
                                   timeout=15_000)

            # dark theme: the stream's and lanes' text legible on their backgrounds
            page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                          " {theme: 'JupyterLab Dark'})")
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=15_000)
            page.wait_for_function(f"() => ({LUMINANCE})(getComputedStyle(document.querySelector("
                                   "'.jpar-dash .jpar-streambox')).backgroundColor) < 0.05", timeout=10_000)
            dark = page.evaluate(f"""() => {{
              const lum = {LUMINANCE};
              const d = document.querySelector('.jpar-dash');
              return {{stream_bg: lum(getComputedStyle(d.querySelector('.jpar-streambox')).backgroundColor),
                       stream_label: lum(getComputedStyle(d.querySelector('svg.jpar-stream text.jpar-label')).fill),
                       empty: lum(getComputedStyle(d.querySelector('.jpar-empty')).color),
                       graph_bg: lum(getComputedStyle(d.querySelector('.jpar-dagbox')).backgroundColor),
                       button: lum(getComputedStyle(d.querySelector('.jpar-tools button')).color),
                       button_bg: lum(getComputedStyle(d.querySelector('.jpar-tools button')).backgroundColor)}};
            }}""")
            (ARTIFACTS / "dashboard-nav-dark-colours.txt").write_text(f"relative luminance in JupyterLab Dark: {dark}\n")
            assert _contrast(dark["stream_label"], dark["stream_bg"]) >= 4.5, dark
            assert _contrast(dark["empty"], dark["graph_bg"]) >= 4.5, dark
            assert _contrast(dark["button"], dark["button_bg"]) >= 4.5, dark
            page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / "dashboard-stream-dark.png"))
            _run_cell(page, 3)
            _wait_done(page, 3)
        finally:
            browser.close()
