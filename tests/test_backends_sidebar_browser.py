"""The JupyterLab sidebar's card for a Dask or a Ray cluster, in headless Chromium: a notebook runs
``jpar.init(backend=...)`` and the sidebar shows that cluster as a card, pushed by the notebook's
kernel over the sidebar's comm (the Jupyter server cannot watch it): the backend and address, each
engine's CPU and memory, the object store holding the notebook's arrays, and the task counts moving
while a cell's tasks run, with the status bar *Busy* throughout that cell. The buttons the backend
lacks are disabled with a tooltip saying why; a finished cell's pending tasks are cancelled from the
sidebar through the idle kernel; its stop button asks, then the idle kernel shuts the cluster jpar
started down (its engines' processes end) and the card goes. Screenshots
go to test-artifacts/ (gitignored). Server, browser and cell helpers are the native sidebar test's.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import psutil
import pytest
from playwright import sync_api as playwright_sync

from .jupyter_servers import jupyter_app, lab_env, launch_chromium, require_chromium
from .test_backends_notebook import BACKENDS, INIT, _backend_available
from .test_sidebar_browser import (ARTIFACTS, RECORD_STATUS, STATUS_BAR, _kernel_idle, _notebook, _prompt, _run_cell,
                                   _wait_cell_done)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True, scope="module")
def _chromium():
    require_chromium()


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab with no native cluster in its (private) runtime dir; kernels get Ray's usage stats off."""
    env, settings = lab_env(tmp_path, RAY_USAGE_STATS_ENABLED="0", JPAR_RUNTIME_DIR=str(tmp_path / "jpar"))
    with jupyter_app("jupyterlab", tmp_path, env, ("--LabApp.expose_app_in_browser=True",
                                                   f"--LabServerApp.app_settings_dir={settings}")) as (url, token):
        yield url, token, tmp_path


def _cells(backend: str) -> dict:
    return {
        "cell-init": "%load_ext jpar\nimport time, jpar, numpy as np\n"
                     f"ctx = {INIT[backend]}\n"
                     "arrays = [jpar.put(np.full(1_500_000, float(i))) for i in range(2)]   # 12 MB each\n"
                     "@jpar.remote\n"
                     "def burn(seconds):\n"
                     "    end = time.perf_counter() + seconds\n"
                     "    while time.perf_counter() < end:\n"
                     "        pass\n"
                     "    return 1\n"
                     "@jpar.remote\n"
                     "def nap(seconds):\n"
                     "    time.sleep(seconds)\n",
        # short tasks first (the done count moves), then one long task on each engine (its CPU bar moves).
        # It polls rather than blocking in jpar.get: a get that lasts shows a progress bar, a widget, and
        # JupyterLab opens its comm on a kernel subshell, whose status messages flip the status bar to
        # Idle mid-cell whatever the sidebar does; this test looks at the sidebar's own traffic only
        "cell-work": "def finish(refs):\n"
                     "    while len(jpar.wait(refs, num_returns=len(refs), timeout=0)[0]) < len(refs):\n"
                     "        time.sleep(0.1)\n"
                     "    return jpar.get(refs)\n"
                     "short = finish([burn.remote(0.4) for _ in range(10)])\n"
                     "long = finish([burn.options(placement=i).remote(3.0) for i in range(2)])\n"
                     "print('napped', sum(short + long))",
        "cell-pending": "pending = [nap.remote(20) for _ in range(2)]",     # left running as the cell ends
        "cell-pids": "print('pids', *sorted({e['pid'] for e in jpar.hooks.status()['engines'] if e.get('pid')}))",
        "cell-stop": "jpar.shutdown()\n'stopped'",
    }


CARD = ".jp-jpar-cluster[data-source='kernel']"

