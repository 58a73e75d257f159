"""Remote output in a notebook: which cell it lands under, how lines are prefixed and when they show.

The notebook layer's router and cell tracker run in the kernel process; these tests drive them the
way the driver's receiver thread and the kernel's submit hook do, with stand-ins for what they read
of ipykernel (``get_parent()``, and ipykernel 7's per-thread parent on its output streams). The
ipykernel 6 path (stream messages published on iopub) is covered with a real Jupyter session in
test_mutation_killers.py. Found by sampling the mutants of jpar/notebook/routing.py
(tests/mutation_sample.py).
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from jpar.notebook.routing import Cell, CellTracker, OutputRouter
from jpar.runtime.wire.protocol import OutputRecord

pytestmark = pytest.mark.timeout(30)


class Stream:
    """An ipykernel 7 OutStream as the router uses it: writes tagged with the calling thread's parent."""

    def __init__(self):
        self._parent = threading.local()
        self.writes: list[tuple] = []

    def set_thread_parent(self, parent):
        old = getattr(self._parent, "value", None)
        self._parent.value = parent
        return old

    def reset_thread_parent(self, token):
        self._parent.value = token

    def write(self, text):
        self.writes.append((getattr(self._parent, "value", None), text))

    def flush(self):
        pass


class Kernel:
    """What CellTracker reads of the kernel: the parent header of the request being handled."""

    def __init__(self, parent):
        self.parent = parent

    def get_parent(self):
        return self.parent


def header(n: int) -> dict:
    return {"msg_id": f"execute-{n}", "msg_type": "execute_request"}


@pytest.fixture
def kernel7(monkeypatch):
    """A router in ipykernel 7 mode, and its stdout and stderr."""
    out, err = Stream(), Stream()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    router = OutputRouter(Kernel(header(0)))
    monkeypatch.undo()
    assert router.mode == "thread_parent"
    yield router, out, err
    router.close()


def rec(task, engine, name, stream, text):
    return OutputRecord(task, engine, 4242, name, stream, text)


def test_output_lands_under_the_submitting_cell_on_its_own_stream(kernel7):
    router, out, err = kernel7
    kernel = Kernel(header(1))
    tracker = CellTracker(kernel)
    cell = tracker.start_cell()
    assert cell.parent == header(1)
    assert tracker.on_submit(11) is cell and tracker.on_submit(12) is cell
    assert cell.tasks == [11, 12]
    tracker.end_cell()
    kernel.parent = header(2)                  # the next cell runs while the old tasks still print
    tracker.start_cell()
    router.handle(rec(11, 1, "f", "stdout", "hello\n"), cell)
    router.handle(rec(12, 0, "g", "stderr", "oops\n"), cell)
    assert out.writes == [(header(1), "[engine 1: f] hello\n")]
    assert err.writes == [(header(1), "[engine 0: g] oops\n")]
    router.handle(rec(11, 1, "f", "stdout", "more\n"), cell)
    assert out.writes[-1] == (header(1), "[engine 1: f] more\n")


def test_remote_cell_output_is_labelled_with_the_engine_only(kernel7):
    router, out, _ = kernel7
    router.handle(rec(3, 2, "remote-cell-7", "stdout", "x = 1\n"), Cell(1, header(1)))
    assert out.writes == [(header(1), "[engine 2] x = 1\n")]


def test_every_line_of_a_chunk_is_prefixed_and_written_before_handle_returns(capsys):
    router = OutputRouter(None)                # plain streams: no kernel
    try:
        router.handle(rec(7, 1, "f", "stdout", "a\nb\n"), None)
        # complete lines are out at once, so a task's output shows before get() returns its value
        assert capsys.readouterr().out == "[engine 1: f] a\n[engine 1: f] b\n"
    finally:
        router.close()


def test_a_line_split_over_chunks_shows_once_with_one_prefix(capsys):
    router = OutputRouter(None)
    router.handle(rec(7, 1, "f", "stdout", "abc"), None)
    router.handle(rec(7, 1, "f", "stdout", "def\nxy"), None)
    router.close()                             # the cell ends: the unfinished "xy" is shown too
    assert capsys.readouterr().out == "[engine 1: f] abcdef\n[engine 1: f] xy"


def test_an_unfinished_stderr_line_goes_to_stderr(capsys):
    router = OutputRouter(None)
    router.handle(rec(7, 1, "f", "stderr", "warning: "), None)
    router.drain()
    router.close()
    got = capsys.readouterr()
    assert (got.out, got.err) == ("", "[engine 1: f] warning: ")


