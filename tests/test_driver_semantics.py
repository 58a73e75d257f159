"""What the driver promises about wait(), futures, task output and ref reprs, on a real cluster.

Found by sampling the mutants of jpar/runtime/driver/driver.py (tests/mutation_sample.py): each test says which
behaviour a surviving mutant broke without any test noticing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import psutil
import pytest

import jpar

pytestmark = pytest.mark.timeout(90)


@jpar.remote
def square(x):
    return x * x


@jpar.remote
def fail(msg):
    raise ValueError(msg)


@jpar.remote
def when_file_exists(path, value):
    """Returns ``value`` once ``path`` exists (the test opens the gate), at most 30 s later."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def test_a_read_only_call_without_a_cluster_names_itself_in_the_error():
    assert not jpar.is_initialized()
    with pytest.raises(jpar.NotInitializedError, match=r"^jpar\.cluster_resources\(\) needs a cluster"):
        jpar.cluster_resources()


def test_a_get_timeout_says_the_tasks_go_on_and_what_to_do(cluster):
    ref = when_file_exists.remote("/nonexistent/never", None)
    with pytest.raises(jpar.GetTimeoutError, match=r"timed out after 0\.3 s; the tasks keep running\. Call get\(\) "
                                                   r"again later, wait\(\) for some of them, or cancel\(\) them\."):
        jpar.get(ref, timeout=0.3)
    jpar.cancel(ref)


def test_wait_returns_once_num_returns_refs_are_ready_and_honours_its_timeout(cluster, tmp_path):
    gate = tmp_path / "gate"
    gated = when_file_exists.remote(str(gate), "late")
    fast = square.remote(3)
    try:
        ready, not_ready = jpar.wait([gated, fast], num_returns=1, timeout=30)
        assert (ready, not_ready) == ([fast], [gated])
        t0 = time.monotonic()
        ready, not_ready = jpar.wait([fast, gated], num_returns=2, timeout=1.0)
        waited = time.monotonic() - t0
        assert (ready, not_ready) == ([fast], [gated])
        assert 0.9 <= waited < 10, f"wait(num_returns=2, timeout=1) returned after {waited:.2f} s"
        gate.touch()
        ready, not_ready = jpar.wait([gated, fast], num_returns=2, timeout=30)
        assert (ready, not_ready) == ([gated, fast], [])
        assert jpar.get([gated, fast], timeout=10) == ["late", 9]
    finally:
        gate.touch()


def test_futures_made_before_the_value_arrives_complete_with_it_or_with_the_error(cluster, tmp_path):
    gate = tmp_path / "gate"
    gated = when_file_exists.remote(str(gate), {"a": 1})
    try:
        fut = gated.future()
        assert not fut.done()
        gate.touch()
        assert fut.result(timeout=30) == {"a": 1}
    finally:
        gate.touch()
    bad = fail.remote("broken")
    err = bad.future().exception(timeout=30)
    assert isinstance(err, ValueError) and isinstance(err, jpar.TaskError) and "broken" in str(err)


def test_a_failed_ref_says_so_in_its_notebook_repr(cluster):
    bad = fail.remote("x")
    jpar.wait([bad], timeout=30)
    html = bad._repr_html_()
    assert "<small>failed · from <code>fail</code>" in html


def test_task_output_keeps_to_its_stream_with_one_ray_style_prefix_a_line(cluster, capfd):
    @jpar.remote
    def talk():
        print("part", end="", flush=True)
        time.sleep(0.3)                               # the line's end arrives in a later chunk
        print(" whole")
        print("to stderr", file=sys.stderr)
        return os.getpid()

    pid = jpar.get(talk.remote(), timeout=30)
    deadline = time.monotonic() + 5
    out = err = ""
    while time.monotonic() < deadline and ("whole" not in out or "to stderr" not in err):
        o, e = capfd.readouterr()
        out, err = out + o, err + e
        time.sleep(0.05)
    assert re.search(rf"^\(talk pid={pid}, engine=\d+\) part whole$", out, re.M), out
    assert re.search(rf"^\(talk pid={pid}, engine=\d+\) to stderr$", err, re.M), err
    assert "to stderr" not in out and "whole" not in err


