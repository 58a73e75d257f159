"""Tests that kill the mutations that used to survive the suite (each one made and reverted by hand).

Each test names the mutation it kills. Scheduler rules are checked with no processes; the
others need a real cluster (or, for the ipykernel 6 output path, a real Jupyter session and
socket). See docs/internals/testing.md.
"""

from __future__ import annotations

import io
import os
import socket
import sys

import psutil
import pytest
import zmq
from jupyter_client.session import Session

import jpar
import jpar.backends.native
from jpar.runtime.wire import protocol as P
from jpar.notebook.routing import Cell, OutputRouter
from jpar.runtime.wire.protocol import OutputRecord
from jpar.runtime.head.scheduler import CancelOnEngine, Failure, Scheduler, SendFailure, TaskState, Transition

S = TaskState


def spec(tid, parent=0, retries=3):
    return P.TaskSpec(tid, 1, f"t{tid}", b"", (), 1, (("CPU", 1.0),), retries, False, parent, 0, -1)


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


# ---------------------------------------------------------------- scheduler: cancel(recursive=False)
def _parent_and_child():
    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.engine_added(0, "a", {"CPU": 1})     # two nodes of one CPU each
    s.engine_added(1, "b", {"CPU": 1})
    s.submit(1, [spec(1)])                 # the parent runs on one engine...
    s.submit(1, [spec(2, parent=1)])       # ...and the task it submitted on the other
    assert s.tasks[1].state is S.RUNNING and s.tasks[2].state is S.RUNNING
    return s


def test_cancel_not_recursive_leaves_the_children_running():
    """Kills: the scheduler ignoring ``recursive=False`` (cancelling the children anyway)."""
    s = _parent_and_child()
    child_engine = s.tasks[2].engine
    acts = s.cancel(1, force=False, recursive=False)
    assert {f.task_id for f in of(acts, SendFailure)} == {1}
    assert [c.task_id for c in of(acts, CancelOnEngine)] == [1]
    assert [(t.task_id, t.new) for t in of(acts, Transition)] == [(1, S.CANCELLED)]
    assert s.tasks[2].state is S.RUNNING and s.tasks[2].engine == child_engine
    assert 1 not in s.tasks


def test_cancel_recursive_reaches_running_grandchildren_with_force():
    """The other half: ``recursive=True`` cancels the whole subtree, and passes ``force`` on."""
    s = _parent_and_child()
    s.submit(1, [spec(3, parent=2)])       # a grandchild, queued (both engines busy)
    acts = s.cancel(1, force=True, recursive=True)
    assert {f.task_id for f in of(acts, SendFailure) if f.kind is Failure.CANCELLED} == {1, 2, 3}
    assert sorted((c.task_id, c.force) for c in of(acts, CancelOnEngine)) == [(1, True), (2, True)]
    assert s.tasks == {}


# ---------------------------------------------------------------- driver: HeadDiedError
@jpar.remote
def _sleep(seconds):
    import time

    time.sleep(seconds)
    return seconds


@pytest.mark.timeout(90)
def test_get_raises_head_died_error_when_the_head_is_killed():
    """Kills: the driver raising a plain ``ClusterError`` (or anything else) instead of ``HeadDiedError``."""
    jpar.init(num_engines=1)
    try:
        head = psutil.Process(jpar.backends.native.current_driver().conn["pid"])
        engines = head.children()
        ref = _sleep.remote(60)
        head.kill()
        with pytest.raises(jpar.HeadDiedError, match="jpar.init"):
            jpar.get(ref, timeout=30)
        # new work after the death: same error, no hang, and it says what happened and what to do
        with pytest.raises(jpar.HeadDiedError, match=r"^The cluster's head stopped answering \(it was shut down "
                                                     r"or crashed\)\. Call jpar\.init\(\) again"):
            jpar.get(_sleep.remote(0), timeout=30)
        _, alive = psutil.wait_procs(engines, timeout=20)
        assert alive == []
    finally:
        jpar.shutdown()


# ---------------------------------------------------------------- engine: retry_exceptions, cancel(force)
@pytest.fixture(scope="module")
def one_engine():
    jpar.init(num_engines=1)
    yield
    head = psutil.Process(jpar.backends.native.current_driver().conn["pid"])
    procs = [head, *head.children(recursive=True)]
    jpar.shutdown()
    _, alive = psutil.wait_procs(procs, timeout=15)
    assert alive == []


@jpar.remote
def _raise_counting(path, exc_name):
    with open(path, "a") as f:
        f.write("x")
    raise {"ValueError": ValueError, "KeyError": KeyError}[exc_name]("attempt")


@pytest.mark.timeout(60)
def test_only_the_listed_exceptions_are_retried(one_engine, tmp_path):
    """Kills: the engine retrying any exception when ``retry_exceptions`` lists some types."""
    f = _raise_counting.options(max_retries=2, retry_exceptions=[ValueError])
    other, listed = tmp_path / "other", tmp_path / "listed"
    with pytest.raises(KeyError):
        jpar.get(f.remote(str(other), "KeyError"), timeout=30)
    assert other.read_text() == "x"           # not listed: one attempt, no retry
    with pytest.raises(ValueError):
        jpar.get(f.remote(str(listed), "ValueError"), timeout=30)
    assert listed.read_text() == "xxx"        # listed: the first attempt and max_retries=2 more


