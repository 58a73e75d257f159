"""jpar.dashboard() on the Dask and Ray backends, rendered in JupyterLab in headless Chromium: a real
notebook runs ``jpar.init(backend=...)``, shows the dashboard, submits a DAG of CPU-bound tasks, an
actor's calls and arrays put in the store; the DOM shows the DAG's nodes changing state and all
finishing, each engine's CPU and memory, and the object store's figures. Screenshots go to
test-artifacts/ (gitignored). The server, browser and cell helpers are the native test's
(tests/test_dashboard_browser.py, tests/jupyter_servers.py).
"""

from __future__ import annotations

import json
import re

import psutil
import pytest
from playwright import sync_api as playwright_sync

from .jupyter_servers import jupyter_app, lab_env, launch_chromium, open_notebook, require_chromium
from .test_backends_notebook import BACKENDS, INIT, _backend_available
from .test_dashboard_browser import ALL_DONE, ARTIFACTS, RECORD_DAG, WORKLOAD_DEFS, _notebook, _run_cell, _states, _wait_done

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True, scope="module")
def _chromium():
    require_chromium()


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab as the native test starts it; its kernels get Ray's usage stats off."""
    env, settings = lab_env(tmp_path, RAY_USAGE_STATS_ENABLED="0")
    with jupyter_app("jupyterlab", tmp_path, env, ("--LabApp.expose_app_in_browser=True",
                                                   f"--LabServerApp.app_settings_dir={settings}",
                                                   "--ServerApp.disable_check_xsrf=True")) as (url, token):
        yield url, token, tmp_path


def _cells(backend: str) -> list:
    return [
        # 0: the cluster on this backend, and the dashboard
        "import os, time, jpar, numpy as np\n"
        f"{INIT[backend]}\n"
        "board = jpar.dashboard()\n"
        "board",
        # 1: a DAG of CPU-bound tasks, an actor's calls, arrays in the object store; nothing blocks
        WORKLOAD_DEFS +
        "arrays = [jpar.put(np.full(1_500_000, float(i))) for i in range(2)]   # 12 MB each\n"
        "a = burn.remote(2.0)\n"
        "b = burn.remote(2.0)\n"
        "c = burn.remote(1.0, a, b)\n"
        "d = burn.remote(0.5, c)\n"
        "sums = [burn.remote(0.3, arr) for arr in arrays]\n"
        "counter = Counter.remote()\n"
        "calls = [counter.incr.remote() for _ in range(3)]\n"
        "'submitted'",
        # 2: wait for everything (the arrays stay referenced)
        "print(sum(jpar.get([a, b, c, d, *sums], timeout=120)) > 0, jpar.get(calls, timeout=60))",
        # 3: stop
        "board.close()\njpar.shutdown()\n'stopped'",
    ]


STORE = """() => {
  const d = document.querySelector('.jpar-dash');
  const rows = Array.from(d.querySelectorAll('.jpar-store tr')).slice(1)
    .map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent));
  return {rows, na: d.querySelectorAll('.jpar-store-na').length};
}"""

ENGINES = """() => Array.from(document.querySelectorAll('.jpar-dash .jpar-engine')).map(e => ({
  id: e.dataset.engine, measured: e.dataset.measured,
  cpu: e.querySelector('.jpar-cpu-fill').dataset.cpu, heap: e.querySelector('.jpar-heap-fill').dataset.heap,
  figures: e.querySelector('.jpar-figures').textContent}))"""


def _kernel_descendants(root_pid: int) -> list:
    """The processes under the notebook's kernel (its cluster), not the kernel itself."""
    out = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if "ipykernel" in " ".join(p.cmdline()):
                out.extend(p.children(recursive=True))
        except psutil.Error:
            pass
    return out


def _cmdline(proc) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


