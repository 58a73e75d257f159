"""jpar.free on every backend: the value's memory goes at once though refs remain, and every later
get of the ref, or task given it, raises ObjectFreedError (never a hang); other work goes on.

One cluster per backend for the whole module (``jpar_cluster``, the conformance kit's fixture).
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest

import jpar
from jpar import hooks
from jpar.errors import ObjectFreedError, ObjectLostError
from jpar.notebook.store_view import normalize_store

pytestmark = pytest.mark.timeout(180)

BIG = 8 << 20


def store_used() -> int:
    """Object-store bytes in use, all hosts, in the one shape every backend's figures normalize to."""
    store = normalize_store(hooks.store_statistics(timeout=10))
    return sum(h["used"] or 0 for h in (store or {}).get("hosts", ()))


def until(pred, timeout: float = 30.0, every: float = 0.2):
    """Poll ``pred`` until it returns something truthy (returned) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(every)


@jpar.remote
def make(n):
    return np.ones(n, dtype=np.uint8)


@jpar.remote
def total(a):
    return int(a.sum())


@jpar.remote
def make_after(path, n):
    """A value made only once ``path`` exists (so the test frees it while the task runs)."""
    while not os.path.exists(path):
        time.sleep(0.02)
    with open(path + ".ran", "w") as f:
        f.write("ran")
    return np.ones(n, dtype=np.uint8)


def test_the_error_says_what_happened_and_what_to_do():
    err = ObjectFreedError("ObjectRef(00ff)")
    assert isinstance(err, ObjectLostError) and isinstance(err, jpar.JparError)
    text = str(err)
    assert "ObjectRef(00ff)" in text and "jpar.free()" in text and "Recompute" in text and "jpar.put()" in text
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ObjectFreedError and str(again) == text


def test_free_takes_refs_only(jpar_cluster):
    with pytest.raises(TypeError, match="ObjectRef"):
        jpar.free(3)
    with pytest.raises(TypeError, match="found int"):
        jpar.free([jpar.put(1), 3])
    jpar.free([])     # nothing to do


def test_freed_values_leave_the_store_and_their_refs_raise(jpar_cluster):
    base = store_used()
    made = make.remote(BIG)
    put = jpar.put(np.ones(BIG, dtype=np.uint8))
    jpar.wait([made], timeout=60)
    assert until(lambda: store_used() >= base + 2 * BIG * 0.9), (base, store_used())
    jpar.free([made, put])
    # the values go although `made` and `put` still exist (Ray frees them a moment later)
    assert until(lambda: store_used() <= base + BIG * 0.1), (base, store_used())
    for ref in (made, put):
        with pytest.raises(ObjectFreedError, match="jpar.free") as info:
            jpar.get(ref, timeout=30)
        assert ref.hex() in str(info.value) and "Recompute" in str(info.value)
    ready, _ = jpar.wait([made, put], num_returns=2, timeout=30)   # an error counts as ready, as a failed task's
    assert len(ready) == 2
    with pytest.raises(ObjectFreedError):
        made.future().result(timeout=30)
    jpar.free(made)   # again: nothing happens
    jpar.free([put, put])


def test_a_task_given_a_freed_ref_fails_and_other_work_goes_on(jpar_cluster):
    kept = make.remote(BIG)
    gone = make.remote(BIG)
    jpar.wait([kept, gone], num_returns=2, timeout=60)
    jpar.free(gone)
    with pytest.raises(ObjectFreedError, match="freed by jpar.free"):
        jpar.get(total.remote(gone), timeout=60)
    assert jpar.get(total.remote(kept), timeout=60) == BIG            # what was not freed is whole
    assert jpar.get([total.remote(make.remote(1000)) for _ in range(4)], timeout=60) == [1000] * 4


def test_freeing_a_pending_ref_lets_its_task_run_and_get_raises_at_once(jpar_cluster, tmp_path):
    go = str(tmp_path / "go")
    ref = make_after.remote(go, 1 << 20)
    jpar.free(ref)
    t0 = time.monotonic()
    with pytest.raises(ObjectFreedError):
        jpar.get(ref, timeout=30)
    assert time.monotonic() - t0 < 10                                   # not after the task
    open(go, "w").close()
    assert until(lambda: os.path.exists(go + ".ran"), 60), "jpar.free cancelled the task"
    with pytest.raises(ObjectFreedError):                              # its value, made now, is not served
        jpar.get(ref, timeout=30)
    assert jpar.get(total.remote(make.remote(10)), timeout=60) == 10


def test_the_scheduler_frees_ready_and_pending_objects_with_no_processes():
    """Scheduler.free (pure): a ready object becomes its error record and its segments are freed; a
    pending one settles as the error now (its waiting dependents fail with it), its task runs on, and
    the value it makes later is freed on arrival; unknown and freed-again ids change nothing."""
    from jpar.runtime.head.scheduler import CancelOnEngine, FreeObjects, Failure, Scheduler, SendFailure, TaskState
    from jpar.runtime.wire import protocol as P

    def spec(tid, deps=()):
        return P.TaskSpec(tid, 1, f"t{tid}", b"", tuple(deps), 1, (("CPU", 1.0),), 3, False, 0, 0, -1)

    def done(s, tid, blob):
        return s.tasks_done(0, [P.DoneRecord(tid, s.tasks[tid].attempt, P.OK, ((tid, P.OK, blob),), 0.1)])

    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.put(1, (50,), P.OK, (b"\x00JPL-location",))
    acts = s.free([(50, P.ERROR, b"freed-50"), (999, P.ERROR, b"unknown")])
    assert FreeObjects((50,)) in acts and (s.objects[50].status, s.objects[50].blob) == (P.ERROR, b"freed-50")
    assert s.free([(50, P.ERROR, b"again")]) == [] and s.objects[50].blob == b"freed-50"

    s.submit(1, [spec(1), spec(2, deps=[1])])           # 1 runs; 2 waits for it, chained on 1's engine
    assert s.tasks[1].state is TaskState.RUNNING and s.tasks[2].state is TaskState.ASSIGNED and s.tasks[2].chained
    acts = s.free([(1, P.ERROR, b"freed-1")])
    fails = [a for a in acts if isinstance(a, SendFailure)]
    assert [(f.task_id, f.kind, f.detail) for f in fails] == [(2, Failure.DEPENDENCY, b"freed-1")]
    assert CancelOnEngine(0, 2, False) in acts           # its engine must not run it on the freed value
    assert s.tasks[1].state is TaskState.RUNNING         # not cancelled
    acts = done(s, 1, b"\x00JPL-late-value")
    assert FreeObjects((1,)) in acts and s.objects[1].blob == b"freed-1"
    acts = s.submit(1, [spec(3, deps=[50])])            # a task given a freed ref fails with its error
    assert [(a.task_id, a.detail) for a in acts if isinstance(a, SendFailure)] == [(3, b"freed-50")]
    assert 3 not in s.tasks