@pytest.mark.timeout(60)
def test_exceptions_are_not_retried_without_retry_exceptions(one_engine, tmp_path):
    """Kills: ``retry_exceptions`` (default False) ignored, i.e. application errors retried like crashes."""
    path = tmp_path / "n"
    with pytest.raises(ValueError):
        jpar.get(_raise_counting.options(max_retries=3).remote(str(path), "ValueError"), timeout=30)
    assert path.read_text() == "x"


@jpar.remote
def _report_pid_then_sleep(port, seconds):
    import socket as _socket
    import time

    with _socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(str(os.getpid()).encode())
    time.sleep(seconds)
    return "finished"


@pytest.mark.timeout(90)
def test_force_cancel_kills_the_engine_running_the_task(one_engine):
    """Kills: ``cancel(force=True)`` no longer killing the engine (e.g. falling back to an interrupt)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.settimeout(30)
        ref = _report_pid_then_sleep.remote(srv.getsockname()[1], 120)
        conn, _ = srv.accept()                # the task is running now (an event, not a sleep)
        with conn:
            conn.settimeout(30)
            pid = int(conn.recv(64))
    engine = psutil.Process(pid)
    jpar.cancel(ref, force=True)
    engine.wait(timeout=20)                   # raises psutil.TimeoutExpired if the engine lives on
    with pytest.raises(jpar.TaskCancelledError):
        jpar.get(ref, timeout=20)
    assert jpar.get(_sleep.remote(0), timeout=60) == 0   # a fresh engine took its place


@pytest.mark.timeout(60)
def test_plain_cancel_interrupts_the_task_and_keeps_the_engine(one_engine):
    """The other half: ``cancel()`` without force interrupts the task; the engine process lives on."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.settimeout(30)
        ref = _report_pid_then_sleep.remote(srv.getsockname()[1], 120)
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(30)
            pid = int(conn.recv(64))
    jpar.cancel(ref)
    with pytest.raises(jpar.TaskCancelledError):
        jpar.get(ref, timeout=20)
    assert jpar.get(jpar.remote(os.getpid).remote(), timeout=30) == pid   # the same engine ran the next one
    assert psutil.pid_exists(pid)


# ---------------------------------------------------------------- notebook routing: ipykernel 6 path
def test_ipykernel6_output_is_published_with_the_cells_parent(monkeypatch):
    """Kills: the ipykernel 6 path (streams without ``set_thread_parent``) publishing with no parent
    header, which makes Jupyter show remote output under no cell. A real Jupyter session signs and
    sends on a real socket; the test reads the messages back as a front end would."""
    ctx = zmq.Context.instance()
    iopub = ctx.socket(zmq.XPUB)
    sub = ctx.socket(zmq.SUB)
    try:
        port = iopub.bind_to_random_port("tcp://127.0.0.1")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        assert iopub.poll(10_000), "the subscriber never connected"
        assert iopub.recv() == b"\x01"          # its subscription: publishing reaches it from now on
        session = Session(key=b"chaos-and-mutants")

        class Kernel:                            # what the router reads of ipykernel 6's kernel
            pass

        kernel = Kernel()
        kernel.session, kernel.iopub_socket = session, iopub
        monkeypatch.setattr(sys, "stdout", io.StringIO())   # ipykernel 6's OutStream: no set_thread_parent
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        router = OutputRouter(kernel)
        monkeypatch.undo()
        assert router.mode == "publish"
        parent = session.msg_header("execute_request")
        cell = Cell(1, parent)
        router.handle(OutputRecord(7, 1, 123, "f", "stdout", "hello\n"), cell)
        router.handle(OutputRecord(8, 0, 123, "g", "stderr", "oops\n"), cell)
        router.close()
        got = []
        while len(got) < 2:
            assert sub.poll(10_000), f"only {len(got)} message(s) published"
            _, parts = session.feed_identities(sub.recv_multipart())
            msg = session.deserialize(parts)
            got.append((msg["msg_type"], msg["parent_header"].get("msg_id"), msg["content"]))
        assert got == [("stream", parent["msg_id"], {"name": "stdout", "text": "[engine 1: f] hello\n"}),
                       ("stream", parent["msg_id"], {"name": "stderr", "text": "[engine 0: g] oops\n"})]
    finally:
        sub.close(linger=0)
        iopub.close(linger=0)


def test_output_of_a_cell_without_parent_is_written_locally(capsys):
    """No parent header (output outside any cell): written to the process's own streams."""
    router = OutputRouter(None)
    router.handle(OutputRecord(7, 1, 123, "f", "stdout", "loose\n"), None)
    router.close()
    assert capsys.readouterr().out == "[engine 1: f] loose\n"



@jpar.remote
def _interrupt_itself():
    raise KeyboardInterrupt("from the task")


@pytest.mark.timeout(60)
def test_a_task_raising_keyboardinterrupt_itself_fails_with_it_and_the_engine_goes_on(one_engine):
    """Kills: the engine losing the exception of a task that raises KeyboardInterrupt without being
    cancelled (found by sampling the engine's mutants)."""
    with pytest.raises(jpar.TaskError, match="KeyboardInterrupt: from the task") as info:
        jpar.get(_interrupt_itself.remote(), timeout=30)
    assert "Remote traceback of _interrupt_itself" in str(info.value)
    assert jpar.get(_sleep.remote(0), timeout=30) == 0