@pytest.mark.parametrize("backend", BACKENDS)
def test_dashboard_on_backend_in_jupyterlab(lab, backend):
    why = _backend_available(backend)
    if why:
        pytest.skip(why)
    url, token, root = lab
    _notebook(root / "dash.ipynb", _cells(backend))
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_notebook(page, url, token, "dash.ipynb")
            _run_cell(page, 0)
            _wait_done(page, 0, timeout=150)
            out0 = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(0).locator(
                ".jp-OutputArea").inner_text()
            assert "Error" not in out0, out0
            page.wait_for_selector(".jpar-dash .jpar-cpu-fill", timeout=30_000)
            page.evaluate(RECORD_DAG)
            _run_cell(page, 1)
            _wait_done(page, 1)

            # while the DAG runs: nodes change state, engines are sampled, the store holds the arrays
            try:
                page.wait_for_function("() => Object.values(window.jparSeen.states).some(s => s.includes('running'))",
                                       timeout=30_000)
                page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / f"dashboard-{backend}-running.png"))
                page.wait_for_function(
                    "() => { const d = document.querySelector('.jpar-dash');"
                    " const td = Array.from(d.querySelectorAll('.jpar-store tr td'));"
                    " return td.length >= 2 && /^[1-9][\\d.]* (MiB|GiB)$/.test(td[1].textContent); }",
                    timeout=30_000)
                page.wait_for_function(ALL_DONE, timeout=60_000)
            except playwright_sync.TimeoutError:
                pass    # the assertions below say what was seen
            seen = page.evaluate("() => window.jparSeen.states")
            cpu_seen = {tuple(v) for v in page.evaluate("() => window.jparSeen.cpu")}
            states_now = _states(page)
            engines = page.evaluate(ENGINES)
            store = page.evaluate(STORE)
            page.locator(".jpar-dash").screenshot(path=str(ARTIFACTS / f"dashboard-{backend}.png"))
            (ARTIFACTS / f"dashboard-{backend}-seen.json").write_text(json.dumps(
                {"states": states_now, "seen": seen, "cpu": sorted(cpu_seen), "engines": engines, "store": store},
                indent=1))

            # the task DAG from the refs the driver saw: 6 burn tasks + 3 actor calls, all done, with edges
            assert len(states_now) >= 9, states_now
            assert all(s == "done" for s in states_now.values()), (states_now, seen)
            assert sum(1 for s in seen.values() if len(s) >= 2) >= 4, seen       # observed changing state
            assert any("running" in s for s in seen.values()), seen
            labels = page.eval_on_selector_all(".jpar-dash g.jpar-node text", "els => els.map(e => e.textContent)")
            assert "burn" in labels and "Counter.incr" in labels, labels
            assert page.eval_on_selector_all(".jpar-dash svg.jpar-dag line", "els => els.length") >= 3
            # each engine: its CPU and memory, sampled
            assert len(engines) >= 2, engines
            for e in engines:
                assert e["measured"] == "true" and e["cpu"] != "" and int(float(e["heap"])) > 0, engines
                assert re.match(r"CPU \d+% · heap [\d.]+ [KMG]iB", e["figures"]), engines
            values = [v for v, _ in cpu_seen if v == v]      # NaN: a bar not sampled yet
            assert values and max(values) >= 10, (cpu_seen, engines)   # the engines burned CPU
            # the object store's figures: a host row with the bytes the two 12 MB arrays take
            assert not store["na"] and store["rows"], store
            used = [r[1] for r in store["rows"]]
            assert any(re.fullmatch(r"[1-9][\d.]* (MiB|GiB)", u) for u in used), store
            actors = page.eval_on_selector_all(".jpar-dash .jpar-actor", "els => els.map(e => e.textContent)")
            assert any("Counter" in a for a in actors) or "Counter.incr" in labels, actors

            _run_cell(page, 2)
            _wait_done(page, 2, timeout=120)
            cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
            assert "True [1, 2, 3]" in cells.nth(2).locator(".jp-OutputArea").inner_text()
            cluster = _kernel_descendants(psutil.Process().pid)
            _run_cell(page, 3)
            _wait_done(page, 3, timeout=90)
            out = cells.nth(3).locator(".jp-OutputArea-output").first.inner_text()
            assert "stopped" in out, out
            assert page.locator(".jpar-dash").count() == 0      # the closed widget's view is gone
            # jpar.shutdown() stopped the cluster the kernel started (the kernel's own helpers aside)
            cluster = [c for c in cluster if "resource_tracker" not in _cmdline(c)]
            _, alive = psutil.wait_procs(cluster, timeout=30)
            assert not alive, [(c.pid, c.cmdline()[:3]) for c in alive]
        finally:
            browser.close()
