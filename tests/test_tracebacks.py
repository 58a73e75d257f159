"""Remote tracebacks name the user's file or cell and show the failing line.

Functions defined in ``__main__``, a notebook cell or a test module travel by value, and
cloudpickle 3.1.3 renames such code ``<dynamic-code>``; jpar's pickler keeps the filename
and carries the lines (see jpar.runtime.wire.serialization). Checked in a test module, in a ``python -c``
script, in a script file, in a fresh interpreter that cannot read the source, and in a real
kernel.
"""

from __future__ import annotations

import linecache
import subprocess
import sys
import textwrap

import pytest

import jpar
from jpar.runtime.wire import serialization

pytestmark = pytest.mark.timeout(120)


def _helper_that_fails(x):
    raise ValueError(f"helper saw {x}")  # the helper's own line


@jpar.remote
def _calls_helper(x):
    return _helper_that_fails(x) + 1  # the task's line


def test_function_defined_in_a_test_module(cluster):
    with pytest.raises(ValueError) as info:
        jpar.get(_calls_helper.remote(3), timeout=60)
    tb = info.value.remote_traceback
    assert "<dynamic-code>" not in tb
    assert f'File "{__file__}"' in tb
    assert "return _helper_that_fails(x) + 1  # the task's line" in tb
    assert 'raise ValueError(f"helper saw {x}")  # the helper\'s own line' in tb


def _run_script(args: list[str], cwd=None) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=90, cwd=cwd)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


SCRIPT = textwrap.dedent('''
    import jpar
    jpar.init(num_engines=1)

    @jpar.remote
    def parse(text):
        number = int(text)
        return number

    try:
        jpar.get(parse.remote("not a number"), timeout=60)
    except ValueError as exc:
        print(exc.remote_traceback)
    finally:
        jpar.shutdown()
''')


def test_python_c_script_keeps_its_filename():
    tb = _run_script(["-c", SCRIPT])
    assert "<dynamic-code>" not in tb
    line = SCRIPT.splitlines().index("    number = int(text)") + 1
    assert f'File "<string>", line {line}, in parse' in tb


def test_script_file_shows_its_lines(tmp_path):
    path = tmp_path / "parse_numbers.py"
    path.write_text(SCRIPT)
    tb = _run_script([str(path)], cwd=tmp_path)
    assert f'File "{path}", line' in tb and "in parse" in tb
    assert "number = int(text)" in tb


def test_a_process_that_cannot_read_the_source_gets_the_lines():
    """What an engine on another host, or any engine for a notebook cell, sees."""
    filename = "<cell-that-only-the-driver-knows>"
    source = "def fails(x):\n    y = x * 2\n    raise KeyError(y)  # the failing line\n"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    try:
        ns: dict = {"__name__": "__main__"}
        exec(compile(source, filename, "exec"), ns)
        blob = serialization.cloud_dumps(ns["fails"])
    finally:
        del linecache.cache[filename]
    probe = textwrap.dedent('''
        import pickle, sys, traceback
        fn = pickle.loads(sys.stdin.buffer.read())
        try:
            fn(4)
        except KeyError:
            print(traceback.format_exc())
    ''')
    out = subprocess.run([sys.executable, "-c", probe], input=blob, capture_output=True, timeout=60)
    tb = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()
    assert f'File "{filename}", line 3, in fails' in tb
    assert "raise KeyError(y)  # the failing line" in tb


def test_registered_lines_do_not_shadow_a_readable_file(tmp_path):
    """An engine that reads the same file itself registers nothing (its own lines stay whole)."""
    path = tmp_path / "mod_on_disk.py"
    path.write_text("import os\n\ndef f():\n    return os.getpid()\n")
    ns: dict = {"__name__": "__main__"}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    blob = serialization.cloud_dumps(ns["f"])
    linecache.checkcache(str(path))
    before = linecache.cache.get(str(path))
    serialization.loads(blob)
    after = linecache.cache.get(str(path))
    assert after is before or after[1] is not None   # read from disk (has an mtime), never a stand-in


def test_notebook_cell_traceback_in_a_real_kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        def run(code: str) -> str:
            msg_id = kc.execute(code)
            texts = []
            while True:
                msg = kc.get_iopub_msg(timeout=90)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    texts.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    texts.append("\n".join(msg["content"]["traceback"]))
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(texts)

        run("import jpar\njpar.init(num_engines=1)")
        run("def scale(v):\n    return v / 0  # divide in a helper cell\n")
        run("@jpar.remote\ndef task(v):\n    return scale(v) + 1  # the task cell\n")
        out = run("try:\n    jpar.get(task.remote(5), timeout=60)\n"
                  "except ZeroDivisionError as exc:\n    print(exc.remote_traceback)\n")
        run("jpar.shutdown()")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "<dynamic-code>" not in out
    assert "return scale(v) + 1  # the task cell" in out
    assert "return v / 0  # divide in a helper cell" in out
    assert "ipykernel" in out or "<ipython-input" in out   # the cell's own filename, as IPython names it
