"""The notebook layer on the Dask and Ray backends, in real kernels (jupyter_client): %%remote
namespaces, late output under the submitting cell, Jupyter's interrupt cancelling the cell's work,
and the progress bar of jpar.get.

One kernel per backend (module-scoped, parametrized); its IOPub messages are recorded with their
arrival time by :class:`tests.test_notebook_kernel.KernelSession`. Every wait is bounded and waits
for an event (a message, a file a task or cell writes), never for a fixed time. Tearing a kernel
down checks that every process it started (Dask's workers and nanny, Ray's raylet, GCS and
workers) ended with it.
"""

from __future__ import annotations

import os
import queue
import re
import sys
import threading

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from .test_notebook_kernel import KernelSession, _wait_file_code, ok, stream_text

pytestmark = pytest.mark.timeout(240)    # the first test of a backend includes its kernel's start (Ray: slow)

BACKENDS = ["dask", "ray"]
INIT = {"dask": "jpar.init(backend='dask', num_engines=2)", "ray": "jpar.init(backend='ray', num_cpus=2)"}


def _backend_available(name: str) -> str | None:
    """Why backend ``name`` cannot run here (its module is missing), or None."""
    import jpar.backends

    try:
        jpar.backends.backend_class(name)
    except ImportError as exc:      # MissingExtraError is an ImportError too
        return f"the {name} backend cannot be imported: {exc}"
    return None


class BackendKernel(KernelSession):
    """A KernelSession whose kernel gets an environment of its own (Ray's usage stats off)."""

    def __init__(self, env: dict):
        self.km, self.kc = start_new_kernel(kernel_name="python3", startup_timeout=60, env=env)
        self.log = []
        self.replies = {}
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._reply_q = queue.Queue()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()


@pytest.fixture(scope="module", params=BACKENDS)
def kernel(request):
    name = request.param
    why = _backend_available(name)
    if why:
        pytest.skip(why)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    k = BackendKernel(env)
    descendants: list = []
    try:
        reply, out = k.run("%load_ext jpar\nimport jpar, os, time\n"
                           f"ctx = {INIT[name]}\n"
                           "print(type(jpar.backends.current()).__name__, len(jpar.hooks.engines()))",
                           timeout=180)
        ok(reply, out)
        print(name, stream_text(out).strip(), file=sys.stderr)
        k.backend = name
        yield k
    finally:
        try:
            descendants = psutil.Process(k.pid()).children(recursive=True)
        except psutil.Error:
            descendants = []
        if k.km.is_alive():
            k.shutdown()
        _, alive = psutil.wait_procs(descendants, timeout=30)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        assert not alive, f"{name}: processes the kernel started outlived it: " + \
            ", ".join(f"{p.pid}" for p in alive)


def _result_text(out: list) -> str:
    results = [m for m in out if m["msg_type"] == "execute_result"]
    assert len(results) == 1, out
    return results[0]["content"]["data"]["text/plain"]


def test_started_on_the_backend(kernel):
    reply, out = kernel.run("print(repr(ctx).split('(')[0], jpar.backends.current().name, "
                            "sorted(e['id'] for e in jpar.hooks.engines()))")
    ok(reply, out)
    assert stream_text(out).strip() == f"ClusterContext {kernel.backend} [0, 1]", out


