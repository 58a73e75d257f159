"""The notebook layer in a real kernel (jupyter_client): output routing, interrupt, reprs, life cycle.

One kernel for the whole module; a thread records every IOPub message with the time it
arrived, so tests can tell which cell an output went to and when.
"""

from __future__ import annotations

import queue
import sys
import threading
import time

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.timeout(90)


class KernelSession:
    """A kernel plus a log of its IOPub messages as (arrival time, message)."""

    def __init__(self):
        self.km, self.kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
        self.log: list = []
        self.replies: dict = {}
        self._arrived = threading.Condition()     # notified on every IOPub message
        self._stop = threading.Event()
        self._reply_q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        from jupyter_core.utils import ensure_event_loop

        try:
            while not self._stop.is_set():
                try:
                    msg = self.kc.get_iopub_msg(timeout=0.1)
                except queue.Empty:
                    continue
                with self._arrived:
                    self.log.append((time.monotonic(), msg))
                    self._arrived.notify_all()
        finally:
            ensure_event_loop().close()   # the loop jupyter_client's sync API made for this thread

    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def submit(self, code: str) -> str:
        return self.kc.execute(code)

    def wait(self, msg_id: str, timeout: float = 60) -> dict:
        """Wait for the execute_reply and the idle status of a request; returns the reply."""
        deadline = time.monotonic() + timeout
        while msg_id not in self.replies:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            self.replies[reply["parent_header"].get("msg_id")] = (time.monotonic(), reply)
        try:
            self.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                          and m["content"]["execution_state"] == "idle", max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise TimeoutError(f"no idle status for {msg_id}") from None
        return self.replies[msg_id][1]

    def run(self, code: str, timeout: float = 60) -> tuple[dict, list]:
        msg_id = self.submit(code)
        reply = self.wait(msg_id, timeout)
        return reply, self.outputs(msg_id)

    def outputs(self, msg_id: str) -> list:
        return [m for _, m in list(self.log) if m["parent_header"].get("msg_id") == msg_id
                and m["msg_type"] in ("stream", "execute_result", "display_data", "error")]

    def wait_for(self, pred, timeout: float = 30, since: float | None = None) -> tuple:
        """The first IOPub message (arrival time, message) that ``pred`` accepts (arrived after
        ``since`` if given), waiting for new messages to arrive up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._arrived:
            while True:
                for t, m in self.log[seen:]:
                    if (since is None or t > since) and pred(m):
                        return t, m
                seen = len(self.log)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("message not seen")
                self._arrived.wait(left)

    def ended_by(self, msg_id: str, t: float) -> bool:
        """Whether request ``msg_id`` had published its idle status (it ended) by time ``t``."""
        return any(at <= t and m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                   and m["content"]["execution_state"] == "idle" for at, m in list(self.log))

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)
        self.km.cleanup_resources()
        from jupyter_core.utils import ensure_event_loop

        ensure_event_loop().close()   # the loop jupyter_client's sync API made for this thread


def stream_text(outputs: list, name: str | None = None) -> str:
    return "".join(m["content"]["text"] for m in outputs
                   if m["msg_type"] == "stream" and (name is None or m["content"]["name"] == name))


def ok(reply: dict, outputs: list) -> None:
    assert reply["content"]["status"] == "ok", (reply["content"], outputs)


@pytest.fixture(scope="module")
def kernel():
    k = KernelSession()
    try:
        reply, out = k.run("%load_ext jpar\nimport jpar, time\nctx = jpar.init(num_engines=2)\n"
                           "import ipykernel; print(ipykernel.__version__)")
        ok(reply, out)
        print("ipykernel", stream_text(out).strip(), file=sys.stderr)
        yield k
    finally:
        if k.km.is_alive():
            k.shutdown()


def test_task_output_goes_to_its_cell_with_engine_labels(kernel):
    reply, out = kernel.run(
        "@jpar.remote\n"
        "def hello(i):\n"
        "    import sys\n"
        "    print('out', i)\n"
        "    print('err', i, file=sys.stderr)\n"
        "    return i\n"
        "print('local first')\n"
        "jpar.get([hello.options(placement=i).remote(i) for i in range(2)])")
    ok(reply, out)
    stdout, stderr = stream_text(out, "stdout"), stream_text(out, "stderr")
    assert stdout.startswith("local first\n")
    assert "[engine 0: hello] out 0\n" in stdout and "[engine 1: hello] out 1\n" in stdout
    assert "[engine 0: hello] err 0\n" in stderr and "[engine 1: hello] err 1\n" in stderr
    kinds = [m["msg_type"] for m in out]
    assert kinds[-1] == "execute_result" and kinds.count("execute_result") == 1, kinds  # streams first


def _wait_file_code(path: str, seconds: float = 30) -> str:
    """Code (for a cell or a task) that waits for file ``path`` to appear, and fails after ``seconds``."""
    return (f"_deadline = time.monotonic() + {seconds}\n"
            f"while not os.path.exists({path!r}):\n"
            f"    assert time.monotonic() < _deadline, 'no ' + {path!r}\n"
            "    time.sleep(0.01)\n")


def test_late_output_goes_to_the_submitting_cell_while_another_runs(kernel, tmp_path):
    """A task prints once the second cell runs (it waits for a file that cell writes); the second
    cell runs until this test saw the line arrive (it waits for a file the test writes then)."""
    second_runs, line_seen = str(tmp_path / "second-runs"), str(tmp_path / "line-seen")
    first = kernel.submit(
        "import os\n"
        "@jpar.remote\n"
        "def late():\n"
        "    import os, time\n"
        + "".join("    " + line + "\n" for line in _wait_file_code(second_runs).splitlines()) +
        "    print('late line')\n"
        "    return 1\n"
        "late_ref = late.remote()")
    kernel.wait(first)
    first_done = time.monotonic()
    second = kernel.submit(f"open({second_runs!r}, 'w').close()\n" + _wait_file_code(line_seen)
                           + "print('second cell')")
    t_late, msg = kernel.wait_for(lambda m: m["msg_type"] == "stream" and "late line" in m["content"]["text"])
    open(line_seen, "w").close()
    ok(kernel.wait(second), kernel.outputs(second))
    second_idle = max(t for t, m in kernel.log if m["parent_header"].get("msg_id") == second
                      and m["msg_type"] == "status")
    assert msg["parent_header"]["msg_id"] == first, "late output went to the wrong cell"
    assert first_done < t_late < second_idle, "the late line did not arrive while the second cell ran"
    assert "late line" not in stream_text(kernel.outputs(second))
    assert msg["content"]["text"] == "[engine 0: late] late line\n" or \
        msg["content"]["text"] == "[engine 1: late] late line\n"


def test_remote_cell_streams_values_and_namespaces(kernel):
    reply, out = kernel.run("%%remote\nimport os\nwho = os.getpid()\nprint('hi')\n'value'")
    ok(reply, out)
    text = stream_text(out, "stdout")
    assert "[engine 0] hi\n" in text and "[engine 1] hi\n" in text
    result = [m for m in out if m["msg_type"] == "execute_result"]
    assert result[0]["content"]["data"]["text/plain"] == "[engine 0] 'value'\n[engine 1] 'value'"
    reply, out = kernel.run("%%remote --targets 1 --pull who\nwho")
    ok(reply, out)
    reply, out = kernel.run("print(who == [e['pid'] for e in jpar.hooks.engines() if e['id'] == 1][0])")
    assert stream_text(out).strip() == "True"


def test_remote_cell_error_shows_engine_traceback_with_cell_lines(kernel):
    reply, out = kernel.run("%%remote --targets 0\ndef inner():\n    return 1 / 0\ninner()")
    assert reply["content"]["status"] == "error"
    errors = [m for m in out if m["msg_type"] == "error"]
    assert len(errors) == 1
    tb = "\n".join(errors[0]["content"]["traceback"])
    assert tb.startswith("[engine 0] Traceback")
    assert "inner()" in tb and "return 1 / 0" in tb and "ZeroDivisionError" in tb
    assert "jpar/" not in tb and "engine_ns" not in tb


def _started_on_both_engines(kernel, msg_id: str, word: str) -> None:
    """Wait until both engines printed ``word`` for request ``msg_id`` (its tasks run on both)."""
    def both() -> bool:
        lines = stream_text(kernel.outputs(msg_id)).splitlines()
        return all(any(line.startswith(f"[engine {e}") and word in line for line in lines) for e in (0, 1))

    kernel.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and both(), timeout=30)


def test_interrupt_cancels_the_cells_tasks(kernel, tmp_path):
    """Jupyter's interrupt, sent once both tasks run, cancels them: the cell ends with one line,
    the refs raise TaskCancelledError, the tasks never reach the end of their sleep (no marker
    file), and each engine, the same processes as before, runs a new task at once."""
    marker = str(tmp_path / "finished")
    ok(*kernel.run("pids_before = sorted(e['pid'] for e in jpar.hooks.engines())"))
    msg_id = kernel.submit(
        "@jpar.remote\n"
        "def forever(i):\n"
        "    print('started', i, flush=True)\n"
        "    time.sleep(600)\n"
        f"    open({marker!r} + str(i), 'w').close()\n"
        "forever_refs = [forever.options(placement=i).remote(i) for i in range(2)]\n"
        "jpar.get(forever_refs)")
    _started_on_both_engines(kernel, msg_id, "started")
    kernel.km.interrupt_kernel()
    reply = kernel.wait(msg_id, timeout=30)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    errors = [m for m in kernel.outputs(msg_id) if m["msg_type"] == "error"]
    assert errors[0]["content"]["traceback"] == [
        "KeyboardInterrupt: cancelled 2 jpar tasks this cell submitted; the engines stay usable."]
    # the refs say cancelled; each engine (not restarted) runs a new task well within forever's sleep
    reply, out = kernel.run(
        "import os\n"
        "@jpar.remote\ndef whose(): return os.getpid()\n"
        "outcome = []\n"
        "for r in forever_refs:\n"
        "    try:\n"
        "        jpar.get(r, timeout=20)\n"
        "        outcome.append('finished')\n"
        "    except jpar.TaskCancelledError:\n"
        "        outcome.append('cancelled')\n"
        "print(outcome, sorted(jpar.get([whose.options(placement=i).remote() for i in range(2)], timeout=20))"
        " == pids_before == sorted(e['pid'] for e in jpar.hooks.engines()))", timeout=60)
    ok(reply, out)
    assert stream_text(out).strip() == "['cancelled', 'cancelled'] True", out
    assert not [f for f in tmp_path.iterdir() if f.name.startswith("finished")]


def test_interrupt_cancels_a_remote_cell(kernel, tmp_path):
    marker = str(tmp_path / "finished")
    msg_id = kernel.submit(f"%%remote\nimport os, time\nprint('go', flush=True)\ntime.sleep(600)\n"
                           f"open({marker!r} + str(os.getpid()), 'w').close()")
    _started_on_both_engines(kernel, msg_id, "go")
    kernel.km.interrupt_kernel()
    reply = kernel.wait(msg_id, timeout=30)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    errors = [m for m in kernel.outputs(msg_id) if m["msg_type"] == "error"]
    assert errors[0]["content"]["traceback"] == [
        "KeyboardInterrupt: cancelled 2 jpar tasks this cell submitted; the engines stay usable."]
    # both engines answer again long before the cell's sleep could end: the cell was stopped there
    reply, out = kernel.run("%%remote --timeout 20\n'ok'", timeout=40)
    ok(reply, out)
    result = [m for m in out if m["msg_type"] == "execute_result"]
    assert result[0]["content"]["data"]["text/plain"] == "[engine 0] 'ok'\n[engine 1] 'ok'", out
    assert not [f for f in tmp_path.iterdir() if f.name.startswith("finished")]


def test_reprs(kernel):
    reply, out = kernel.run("ctx")
    data = [m for m in out if m["msg_type"] == "execute_result"][0]["content"]["data"]
    assert data["text/plain"].startswith("ClusterContext(backend='native', address='tcp://127.0.0.1:")
    assert "<table" in data["text/html"] and "engines" in data["text/html"]
    reply, out = kernel.run("r = jpar.put(b'x' * 1000)\nr")
    data = [m for m in out if m["msg_type"] == "execute_result"][0]["content"]["data"]
    assert data["text/plain"].startswith("ObjectRef(") and "ready" in data["text/html"]
    reply, out = kernel.run("%jpar status")
    data = [m for m in out if m["msg_type"] == "execute_result"][0]["content"]["data"]
    assert "engine" in data["text/plain"] and "<table" in data["text/html"]


def test_jpar_free_releases_what_the_out_history_holds(kernel):
    ok(*kernel.run(
        "import numpy as np\n"
        "def _store_bytes():\n"
        "    jpar.hooks.release_now()\n"
        "    s = next(iter(jpar.hooks.store_statistics().values()))\n"
        "    return s.bytes_used + s.held_bytes\n"
        "_before = _store_bytes()"))
    ok(*kernel.run("jpar.put(np.ones(4_000_000))"))                        # a ref kept as Out[n]
    ok(*kernel.run("jpar.get(jpar.put(np.arange(4_000_000.0)))[:10]"))    # a view on store memory
    reply, out = kernel.run("print(_store_bytes() - _before)")
    ok(reply, out)
    assert int(stream_text(out)) >= 2 * 32_000_000          # both still pinned by the history
    reply, out = kernel.run("%jpar free\nprint(sum(isinstance(v, jpar.ObjectRef) for v in Out.values()))")
    ok(reply, out)
    message, left = stream_text(out).strip().splitlines()
    assert int(message.split("dropped ")[1].split()[0]) >= 2 and left == "0"
    reply, out = kernel.run(
        "deadline = time.monotonic() + 10\n"
        "while _store_bytes() - _before > 1_000_000 and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)   # a segment freed while mapped is recycled at the head's next tick\n"
        "print(_store_bytes() - _before)")
    ok(reply, out)
    assert int(stream_text(out)) <= 1_000_000


def _send(kernel, channel, msg_type: str, content: dict, subshell: str | None = None, metadata=None) -> str:
    msg = kernel.kc.session.msg(msg_type, content, metadata=metadata or {})
    if subshell:
        msg["header"]["subshell_id"] = subshell
    getattr(kernel.kc, channel).send(msg)
    return msg["header"]["msg_id"]


def test_sidebar_comm_answers_on_a_subshell_while_a_cell_is_busy(kernel):
    """The JupyterLab sidebar's comm (jpar.notebook.sidebar_comm), as JupyterLab opens it: on a
    subshell, so this notebook's pending tasks per cell are known, and cancellable, mid-cell."""
    _send(kernel, "control_channel", "create_subshell_request", {})
    reply = kernel.kc.get_control_msg(timeout=10)
    assert reply["msg_type"] == "create_subshell_reply", reply
    subshell = reply["content"]["subshell_id"]
    busy = _send(kernel, "shell_channel", "execute_request",
                 {"code": "@jpar.remote\ndef slow(i):\n    time.sleep(60)\n"
                          "refs = [slow.remote(i) for i in range(5)]\njpar.get(refs)", "silent": False,
                  "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                 metadata={"cellId": "cell-busy"})
    kernel.wait_for(lambda m: m["parent_header"].get("msg_id") == busy and m["msg_type"] == "execute_input")
    comm_id = "sidebar-test"
    _send(kernel, "shell_channel", "comm_open", {"comm_id": comm_id, "target_name": "jpar.sidebar", "data": {}},
          subshell)

    def ask(request: dict, while_busy: bool = True) -> dict:
        _send(kernel, "shell_channel", "comm_msg", {"comm_id": comm_id, "data": request}, subshell)
        t, m = kernel.wait_for(lambda m: m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
                               and m["content"]["data"].get("id") == request["id"], timeout=10)
        if while_busy:   # the subshell answered while the busy cell (60 s of tasks) still ran
            assert not kernel.ended_by(busy, t) and busy not in kernel.replies, request
        return m["content"]["data"]

    info = ask({"request": "info", "id": 1})
    assert info["attached"] and info["driver"] >= 1 and info["cluster"]["address"].startswith("tcp://")
    assert info["pid"] == kernel.pid()
    cell = next(c for c in info["cells"] if c["cell_id"] == "cell-busy")
    assert cell["pending"] == 5 and cell["names"] == {"slow": 5} and cell["msg_id"] == busy
    assert ask({"request": "nonsense", "id": 2})["error"].startswith("unknown request")
    assert ask({"request": "cancel", "id": 3, "cell_id": "cell-busy"}, while_busy=False)["cancelled"] == 5
    reply = kernel.wait(busy, timeout=20)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "TaskCancelledError"
    assert ask({"request": "info", "id": 4}, while_busy=False)["pending"] == 0
    _send(kernel, "shell_channel", "comm_close", {"comm_id": comm_id, "data": {}}, subshell)
    _send(kernel, "control_channel", "delete_subshell_request", {"subshell_id": subshell})
    assert kernel.kc.get_control_msg(timeout=10)["content"]["status"] == "ok"


def test_sidebar_comm_pushes_while_a_cell_runs_and_publishes_no_status(kernel):
    """The sidebar's comm as the sidebar now opens it: on the main shell while the kernel is idle.
    While a cell then runs, the kernel pushes that cell's pending tasks (names, counts, task ids)
    on its own, and publishes no status message but the cell's: JupyterLab shows the last status
    it saw as the notebook's busy/idle state. The pushed ids cancel the cell's tasks through the
    Jupyter server's side (jpar.labserver.Hub), with no request to the busy kernel."""
    from jpar.config import Config
    from jpar.labserver import Hub

    comm_id = "sidebar-push-test"
    opened = _send(kernel, "shell_channel", "comm_open", {"comm_id": comm_id, "target_name": "jpar.sidebar", "data": {}})

    def pushes():
        return [(t, m["content"]["data"]) for t, m in list(kernel.log)
                if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
                and m["content"]["data"].get("push") == "info"]

    kernel.wait_for(lambda m: m["parent_header"].get("msg_id") == opened and m["msg_type"] == "status"
                    and m["content"]["execution_state"] == "idle")
    kernel.wait_for(lambda m: m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id)
    first = pushes()[0][1]
    assert first["attached"] and first["pending"] == 0 and first["pid"] == kernel.pid(), first
    busy = _send(kernel, "shell_channel", "execute_request",
                 {"code": "@jpar.remote\ndef nap(i):\n    time.sleep(60)\n"
                          "naps = [nap.remote(i) for i in range(4)]\njpar.get(naps)", "silent": False,
                  "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                 metadata={"cellId": "cell-naps"})
    t_started, _ = kernel.wait_for(lambda m: m["parent_header"].get("msg_id") == busy
                                   and m["msg_type"] == "execute_input")
    t_pushed, push = kernel.wait_for(
        lambda m: m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
        and any(c["cell_id"] == "cell-naps" and c["pending"] == 4 for c in m["content"]["data"].get("cells", ())),
        timeout=10)
    cell = next(c for c in push["content"]["data"]["cells"] if c["cell_id"] == "cell-naps")
    assert cell["names"] == {"nap": 4} and cell["msg_id"] == busy, cell
    assert busy not in kernel.replies                     # pushed while the cell runs
    address = push["content"]["data"]["cluster"]["address"]
    result = Hub(Config.from_env()).cancel_tasks(address, cell["tasks"])
    assert result["cancelled"] == 4, (result, cell["tasks"])
    reply = kernel.wait(busy, timeout=20)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "TaskCancelledError"
    t_end = max(t for t, m in list(kernel.log) if m["parent_header"].get("msg_id") == busy)
    during = [m for t, m in list(kernel.log) if t_started <= t <= t_end and m["msg_type"] == "status"]
    assert all(m["parent_header"].get("msg_id") == busy for m in during), \
        [(m["parent_header"].get("msg_type"), m["content"]) for m in during]
    try:    # a later push says the cell's tasks are gone
        kernel.wait_for(lambda m: m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
                        and m["content"]["data"].get("push") == "info" and m["content"]["data"]["pending"] == 0,
                        timeout=10, since=t_pushed)
    except TimeoutError:
        raise AssertionError(f"no push with pending 0 after the cancel: {pushes()[-1]}") from None
    _send(kernel, "shell_channel", "comm_close", {"comm_id": comm_id, "data": {}})


def test_noblock_remote_cell_result_turns_done_when_the_engines_finish(kernel, tmp_path):
    """A ``%%remote --noblock`` cell's result is a live line: it says "0/2 done" when shown and then
    "done" once both engines finished, after the cell itself has ended (widget updates over the comm).
    The engines finish when this test lets them (a file it writes once it saw "0/2 done")."""
    go = str(tmp_path / "go")
    reply, out = kernel.run("%%remote --noblock\nimport os, time\n" + _wait_file_code(go) + "'slept'")
    ok(reply, out)
    result = next(m for m in out if m["msg_type"] == "execute_result")
    data = result["content"]["data"]
    assert "0/2 done" in data["text/plain"], data
    model_id = data["application/vnd.jupyter.widget-view+json"]["model_id"]
    open(go, "w").close()

    def label_says(m, text):
        return (m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == model_id
                and text in str(((m["content"]["data"] or {}).get("state") or {}).get("value", "")))

    kernel.wait_for(lambda m: label_says(m, ": done>"), timeout=30)
    reply, out = kernel.run("print(repr(_))")     # the handle itself (Out) agrees
    assert stream_text(out).strip().endswith(": done>"), out


def test_zz_kernel_shutdown_stops_its_cluster(kernel):
    proc = psutil.Process(kernel.pid())
    children = proc.children(recursive=True)
    assert len(children) >= 3, children   # head + 2 engines
    kernel.shutdown()
    gone, alive = psutil.wait_procs(children + [proc], timeout=20)
    assert not alive, f"left behind: {alive}"

