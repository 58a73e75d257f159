"""The notebook layer driven through IPython directly (no kernel): magics, routing, interrupt, reprs."""

from __future__ import annotations

import subprocess
import sys
import time

import IPython  # noqa: F401  (the test extra installs it: a missing one is an error, not a skip)
import pytest

import jpar
from jpar.notebook.reprs import PerEngine, StatusTable
from jpar.notebook.routing import Cell, OutputRouter
from jpar.runtime.wire.protocol import OutputRecord

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ip():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.history_manager.enabled = False
    shell.run_line_magic("load_ext", "jpar")
    result = shell.run_cell("import jpar\n%jpar init 2")
    assert result.success, result.error_in_exec
    yield shell
    shell.run_line_magic("unload_ext", "jpar")
    jpar.shutdown()
    InteractiveShell.clear_instance()
    import psutil

    # every child but multiprocessing's resource tracker, which a Dask LocalCluster of an earlier
    # module started and which lives as long as this process, by design
    kids = [p for p in psutil.Process().children(recursive=True)
            if "multiprocessing.resource_tracker" not in " ".join(p.cmdline())]
    _, alive = psutil.wait_procs(kids, timeout=15)
    assert not alive, f"left behind: {alive}"


def run(ip, code: str):
    result = ip.run_cell(code)
    return result


def ok(ip, code: str):
    result = ip.run_cell(code)
    assert result.success, (result.error_before_exec, result.error_in_exec)
    return result.result