def test_an_unfinished_line_shows_after_a_short_while_without_the_cell_ending(capsys):
    router = OutputRouter(None)
    try:
        router.handle(rec(7, 1, "f", "stdout", "progress: 10%"), None)
        deadline = time.monotonic() + 5
        seen = ""
        while time.monotonic() < deadline and not seen:
            time.sleep(0.05)
            seen = capsys.readouterr().out
        assert seen == "[engine 1: f] progress: 10%"
    finally:
        router.close()


def test_unfinished_lines_of_two_tasks_do_not_run_together(capsys):
    router = OutputRouter(None)
    router.handle(rec(7, 1, "f", "stdout", "a"), None)
    router.handle(rec(8, 2, "g", "stdout", "b"), None)
    router.close()
    assert capsys.readouterr().out == "[engine 1: f] a\n[engine 2: g] b"


def test_unfinished_lines_of_two_cells_stay_in_their_cells(kernel7):
    router, out, _ = kernel7
    tracker = CellTracker(Kernel(header(1)))
    first = tracker.start_cell()
    tracker.end_cell()
    tracker.kernel.parent = header(2)
    second = tracker.start_cell()
    assert first.key != second.key
    router.handle(rec(7, 1, "f", "stdout", "a"), first)
    router.handle(rec(8, 2, "g", "stdout", "b"), second)
    router.drain()
    assert sorted(out.writes, key=lambda w: w[0]["msg_id"]) == [(header(1), "[engine 1: f] a"),
                                                                  (header(2), "[engine 2: g] b")]


def test_output_with_a_parent_but_no_ipykernel_streams_is_written_locally(capsys):
    """A kernel object without ipykernel's streams or iopub (plain mode): output is still shown."""
    router = OutputRouter(None)
    router.handle(rec(7, 1, "f", "stdout", "hi\n"), Cell(1, header(1)))
    router.close()
    assert capsys.readouterr().out == "[engine 1: f] hi\n"


def test_submissions_outside_any_cell_go_under_the_current_request(kernel7):
    router, out, _ = kernel7
    kernel = Kernel(header(5))
    tracker = CellTracker(kernel)
    loose = tracker.on_submit(21)              # e.g. from a comm handler or a thread
    assert loose.parent == header(5) and loose.tasks is None
    same = tracker.on_submit(22)
    assert same is loose                       # same request: one loose cell
    kernel.parent = header(6)
    other = tracker.on_submit(23)
    assert other is not loose and other.parent == header(6) and other.key != loose.key
    router.handle(rec(21, 0, "f", "stdout", "x\n"), loose)
    assert out.writes == [(header(5), "[engine 0: f] x\n")]


def test_after_a_cell_ends_submissions_are_loose_and_the_cell_collects_no_more_tasks():
    tracker = CellTracker(Kernel(header(1)))
    cell = tracker.start_cell()
    tracker.on_submit(1)
    tracker.end_cell()
    assert tracker.current is None and cell.tasks is None   # an interrupt now cancels nothing of it
    loose = tracker.on_submit(2)
    assert loose is not cell and loose.parent == header(1) and cell.tasks is None


def test_a_process_that_never_closes_its_router_still_exits():
    """The router's output thread must not keep a kernel process alive at exit."""
    code = textwrap.dedent("""
        from jpar.notebook.routing import OutputRouter
        from jpar.runtime.wire.protocol import OutputRecord
        r = OutputRouter(None)
        r.handle(OutputRecord(1, 0, 1, "f", "stdout", "no newline"), None)
        print("done", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "done" in r.stdout


def test_ipykernel6_bursts_are_coalesced_into_few_messages_in_order(monkeypatch):
    """ipykernel 6 (no per-thread parent): stream messages published by hand, a burst coalesced."""
    sent = []

    class Session:
        def send(self, socket, msg_type, content, parent=None, ident=None):
            sent.append((msg_type, content["name"], content["text"], parent["msg_id"], ident))

    class Kernel6:
        session, iopub_socket = Session(), object()

    monkeypatch.setattr(sys, "stdout", io.StringIO())   # ipykernel 6's OutStream: no set_thread_parent
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    router = OutputRouter(Kernel6())
    monkeypatch.undo()
    assert router.mode == "publish"
    cell = Cell(1, header(1))
    for i in range(200):
        router.handle(rec(7, 1, "f", "stdout", f"line {i}\n"), cell)
    router.handle(rec(7, 1, "f", "stderr", "err\n"), cell)
    router.close()
    out = [s for s in sent if s[1] == "stdout"]
    assert "".join(s[2] for s in out) == "".join(f"[engine 1: f] line {i}\n" for i in range(200))
    assert [s[1:] for s in sent if s[1] == "stderr"] == [("stderr", "[engine 1: f] err\n", "execute-1", b"stream.stderr")]
    assert all(s[0] == "stream" and s[3] == "execute-1" and s[4] == b"stream.stdout" for s in out)
    assert len(out) < 100, f"{len(out)} messages for a burst of 200 lines"