def test_a_query_to_a_frozen_head_times_out_as_asked_and_waits_without_one(cluster):
    head = psutil.Process(jpar.backends.native.current_driver().conn["pid"])
    assert jpar.hooks.status(timeout=None)["pid"] == head.pid           # no timeout: waits for the answer
    head.suspend()                                                      # well under dead_after_s (10 s)
    try:
        t0 = time.monotonic()
        with pytest.raises(jpar.GetTimeoutError, match=r"^The head did not answer 'status' within 0\.5 s\.$"):
            jpar.hooks.status(timeout=0.5)
        assert time.monotonic() - t0 < 5
    finally:
        head.resume()
    assert jpar.hooks.status(timeout=None)["pid"] == head.pid           # and it serves again
    assert jpar.get(square.remote(4), timeout=30) == 16


def test_the_output_handler_gets_what_the_submit_hook_returned_for_that_task(cluster):
    """The notebook layer's contract: output chunks come with the submitting cell (the hook's value)."""
    @jpar.remote
    def speak(word):
        print(word)
        return word

    got = []
    jpar.hooks.set_submit_hook(lambda task_id: f"cell of {task_id:x}")
    jpar.hooks.set_output_handler(lambda chunk, context: got.append((chunk.text, context, chunk.task_id)))
    try:
        ref = speak.remote("hi")
        assert jpar.get(ref, timeout=30) == "hi"
    finally:
        jpar.hooks.set_submit_hook(None)
        jpar.hooks.set_output_handler(None)
    assert got and "".join(t for t, _, _ in got) == "hi\n"
    assert {(c, tid) for _, c, tid in got} == {(f"cell of {ref.id:x}", ref.id)}


def test_a_value_lost_while_the_cluster_lives_is_object_lost_not_head_died(cluster):
    """The driver asks the head whether it lives before blaming it: here it does, so the value itself is lost."""
    import numpy as np

    from jpar.runtime.store.segments import decode_location

    d = jpar.backends.native.current_driver()
    ref = jpar.put(np.arange(2_000_000))
    os.unlink(os.path.join(d.store.dir, decode_location(d.results[ref.id][1]).name))   # gone from the store
    with pytest.raises(jpar.ObjectLostError) as info:
        jpar.get(ref, timeout=20)
    assert not isinstance(info.value, jpar.HeadDiedError)
    assert jpar.get(square.remote(5), timeout=30) == 25


def test_with_a_submit_hook_tasks_with_several_returns_still_deliver_them(cluster, tmp_path):
    """A notebook always has a submit hook: results of refs the hook never saw (a task's second return)
    must not upset the driver."""
    @jpar.remote(num_returns=2)
    def pair():
        return 1, 2

    gate = tmp_path / "gate"
    jpar.hooks.set_submit_hook(lambda task_id: "cell")
    try:
        running = when_file_exists.remote(str(gate), "later")    # a task of the cell still out meanwhile
        a, b = pair.remote()
        assert jpar.get([a, b], timeout=30) == [1, 2]
        assert jpar.get(square.remote(3), timeout=30) == 9
        gate.touch()
        assert jpar.get(running, timeout=30) == "later"
    finally:
        gate.touch()
        jpar.hooks.set_submit_hook(None)


@jpar.remote
def child_until(gate, done):
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    open(done, "w").close()
    return "child done"


@jpar.remote
def parent_of(gate, done, started):
    c = child_until.remote(gate, done)
    open(started, "w").close()
    while not os.path.exists(gate):
        time.sleep(0.01)
    return [c]


def test_cancel_without_recursive_stops_the_task_but_not_what_it_submitted(cluster, tmp_path):
    gate, done, started = (str(tmp_path / n) for n in ("gate", "done", "started"))
    ref = parent_of.remote(gate, done, started)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(started) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.path.exists(started)
        jpar.cancel(ref, recursive=False)
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(ref, timeout=30)
        time.sleep(1.0)                        # time for a (wrong) recursive cancel to reach the child
        assert not os.path.exists(done)
    finally:
        open(gate, "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(done) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.path.exists(done), "the child was cancelled with its parent"


def test_a_second_driver_leaving_leaves_the_clusters_large_values_in_place(cluster):
    import numpy as np

    big = jpar.put(np.arange(2_000_000))
    code = ("import jpar, numpy as np\n"
            f"jpar.init(address={cluster.address!r})\n"
            "print(int(jpar.get(jpar.put(np.ones(1_000_000))).sum()))\n"
            "jpar.shutdown()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "1000000", r.stderr
    assert int(jpar.get(big, timeout=30)[-1]) == 1_999_999      # its shared memory was not swept