def test_remote_cell_keeps_its_namespace_across_cells(kernel):
    """Two %%remote cells on every engine: names the first defines are there in the second, per
    engine (each engine's own pid), and the engines' prints come back labelled under the cell."""
    msg_id = kernel.submit("%%remote\nimport os\nx = 41\nwho = os.getpid()\nprint('hello from', x)")
    ok(kernel.wait(msg_id, timeout=120), kernel.outputs(msg_id))

    def both_printed(_m=None) -> bool:
        text = stream_text(kernel.outputs(msg_id), "stdout")
        return "[engine 0] hello from 41\n" in text and "[engine 1] hello from 41\n" in text

    try:    # under this cell (on Ray a line may arrive just after the cell's result: still this cell's)
        kernel.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and both_printed(), timeout=30)
    except TimeoutError:
        raise AssertionError(f"engine output missing under the cell: {kernel.outputs(msg_id)}") from None
    reply, out = kernel.run("%%remote\nx += 1\n(x, who == os.getpid())", timeout=60)
    ok(reply, out)
    assert _result_text(out) == "[engine 0] (42, True)\n[engine 1] (42, True)", out
    # the namespaces are the engines' own: a third cell pulls both pids back, and they differ
    reply, out = kernel.run("%%remote --pull who\nx", timeout=60)
    ok(reply, out)
    assert _result_text(out) == "[engine 0] 42\n[engine 1] 42", out
    reply, out = kernel.run("print(len(set(who.values())), all(p != os.getpid() for p in who.values()))")
    ok(reply, out)
    assert stream_text(out).strip() == "2 True", out


def test_late_output_goes_to_the_submitting_cell_while_another_runs(kernel, tmp_path):
    """A task prints once a second cell runs (it waits for a file that cell writes); that cell runs
    until this test has seen the line arrive (it waits for a file the test writes then)."""
    second_runs, line_seen = str(tmp_path / "second-runs"), str(tmp_path / "line-seen")
    first = kernel.submit(
        "@jpar.remote\n"
        "def late():\n"
        "    import os, time\n"
        + "".join("    " + line + "\n" for line in _wait_file_code(second_runs, 60).splitlines()) +
        "    print('late line', flush=True)\n"
        "    return 1\n"
        "late_ref = late.remote()")
    ok(kernel.wait(first), kernel.outputs(first))
    first_done = max(t for t, m in kernel.log if m["parent_header"].get("msg_id") == first)
    second = kernel.submit(f"open({second_runs!r}, 'w').close()\n" + _wait_file_code(line_seen, 60)
                           + "print('second cell')")
    t_late, msg = kernel.wait_for(lambda m: m["msg_type"] == "stream" and "late line" in m["content"]["text"],
                                  timeout=60)
    open(line_seen, "w").close()
    ok(kernel.wait(second), kernel.outputs(second))
    second_idle = max(t for t, m in kernel.log if m["parent_header"].get("msg_id") == second)
    assert msg["parent_header"]["msg_id"] == first, "late output went to the wrong cell"
    assert first_done < t_late < second_idle, "the late line did not arrive while the second cell ran"
    assert "late line" not in stream_text(kernel.outputs(second))
    assert stream_text(kernel.outputs(second)) == "second cell\n"
    assert re.fullmatch(r"\[engine -?\d+: late\] late line\n", msg["content"]["text"]), msg["content"]
    reply, out = kernel.run("print(jpar.get(late_ref, timeout=30))")
    ok(reply, out)
    assert stream_text(out) == "1\n"


