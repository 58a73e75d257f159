"""The jpar sidebar in a real JupyterLab in headless Chromium: a cluster started with
``jpar start --head`` shows up within ~2 s, its CPU bars and task counts move under load, the
start/stop and +1 engine buttons work, the init button writes into the active notebook, and the dark theme
renders. Screenshots go to test-artifacts/ (gitignored).

Needs /usr/bin/chromium (Debian's; ``make browser`` installs it, ``make test`` runs that) and Python
playwright; without them the tests fail, saying so. Clusters live in a private JPAR_RUNTIME_DIR and
every head started here is stopped by its pid if the stop button did not stop it; every engine and
head said to end (-1 engine, stop, a kernel restart) is checked gone by its pid.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid

import jupyterlab  # noqa: F401  (the test extra installs these: missing is an error, not a skip)
import psutil
import pytest
from playwright import sync_api as playwright_sync

from .jupyter_servers import jupyter_app, lab_env, launch_chromium, process_gone, require_chromium

ROOT = pathlib.Path(__file__).parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True, scope="module")
def _chromium():
    require_chromium()

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


def _engine_pids(url: str, token: str, address: str) -> dict:
    """``{engine id: pid}`` of a cluster, from the Jupyter server's status answer (the head's)."""
    q = urllib.parse.urlencode({"address": address, "token": token})
    st = json.loads(urllib.request.urlopen(f"{url}/jpar/status?{q}", timeout=15).read())
    return {str(e["id"]): e["pid"] for e in st["engines"]}


def _all_gone(pids) -> list:
    """The pids among ``pids`` still running after a bounded wait (an empty list: all ended)."""
    return [pid for pid in pids if not process_gone(pid)]


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
            page.wait_for_selector(_card(address), timeout=10_000)     # pushed: no reload, no click
            appeared = time.monotonic() - t_started
            page.wait_for_function(
                f"() => document.querySelectorAll(\"{_card(address)} .jp-jpar-engine\").length === 2",
                timeout=10_000)
            engines_shown = time.monotonic() - t_started
            # before an engine's first sample its figures read "-", never a made-up 0 % / 0 MiB
            labels: set = set()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                now = page.eval_on_selector_all(f"{_card(address)} .jp-jpar-engine",
                                                "els => els.map(e => [e.dataset.measured, e.textContent])")
                labels.update((m, t) for m, t in now)
                if all(m == "true" for m, _ in now):
                    break
                page.wait_for_timeout(50)
            for measured, text in labels:
                assert ("0 MiB" not in text) if measured == "true" else ("-" in text and "MiB" not in text), labels
            (ARTIFACTS / "sidebar-engine-labels.txt").write_text(
                "engine rows seen while the cluster started (measured, text):\n"
                + "\n".join(f"{m}: {t}" for m, t in sorted(labels)) + "\n")
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
                    cpu_seen.update(round(v) for v in _bars(page, address, "cpu") if v == v)   # NaN: not sampled
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
            dark_bg = ("() => { const c = getComputedStyle(document.querySelector('.jp-jpar-panel')).backgroundColor;"
                       " const v = c.slice(c.indexOf('(') + 1, c.indexOf(')')).split(',').slice(0, 3);"
                       " return v.reduce((a, x) => a + parseInt(x), 0) < 200; }")
            try:    # the theme's stylesheet applies a moment after the body's flag flips
                page.wait_for_function(dark_bg, timeout=10_000)
            except playwright_sync.TimeoutError:
                pass    # the assertion below shows the colours
            bg = page.evaluate("() => getComputedStyle(document.querySelector('.jp-jpar-panel')).backgroundColor")
            fg = page.evaluate("() => getComputedStyle(document.querySelector('.jp-jpar-panel')).color")
            lum = [sum(int(x) for x in c[c.index("(") + 1:c.index(")")].split(",")[:3]) for c in (bg, fg)]
            assert lum[0] < 200 and lum[1] > 400, (bg, fg)        # dark background, light text
            page.locator(".jp-jpar-panel").screenshot(path=str(ARTIFACTS / "sidebar-dark.png"))
            page.screenshot(path=str(ARTIFACTS / "sidebar-page-dark.png"))

            ids = [page.get_attribute(_card(a), "data-cluster-id") for a in (address, other["address"])]
            (ARTIFACTS / "sidebar-clusters.txt").write_text(" ".join(ids) + "\n")

            # 7. the stop buttons stop both clusters and their cards go, with every process of theirs
            engines = [*_engine_pids(url, token, address).values(), *_engine_pids(url, token, other["address"]).values()]
            assert len(engines) == 4, engines                    # 2 + the one added, and the second cluster's 1
            for a in (other["address"], address):
                page.locator(f"{_card(a)} [data-action='stop']").click()
                page.wait_for_selector(_card(a), state="detached", timeout=15_000)
            for pid in heads:
                assert process_gone(pid), f"head {pid} still running after the stop button"
            assert _all_gone(engines) == [], "engines still running after the stop button"
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
    """The execution prompt of a cell: '[*]:' while it runs."""
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
            # the cluster list refreshes on its own clock: the card may come after the attach
            page.wait_for_selector(".jp-jpar-cluster", timeout=30_000)
            address = page.evaluate("() => document.querySelector('.jp-jpar-cluster').dataset.address")
            card = _card(address)

            # 1. a busy cell: its pending tasks are listed under it, answered on a subshell
            _run_cell(page, 1)
            t0 = time.monotonic()
            page.wait_for_selector(".jp-jpar-cell[data-cell-id='cell-busy'][data-pending='6']", timeout=10_000)
            listed = time.monotonic() - t0
            assert page.get_attribute(".jp-jpar-notebook", "data-push") == "true"     # pushed by the kernel
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
            ids = page.eval_on_selector_all(f"{card} .jp-jpar-engine", "els => els.map(e => e.dataset.engineId)")
            pids = _engine_pids(url, token, address)
            assert sorted(ids) == sorted(pids), (ids, pids)
            page.locator(f"{card} [data-action='remove-engine']").click()
            page.wait_for_function(
                f"() => document.querySelectorAll(\"{card} .jp-jpar-engine\").length === 1", timeout=15_000)
            (left,) = page.eval_on_selector_all(f"{card} .jp-jpar-engine", "els => els.map(e => e.dataset.engineId)")
            (removed,) = [pid for eid, pid in pids.items() if eid != left]
            assert process_gone(removed), f"engine process {removed} still running after -1 engine"
            assert psutil.pid_exists(pids[left]), "the engine left running is gone too"
            page.locator(".jp-jpar-panel").screenshot(path=str(ARTIFACTS / "sidebar-notebook-after.png"))

            # 5. a kernel restart: the kernel's cluster goes (its head and engine end), the section says
            # so, and comes back after init
            head = next(c["pid"] for c in _clusters(url, token) if c["address"] == address)
            assert head, _clusters(url, token)
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
            page.wait_for_selector(card, state="detached", timeout=20_000)
            assert _all_gone([head, pids[left]]) == [], "the restarted kernel's cluster is still running"
            page.wait_for_selector(".jp-jpar-notebook[data-attached='false']", timeout=20_000)
            _kernel_idle(page)
            _run_cell(page, 0)
            page.wait_for_selector(".jp-jpar-notebook[data-attached='true']", timeout=30_000)
            page.wait_for_selector(".jp-jpar-driver.jp-mod-current", timeout=10_000)
        finally:
            browser.close()


STATUS_BAR = """() => {
  const items = Array.from(document.querySelectorAll('#jp-main-statusbar .jp-StatusBar-TextItem'));
  const item = items.find(e => /\\|\\s*\\S/.test(e.textContent) && /Python/.test(e.textContent));
  return item ? item.textContent.split('|').pop().trim() : '';
}"""

WORK_CELL = ("@jpar.remote\ndef nap(s):\n    time.sleep(s)\n    return s\n\n"
             "naps = [nap.remote(1.5) for _ in range(4)]\ntime.sleep(8)\nprint('napped', sum(jpar.get(naps)))")

# a cell blocked in jpar.get for ~3 s: its progress bar shows after 1 s
GET_CELL = "print('napped', sum(jpar.get([nap.remote(3) for _ in range(4)])))"

# Records every text the status bar shows (a MutationObserver: no change is missed between samples)
# and when the kernel's "napped" line (WORK_CELL's last act) arrived: window.jparStatusLog.
RECORD_STATUS = f"""() => {{
  const text = {STATUS_BAR};
  const log = window.jparStatusLog = {{texts: [[performance.now(), text()]], napped: null}};
  new MutationObserver(() => {{
    const t = text();
    if (t !== log.texts[log.texts.length - 1][1]) log.texts.push([performance.now(), t]);
  }}).observe(document.querySelector('#jp-main-statusbar'), {{subtree: true, childList: true, characterData: true}});
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  kernel.iopubMessage.connect((_, msg) => {{
    if (log.napped === null && msg.header.msg_type === 'stream' && msg.content.text.includes('napped'))
      log.napped = performance.now();
  }});
}}"""


def test_status_bar_stays_busy_while_a_cell_runs_with_the_sidebar_open(lab):
    """With the sidebar open on a notebook that uses jpar, JupyterLab's status bar says Busy for the
    whole of a running cell (it said Idle within a second: the sidebar's comm requests, answered on
    a kernel subshell, made the kernel publish idle status messages mid-cell), while the sidebar
    still lists the cell's pending tasks (pushed by the kernel). Then, on the notebook's own cluster,
    the dashboard button inserts no second jpar.init, and stop asks first, naming this notebook."""
    url, token, root, env, heads = lab
    ARTIFACTS.mkdir(exist_ok=True)
    _notebook(root / "status.ipynb", {"cell-init": "%load_ext jpar\nimport jpar, time\nctx = jpar.init(num_engines=2)",
                                      "cell-work": WORK_CELL, "cell-get": GET_CELL})
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/workspaces/s{uuid.uuid4().hex[:8]}/tree/status.ipynb?reset&token={token}")
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook", timeout=45_000)
            page.locator(".jp-SideBar [data-id='jpar-clusters']").click()
            page.wait_for_selector(".jp-jpar-conn[data-state='live']", timeout=10_000)
            _kernel_idle(page)
            page.wait_for_function(f"() => ({STATUS_BAR})() === 'Idle'", timeout=10_000)
            _run_cell(page, 0)
            _wait_cell_done(page, 0, 45_000)
            page.wait_for_selector(".jp-jpar-notebook[data-attached='true']", timeout=30_000)
            # the cluster list refreshes on its own clock: the card may come after the attach
            page.wait_for_selector(".jp-jpar-cluster", timeout=30_000)
            address = page.evaluate("() => document.querySelector('.jp-jpar-cluster').dataset.address")
            card = _card(address)
            page.wait_for_function(f"() => ({STATUS_BAR})() === 'Idle'", timeout=10_000)

            # 1. a cell sleeps 8 s with 4 tasks pending: Busy throughout, the sidebar lists its tasks
            page.evaluate(RECORD_STATUS)
            _run_cell(page, 1)
            page.wait_for_function(f"() => ({STATUS_BAR})() === 'Busy'", timeout=10_000)
            page.wait_for_selector(".jp-jpar-cell[data-cell-id='cell-work']", timeout=10_000)
            assert page.evaluate("() => window.jparStatusLog.napped") is None, "listed only after the cell's end"
            assert "*" in _prompt(page, 1), "the cell ended early: " + _prompt(page, 1)
            page.screenshot(path=str(ARTIFACTS / "sidebar-status-busy.png"))
            _wait_cell_done(page, 1, 30_000)
            page.wait_for_function(f"() => ({STATUS_BAR})() === 'Idle'", timeout=10_000)
            log = page.evaluate("() => window.jparStatusLog")
            assert log["napped"] is not None, log
            busy_at = next(t for t, v in log["texts"] if v == "Busy")
            during = [v for t, v in log["texts"] if busy_at <= t < log["napped"]]
            (ARTIFACTS / "sidebar-status-samples.txt").write_text(
                "status bar texts while an 8 s cell ran (ms after its Busy: text), and its last line's arrival\n"
                + "\n".join(f"{t - busy_at:7.0f}: {v}" for t, v in log["texts"] if t >= busy_at)
                + f"\n{log['napped'] - busy_at:7.0f}: (the cell's 'napped' line arrived)\n")
            assert log["napped"] - busy_at > 0 and during == ["Busy"], log     # never Idle mid-cell
            page.wait_for_selector(".jp-jpar-notebook[data-pending='0']", timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "sidebar-status-idle.png"))

            # 1b. a cell blocked in jpar.get long enough for its progress bar: Busy throughout as well (the
            # bar was a widget, and a widget's comm opened mid-cell made JupyterLab ask the kernel for a
            # subshell, whose idle status flipped the status bar within about a second)
            page.evaluate(RECORD_STATUS)
            _run_cell(page, 2)
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jpar-progress[data-state='running']",
                                   timeout=20_000)
            assert "*" in _prompt(page, 2), "the cell ended early: " + _prompt(page, 2)
            _wait_cell_done(page, 2, 40_000)
            page.wait_for_function(f"() => ({STATUS_BAR})() === 'Idle'", timeout=10_000)
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jpar-progress[data-state='success']",
                                   timeout=10_000)
            log = page.evaluate("() => window.jparStatusLog")
            busy_at = next(t for t, v in log["texts"] if v == "Busy")
            during = [v for t, v in log["texts"] if busy_at <= t < log["napped"]]
            assert log["napped"] - busy_at > 2000 and during == ["Busy"], log    # never Idle mid-cell
            page.screenshot(path=str(ARTIFACTS / "sidebar-status-progress.png"))

            # 2. the dashboard button on the notebook's own cluster: no second jpar.init
            page.locator(f"{card} [data-action='dashboard']").click()
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jpar-dash", timeout=30_000)
            sources = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets"
                                    ".map(c => c.model.sharedModel.getSource())")
            assert len(sources) == 4 and "jpar.dashboard()" in sources[3], sources
            assert "jpar.init" not in sources[3], sources[3]
            errors = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type="
                                  "'application/vnd.jupyter.stderr']")
            assert errors.count() == 0, errors.all_inner_texts()

            # 3. stop on the notebook's own cluster asks first, naming this notebook
            page.locator(f"{card} [data-action='stop']").click()
            dialog = page.wait_for_selector(".jp-Dialog", timeout=10_000)
            text = dialog.inner_text()
            assert "This notebook (status.ipynb) drives this cluster" in text, text
            page.screenshot(path=str(ARTIFACTS / "sidebar-stop-confirm.png"))
            page.locator(".jp-Dialog button", has_text="Keep it").click()
            page.wait_for_selector(".jp-Dialog", state="detached", timeout=5_000)
            assert page.locator(card).count() == 1
            assert "kept" in page.inner_text(".jp-jpar-message")
            procs = [next(c["pid"] for c in _clusters(url, token) if c["address"] == address),
                     *_engine_pids(url, token, address).values()]
            assert len(procs) == 3 and all(procs), procs
            page.locator(f"{card} [data-action='stop']").click()
            page.wait_for_selector(".jp-Dialog", timeout=10_000)
            page.locator(".jp-Dialog button", has_text="Stop").click()
            page.wait_for_selector(card, state="detached", timeout=20_000)
            assert _all_gone(procs) == [], "the stopped cluster's head or engines still run"
        finally:
            browser.close()