SAMPLE = f"""() => {{
  const card = document.querySelector("{CARD}");
  if (!card) return null;
  const num = s => s === '' ? null : parseFloat(s);
  return {{
    counts: Object.fromEntries(Array.from(card.querySelectorAll('.jp-jpar-chip'))
      .map(e => [e.dataset.state, parseInt(e.dataset.count)])),
    cpu: Array.from(card.querySelectorAll(".jp-jpar-bar[data-kind='cpu']")).map(e => num(e.dataset.value)),
    mem: Array.from(card.querySelectorAll(".jp-jpar-bar[data-kind='mem']")).map(e => num(e.dataset.value)),
    memText: Array.from(card.querySelectorAll(".jp-jpar-bar[data-kind='mem']")).map(e => e.textContent),
    store: Array.from(card.querySelectorAll(".jp-jpar-bar[data-kind='store']")).map(e => e.textContent)
  }};
}}"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_sidebar_shows_the_notebooks_backend_cluster(lab, backend):
    why = _backend_available(backend)
    if why:
        pytest.skip(why)
    url, token, root = lab
    ARTIFACTS.mkdir(exist_ok=True)
    _notebook(root / "scale.ipynb", _cells(backend))
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/workspaces/b{uuid.uuid4().hex[:8]}/tree/scale.ipynb?reset&token={token}")
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook", timeout=45_000)
            page.locator(".jp-SideBar [data-id='jpar-clusters']").click()
            page.wait_for_selector(".jp-jpar-conn[data-state='live']", timeout=10_000)
            _kernel_idle(page)
            assert page.locator(".jp-jpar-cluster").count() == 0

            # 1. init on the backend: the kernel's card appears, named by backend and address
            _run_cell(page, 0)
            _wait_cell_done(page, 0, 150_000)
            out = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(0).inner_text()
            assert "Error" not in out, out
            page.wait_for_selector(f"{CARD}[data-backend='{backend}']", timeout=60_000)
            assert page.locator(".jp-jpar-cluster").count() == 1
            address = page.get_attribute(CARD, "data-address")
            page.wait_for_selector(".jp-jpar-notebook[data-attached='true']", timeout=30_000)
            assert page.inner_text(f"{CARD} .jp-jpar-backend") == backend
            assert address and address in page.inner_text(f"{CARD} .jp-jpar-cluster-address")
            assert address in page.get_attribute(".jp-jpar-nb-status span[title]", "title")   # the notebook drives it
            page.wait_for_selector(f"{CARD} .jp-jpar-driver.jp-mod-current", timeout=10_000)
            # both engines measured (CPU and memory figures, not "-"), the store holding the 2 x 12 MB
            page.wait_for_function(f"""() => {{ const s = ({SAMPLE})();
                return s && s.cpu.length === 2 && s.cpu.every(v => v !== null) && s.mem.every(v => v > 0)
                  && s.store.length >= 1 && /^((2[2-9]|[3-9]\\d|\\d{{3,}}) MiB|[\\d.]+ GiB) \\//.test(s.store[0]); }}""",
                                   timeout=60_000)
            first = page.evaluate(SAMPLE)
            assert all(re.fullmatch(r"[\d.]+ (MiB|GiB)", t) for t in first["memText"]), first

            # 2. the buttons this backend lacks: disabled, and the tooltip says why and what to do instead
            for action in ("add-engine", "remove-engine"):
                button = page.locator(f"{CARD} [data-action='{action}']")
                assert button.is_disabled(), action
                assert "does not support adding and removing engines" in button.get_attribute("title")
            stop = page.locator(f"{CARD} [data-action='stop']")   # through the kernel: jpar started this cluster
            assert not stop.is_disabled() and "jpar started it" in stop.get_attribute("title")
            assert not page.locator(f"{CARD} [data-action='dashboard']").is_disabled()

            # 3. a cell runs 12 tasks: the counts and the CPU bars move, live, while it runs (Busy throughout)
            _kernel_idle(page)
            page.wait_for_function(f"() => ({STATUS_BAR})() === 'Idle'", timeout=10_000)
            page.evaluate(RECORD_STATUS)
            _run_cell(page, 1)
            samples, shot, cancel_state = [], False, None
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                s = page.evaluate(SAMPLE)
                samples.append((page.evaluate("() => window.jparStatusLog.napped") is None, s))
                if not shot and s and s["counts"].get("running", 0) >= 1:
                    page.locator(".jp-jpar-panel").screenshot(path=str(ARTIFACTS / f"sidebar-{backend}-running.png"))
                    shot = True
                    # the cell's cancel button: the server cannot reach this cluster, the kernel is busy
                    cancel = page.locator(".jp-jpar-cell[data-cell-id='cell-work'] [data-action='cancel-cell']")
                    cancel_state = (cancel.is_disabled(), cancel.get_attribute("title")) if cancel.count() else None
                if s and s["counts"].get("done", 0) >= 12:
                    break
                page.wait_for_timeout(150)
            _wait_cell_done(page, 1, 60_000)
            page.wait_for_function(f"() => ({STATUS_BAR})() === 'Idle'", timeout=10_000)
            log = page.evaluate("() => window.jparStatusLog")
            final = page.evaluate(SAMPLE)
            page.locator(".jp-jpar-panel").screenshot(path=str(ARTIFACTS / f"sidebar-{backend}.png"))
            (ARTIFACTS / f"sidebar-{backend}-samples.json").write_text(json.dumps(
                {"first": first, "samples": [s for _, s in samples], "final": final, "status": log["texts"]}, indent=1))

            assert cancel_state is not None and cancel_state[0] and "interrupt" in cancel_state[1], cancel_state
            mid = [s for running, s in samples if running and s]        # before the cell's last line came
            done_seen = {s["counts"].get("done", 0) for s in mid}
            assert any(s["counts"].get("running", 0) >= 1 for s in mid), mid[-3:]
            assert len(done_seen) >= 3 and max(done_seen) >= 5, done_seen       # moved while the cell ran
            cpu = [v for s in mid for v in s["cpu"] if v is not None]
            # the engines burned CPU (as the backend samples it: Dask's heartbeats lag and average, and
            # this machine's two cores are shared, so the bar shows less than the 100 % a task burns)
            assert cpu and max(cpu) >= 10, cpu
            assert final["counts"]["done"] == 12, final
            assert sum(final["counts"].get(k, 0) for k in ("waiting", "queued", "assigned", "running")) == 0, final
            assert "napped 12" in page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(1).inner_text()
            busy_at = next(t for t, v in log["texts"] if v == "Busy")
            during = [v for t, v in log["texts"] if busy_at <= t < log["napped"]]
            assert during == ["Busy"], log["texts"]                              # the sidebar's pushes: no status

            # 4. tasks left pending by a finished cell: its cancel button asks the idle kernel, which cancels them
            _run_cell(page, 2)
            _wait_cell_done(page, 2)
            _kernel_idle(page)
            row = ".jp-jpar-cell[data-cell-id='cell-pending']"
            page.wait_for_selector(f"{row}[data-pending='2']", timeout=10_000)
            page.wait_for_selector(f"{row} [data-action='cancel-cell']:not([disabled])", timeout=5_000)
            page.locator(f"{row} [data-action='cancel-cell']").click()
            page.wait_for_selector(".jp-jpar-notebook[data-pending='0']", timeout=15_000)
            assert "cancelled 2 task" in page.inner_text(".jp-jpar-message")
            page.wait_for_selector(f"{CARD} .jp-jpar-chip[data-state='cancelled'][data-count='2']", timeout=10_000)

            # 5. stop: asks first, then the idle kernel shuts the cluster jpar started down; the card goes
            _run_cell(page, 3)
            _wait_cell_done(page, 3, 60_000)
            _kernel_idle(page)
            line = next(ln for ln in page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(3)
                        .inner_text().splitlines() if ln.startswith("pids"))
            workers = [int(p) for p in line.split()[1:]]
            assert len(workers) == 2, line                      # the engines' processes, ended by the stop below
            page.locator(f"{CARD} [data-action='stop']").click()
            dialog = page.wait_for_selector(".jp-Dialog", timeout=10_000)
            assert "which jpar started" in dialog.inner_text(), dialog.inner_text()
            page.locator(".jp-Dialog button", has_text="Keep it").click()
            page.wait_for_selector(".jp-Dialog", state="detached", timeout=5_000)
            assert "kept" in page.inner_text(".jp-jpar-message") and page.locator(CARD).count() == 1
            page.locator(f"{CARD} [data-action='stop']").click()
            page.wait_for_selector(".jp-Dialog", timeout=10_000)
            page.locator(".jp-Dialog button", has_text="Stop").click()
            page.wait_for_selector(CARD, state="detached", timeout=60_000)
            assert page.locator(".jp-jpar-cluster").count() == 0
            page.wait_for_function("() => document.querySelector('.jp-jpar-message').textContent"
                                   f".startsWith('stopped {address}')", timeout=60_000)   # the kernel's answer
            assert psutil.wait_procs([psutil.Process(p) for p in workers if psutil.pid_exists(p)], timeout=30)[1] == []
            _run_cell(page, 4)                                      # jpar.shutdown() again: nothing left to stop
            _wait_cell_done(page, 4, 90_000)
            assert "*" not in _prompt(page, 4)
        finally:
            browser.close()