def test_interrupt_cancels_the_cells_work(kernel, tmp_path):
    """Four tasks on two engines: two run (each waits for a file the test writes only after the
    interrupt), two are queued. Jupyter's interrupt, sent once two run, cancels all four: the cell
    ends with one line, every ref raises TaskCancelledError, the queued two never start, and the
    engines run new work. A running task is interrupted where the backend can (Ray); where it cannot
    (Dask) it runs to its end and its result is discarded: its ref still says cancelled."""
    started, release, finished = (str(tmp_path / n) for n in ("started-", "release", "finished-"))
    msg_id = kernel.submit(
        "@jpar.remote\n"
        "def hold(i):\n"
        "    import os, time\n"
        f"    open({started!r} + str(i), 'w').close()\n"
        "    print('started', i, flush=True)\n"
        + "".join("    " + line + "\n" for line in _wait_file_code(release, 60).splitlines()) +
        f"    open({finished!r} + str(i), 'w').close()\n"
        "    return i\n"
        "held = [hold.remote(i) for i in range(4)]\n"
        "jpar.get(held)")

    def two_started(_m) -> bool:
        lines = stream_text(kernel.outputs(msg_id)).splitlines()
        return len({line.split("started")[-1] for line in lines if "started" in line}) >= 2

    kernel.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and two_started(m), timeout=90)
    kernel.km.interrupt_kernel()
    reply = kernel.wait(msg_id, timeout=30)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt", reply
    errors = [m for m in kernel.outputs(msg_id) if m["msg_type"] == "error"]
    assert errors[0]["content"]["traceback"] == [
        "KeyboardInterrupt: cancelled 4 jpar tasks this cell submitted; the engines stay usable."], errors
    running = sorted(f.name for f in tmp_path.iterdir() if f.name.startswith("started-"))
    assert len(running) == 2, running
    open(release, "w").close()      # a task still running (not interrupted) now ends at once
    interrupts = kernel.backend == "ray"
    check = (
        "outcome = []\n"
        "for r in held:\n"
        "    try:\n"
        "        jpar.get(r, timeout=30)\n"
        "        outcome.append('finished')\n"
        "    except jpar.TaskCancelledError:\n"
        "        outcome.append('cancelled')\n"
        "@jpar.remote\n"
        "def fresh(i):\n"
        "    return i * 10\n"
        "print(outcome, jpar.get([fresh.remote(i) for i in range(4)], timeout=60))\n")
    if not interrupts:   # Dask: the two running tasks run to their end (results discarded)
        check += "".join(_wait_file_code(finished + n.split("-")[1], 30) for n in running)
    reply, out = kernel.run(check, timeout=120)
    ok(reply, out)
    assert stream_text(out).strip() == "['cancelled', 'cancelled', 'cancelled', 'cancelled'] [0, 10, 20, 30]", out
    names = sorted(f.name for f in tmp_path.iterdir())
    assert sorted(n for n in names if n.startswith("started-")) == running, names   # the queued two never ran
    done = sorted(n for n in names if n.startswith("finished-"))
    if interrupts:
        assert done == [], names            # interrupted where they waited: they never reached the end
    else:
        assert done == [n.replace("started", "finished") for n in running], names


def test_progress_bar_of_a_get_on_a_list(kernel, tmp_path):
    """jpar.get on four refs that wait for a file: past the reporter's delay a bar appears under the
    waiting cell saying 0/4; once the test writes the file the call returns and the bar says 4/4 done.
    The bar is a display updated in place, never a comm: a comm opened mid-cell made JupyterLab ask
    for a kernel subshell, whose status messages turned the status bar to Idle while the cell ran."""
    go = str(tmp_path / "go")
    msg_id = kernel.submit(
        "@jpar.remote\n"
        "def step(i):\n"
        "    import os, time\n"
        + "".join("    " + line + "\n" for line in _wait_file_code(go, 60).splitlines()) +
        "    return i\n"
        "print(jpar.get([step.remote(i) for i in range(4)]))")
    _, shown = kernel.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                               and m["msg_type"] == "display_data", timeout=60)
    data = shown["content"]["data"]
    assert data["text/plain"] == "jpar progress bar", data
    display_id = shown["content"]["transient"]["display_id"]
    assert re.search(r'data-done="0" data-total="4".*jpar\.get: 0/4 \(\d+\.\d s\)', data["text/html"]), data
    assert kernel.replies.get(msg_id) is None       # the bar showed while the cell waited
    open(go, "w").close()
    reply = kernel.wait(msg_id, timeout=60)
    ok(reply, kernel.outputs(msg_id))
    assert stream_text(kernel.outputs(msg_id)) == "[0, 1, 2, 3]\n"
    _, last = kernel.wait_for(lambda m: m["msg_type"] == "update_display_data"
                              and m["content"]["transient"]["display_id"] == display_id
                              and "done</span>" in m["content"]["data"]["text/html"], timeout=10)
    assert re.search(r'data-state="success" data-done="4" data-total="4".*jpar\.get: 4/4 \(\d+\.\d s\) done',
                     last["content"]["data"]["text/html"]), last["content"]["data"]
    assert not [m for _, m in list(kernel.log) if m["msg_type"] in ("comm_open", "comm_msg")
                and m["parent_header"].get("msg_id") == msg_id], "the bar opened or used a comm"