# ---------------------------------------------------------------- the notebook stack stays out of engines
def test_importing_jpar_and_engine_ns_does_not_import_ipython():
    code = ("import sys, jpar, jpar.notebook.engine_ns; "
            "assert 'IPython' not in sys.modules and 'ipykernel' not in sys.modules, 'IPython imported'; "
            "assert callable(jpar.load_ipython_extension)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_engines_never_import_ipython(ip):
    ok(ip, "%%remote\nimport sys\nx_probe = 1")
    assert ok(ip, "%%remote --targets 0\nimport sys\n'IPython' in sys.modules or 'ipykernel' in sys.modules") is False


# ---------------------------------------------------------------- %%remote
def test_remote_namespaces_persist_and_show_last_value_per_engine(ip):
    ok(ip, "%%remote\nimport os\nmine = os.getpid()")
    values = ok(ip, "%%remote\nmine")
    assert isinstance(values, PerEngine) and sorted(values) == [0, 1]
    pids = {e["id"]: e["pid"] for e in jpar.hooks.engines()}
    assert values == pids
    assert repr(values) == f"[engine 0] {pids[0]}\n[engine 1] {pids[1]}"
    assert ok(ip, "%%remote --targets 1\nmine + 0") == pids[1]
    assert ok(ip, "%%remote --targets 0\nmine = 'changed'") is None
    assert ok(ip, "%%remote --targets 0-1\nmine") == {0: "changed", 1: pids[1]}


def test_remote_targets(ip):
    assert ok(ip, "%%remote --targets 0,1\n1") == {0: 1, 1: 1}
    assert ok(ip, "%%remote --targets any\n2") == 2
    for bad in ("7", "x", "0,9"):
        result = run(ip, f"%%remote --targets {bad}\n1")
        assert type(result.error_in_exec).__name__ == "UsageError"


def test_push_and_pull(ip):
    ok(ip, "data = list(range(10))")
    assert ok(ip, "%%remote --targets 0 --push data --pull total,n\ntotal = sum(data)\nn = len(data)") is None
    assert ip.user_ns["total"] == 45 and ip.user_ns["n"] == 10
    ok(ip, "%%remote --push data --pull data\ndata = data[:2]")
    assert ip.user_ns["data"] == {0: [0, 1], 1: [0, 1]}
    result = run(ip, "%%remote --targets 1 --pull not_there\n1")
    assert isinstance(result.error_in_exec, NameError)
    assert "not_there (engine 1)" in result.error_in_exec._render_traceback_()[0]
    assert type(run(ip, "%%remote --push nope\n1").error_in_exec).__name__ == "UsageError"


def test_noblock_returns_a_handle(ip):
    assert ok(ip, "%%remote --noblock -o job\nimport time\ntime.sleep(0.3)\n'done'") is None
    job = ip.user_ns["job"]
    assert repr(job).startswith("<RemoteCell remote-cell-")
    assert job.get(timeout=20) == {0: "done", 1: "done"}
    assert job.ready()
    handle = ok(ip, "%%remote --targets 0 --noblock --pull later\nlater = 5")
    assert handle.get(timeout=20) is None and ip.user_ns["later"] == 5


def test_timeout_cancels_the_cell(ip):
    # the cell would sleep past this test's timeout: the engines answer again only if it was cancelled
    result = run(ip, "%%remote --timeout 0.5\nimport time\ntime.sleep(600)")
    assert isinstance(result.error_in_exec, jpar.GetTimeoutError)
    assert "cancelled it on engines [0, 1]" in result.error_in_exec._render_traceback_()[0]
    assert ok(ip, "%%remote --timeout 20\n'alive'") == {0: "alive", 1: "alive"}


def test_error_on_one_engine_shows_its_traceback_with_cell_lines(ip):
    result = run(ip, "%%remote --targets 1\ndef inner():\n    return 1 / 0\ninner()")
    err = result.error_in_exec
    assert isinstance(err, ZeroDivisionError) and isinstance(err, jpar.TaskError)
    (text,) = err._render_traceback_()
    assert text.startswith("[engine 1] Traceback (most recent call last):")
    assert 'File "<remote-cell-' in text and "inner()" in text and "return 1 / 0" in text
    assert "jpar" not in text.replace("[engine 1]", "")


def test_errors_on_several_engines_fail_the_cell_once(ip):
    from jpar.notebook.magics import RemoteCellError

    result = run(ip, "%%remote\nraise ValueError('bad')")
    err = result.error_in_exec
    assert isinstance(err, RemoteCellError) and isinstance(err, jpar.TaskError)
    assert sorted(err.errors) == [0, 1]
    lines = err._render_traceback_()
    assert [line.split("]")[0] for line in lines] == ["[engine 0", "[engine 1"]
    assert all("ValueError: bad" in line and "raise ValueError('bad')" in line for line in lines)


def test_syntax_error_is_reported_locally(ip, capsys):
    capsys.readouterr()
    result = run(ip, "%%remote\nx = 1\n1 +")
    assert type(result.error_in_exec).__name__ == "UsageError"
    err = capsys.readouterr().err
    assert '"<remote-cell-' in err and "line 2" in err and "1 +" in err and "SyntaxError" in err
    assert "Traceback" not in err


def test_help_has_examples(ip):
    doc = ip.find_cell_magic("remote").__doc__
    for needle in ("--targets", "--noblock", "--push", "--pull", "--timeout", "-o NAME", "Examples", "%%remote"):
        assert needle in doc
    assert "%jpar init 4" in ip.find_line_magic("jpar").__doc__


# ---------------------------------------------------------------- output routing
def test_remote_output_is_labelled_per_engine(ip, capsys):
    capsys.readouterr()
    ok(ip, "%%remote\nimport sys\nprint('to out')\nprint('to err', file=sys.stderr)")
    cap = capsys.readouterr()
    assert sorted(cap.out.splitlines()) == ["[engine 0] to out", "[engine 1] to out"]
    assert sorted(cap.err.splitlines()) == ["[engine 0] to err", "[engine 1] to err"]


def test_task_output_is_labelled_with_the_task_name(ip, capsys):
    ok(ip, "@jpar.remote\ndef shout(i):\n    print('a', i, 'b', sep='-')\n    return i\n")
    capsys.readouterr()
    ok(ip, "shouted = jpar.get(shout.options(placement=0).remote(3))")
    assert ip.user_ns["shouted"] == 3
    assert capsys.readouterr().out == "[engine 0: shout] a-3-b\n"


def _chunk(text, task=1, engine=0, stream="stdout", name="f"):
    return OutputRecord(task, engine, 123, name, stream, text)


def test_router_prefixes_lines_and_keeps_tasks_apart(capsys):
    router = OutputRouter(None)
    cell = Cell(1, None)
    for c in [_chunk("he"), _chunk("llo\nwor"), _chunk("x\n", task=2, engine=1, name="remote-cell-3"), _chunk("ld\n")]:
        router.handle(c, cell)
    router.drain()
    assert capsys.readouterr().out == "[engine 0: f] hello\n[engine 1] x\n[engine 0: f] world\n"
    router.handle(_chunk("no newline", task=5), cell)
    router.drain()
    router.handle(_chunk(" more\n", task=5), cell)
    router.handle(_chunk("partial", task=6), cell)
    router.drain()
    router.handle(_chunk("other\n", task=7), cell)
    router.close()
    assert capsys.readouterr().out == ("[engine 0: f] no newline more\n[engine 0: f] partial"
                                       "\n[engine 0: f] other\n")


def test_router_shows_unfinished_lines_after_a_moment(capsys):
    router = OutputRouter(None)
    router.handle(_chunk("progress 10%"), Cell(1, None))
    deadline = time.monotonic() + 5
    out = ""
    while "progress" not in out and time.monotonic() < deadline:
        time.sleep(0.05)
        out += capsys.readouterr().out
    router.close()
    assert out == "[engine 0: f] progress 10%"


class FakeOutStream:
    """ipykernel 7's OutStream as far as the router uses it: a per-thread parent header."""

    def __init__(self, name, log):
        import contextvars

        self.name, self.log = name, log
        self._parent = contextvars.ContextVar("parent", default=None)

    def set_thread_parent(self, parent):
        return self._parent.set(parent)

    def reset_thread_parent(self, token):
        self._parent.reset(token)

    def write(self, text):
        self.log.append((self._parent.get()["msg_id"], self.name, text))

    def flush(self):
        pass


def test_router_writes_each_cells_output_with_that_cells_parent(monkeypatch):
    log: list = []
    monkeypatch.setattr(sys, "stdout", FakeOutStream("stdout", log))
    monkeypatch.setattr(sys, "stderr", FakeOutStream("stderr", log))
    router = OutputRouter(None)
    assert router.mode == "thread_parent"
    monkeypatch.undo()
    a, b = Cell(1, {"msg_id": "A"}), Cell(2, {"msg_id": "B"})
    router.handle(_chunk("one\n", task=1), a)
    router.handle(_chunk("two\n", task=2, stream="stderr"), b)
    router.handle(_chunk("late\n", task=1), a)
    router.close()
    assert log == [("A", "stdout", "[engine 0: f] one\n"), ("B", "stderr", "[engine 0: f] two\n"),
                   ("A", "stdout", "[engine 0: f] late\n")]


# ---------------------------------------------------------------- interrupt
@pytest.mark.parametrize("when", ["at_once", "once_running"])
def test_keyboard_interrupt_cancels_the_cells_tasks(ip, capsys, tmp_path, when):
    """Ctrl-C in a cell cancels the tasks it submitted: their refs raise TaskCancelledError, the
    running ones are stopped (the marker they would write after their sleep never appears, and
    each engine runs a new task long before that sleep could end) and the engines stay usable.
    ``at_once``: the interrupt comes right after ``.remote()`` (the tasks may not have reached an
    engine yet); ``once_running``: after two of the tasks wrote that they started."""
    ok(ip, "@jpar.remote\ndef sleepy(i, where):\n    import pathlib, time\n"
           "    pathlib.Path(where, f'started-{i}').touch()\n    time.sleep(600)\n"
           "    pathlib.Path(where, f'finished-{i}').touch()\n")
    where = str(tmp_path)
    wait_running = ("import os, time\n_deadline = time.monotonic() + 30\n"
                    f"while len([f for f in os.listdir({where!r}) if f.startswith('started-')]) < 2:\n"
                    "    assert time.monotonic() < _deadline, 'the tasks never started'\n"
                    "    time.sleep(0.01)\n") if when == "once_running" else ""
    capsys.readouterr()
    result = run(ip, f"pending = [sleepy.remote(i, {where!r}) for i in range(3)]\n{wait_running}raise KeyboardInterrupt")
    assert isinstance(result.error_in_exec, KeyboardInterrupt), result.error_in_exec
    assert "KeyboardInterrupt: cancelled 3 jpar tasks this cell submitted" in capsys.readouterr().out
    for ref in ip.user_ns["pending"]:
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(ref, timeout=20)
    # each engine runs a new task: none of them is still sleeping in sleepy (600 s)
    assert ok(ip, "%%remote --timeout 20\n'still usable'") == {0: "still usable", 1: "still usable"}
    assert not [f for f in tmp_path.iterdir() if f.name.startswith("finished-")]
    if when == "once_running":
        assert len([f for f in tmp_path.iterdir() if f.name.startswith("started-")]) >= 2


def test_keyboard_interrupt_without_tasks_shows_the_usual_traceback(ip, capsys):
    result = run(ip, "raise KeyboardInterrupt")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert "cancelled" not in capsys.readouterr().out


# ---------------------------------------------------------------- %jpar and reprs
def test_status_table(ip):
    table = ok(ip, "%jpar status")
    assert isinstance(table, StatusTable)
    text = repr(table)
    assert "2 engines" in text and "engine" in text.splitlines()[4]
    assert text.count("\n") == 6
    assert "<table>" in table._repr_html_() and "<th>store</th>" in table._repr_html_()


def test_context_and_ref_reprs(ip):
    ctx = ok(ip, "jpar.init()")
    assert repr(ctx).startswith("ClusterContext(backend='native', address='tcp://")
    html = ctx._repr_html_()
    assert "<table" in html and "engine" in html
    ref = ok(ip, "jpar.put(b'x' * 2000)")
    assert repr(ref).startswith("ObjectRef(")
    assert "ready" in ref._repr_html_()


def test_unload_and_load_again(ip):
    ip.run_line_magic("unload_ext", "jpar")
    assert ip.find_cell_magic("remote") is None and ip.find_line_magic("jpar") is None
    assert KeyboardInterrupt not in ip.custom_exceptions
    ip.run_line_magic("load_ext", "jpar")
    assert ok(ip, "%%remote --targets 0\n'back'") == "back"


def test_shutdown_and_init_keep_the_hooks(ip, capsys):
    ok(ip, "%jpar shutdown")
    assert not jpar.is_initialized()
    assert "stopped" in capsys.readouterr().out
    ok(ip, "jpar.init(num_engines=2)")
    ok(ip, "@jpar.remote\ndef hi():\n    print('hi')\n")
    capsys.readouterr()
    ok(ip, "_ = jpar.get(hi.options(placement=1).remote())")
    assert capsys.readouterr().out == "[engine 1: hi] hi\n"
