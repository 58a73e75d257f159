"""A Lock / RLock slot's bound acquire and release, on both of its paths: the C module built with
the package (``_slotlock``) and the pure-Python closures used where it could not be built. Both
must write the same words of the slot and hand over to the full path in the same cases, since
processes of either kind share one lock. In-process (no cluster): the slot is made the way the
state server makes it."""

import shutil
import sys
import sysconfig
import threading

import pytest

from jpar.multiprocessing import fastsync

pytestmark = pytest.mark.skipif(not fastsync.available(), reason="no shared-memory semaphores on this platform")

H, T, C, A = fastsync.H, fastsync.T, fastsync.C, fastsync.A
CODE = 5


@pytest.fixture(params=["c", "python"])
def path(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(fastsync, "_slotlock", None)
    elif fastsync._slotlock is None:
        pytest.fail("the C module _slotlock was not built (see build_native.py's message at install)")
    return request.param


def _slot(recursive):
    fs = fastsync.FastArenas().new_sem(1, 1, recursive)
    fs.code = CODE
    return fs


def _bound(fs):
    calls = []

    def slow(block=True, timeout=None):
        calls.append(("slow", block, timeout))
        return "slow"

    def warn(code):
        calls.append(("warn", code))
        return "warned"

    acquire, release = fs.bind(slow, warn)
    return acquire, release, calls


def test_the_c_module_is_built_where_a_compiler_is():
    if not sys.platform.startswith("linux"):
        pytest.skip("the C module is built on Linux only")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}) here: the pure-Python path is what runs")
    assert fastsync._slotlock is not None, "the package was installed without its C module"


def test_acquire_records_the_holder_and_release_clears_it(path):
    fs = _slot(False)
    acquire, release, calls = _bound(fs)
    assert (type(acquire).__name__ == "builtin_function_or_method") == (path == "c")
    assert acquire() is True
    assert (fs.w[H], fs.w[T], fs.w[C]) == (CODE, threading.get_ident(), 1)
    assert fs.sem._get_value() == 0
    release()
    assert (fs.w[H], fs.w[T], fs.w[C]) == (0, 0, 0) and fs.sem._get_value() == 1
    assert calls == []


def test_a_taken_lock_goes_to_the_full_path_with_the_callers_arguments(path):
    fs = _slot(False)
    acquire, release, calls = _bound(fs)
    assert acquire() is True
    assert acquire(False) == "slow"
    assert acquire(True, 0.5) == "slow"
    assert acquire(timeout=2) == "slow"
    assert acquire() == "slow"
    assert calls == [("slow", False, None), ("slow", True, 0.5), ("slow", True, 2), ("slow", True, None)]
    assert (fs.w[H], fs.w[C]) == (CODE, 1)                  # the holder's record is untouched
    release()


def test_releasing_an_unheld_lock_raises_and_keeps_the_record(path):
    fs = _slot(False)
    acquire, release, _ = _bound(fs)
    with pytest.raises(ValueError, match="released too many times"):
        release()
    assert fs.sem._get_value() == 1
    assert acquire() is True
    release()
    with pytest.raises(ValueError):
        release()
    assert (fs.w[H], fs.w[T], fs.w[C]) == (0, 0, 0) and fs.sem._get_value() == 1


def test_any_thread_may_release_a_plain_lock(path):
    fs = _slot(False)
    acquire, release, _ = _bound(fs)
    assert acquire() is True
    t = threading.Thread(target=release)
    t.start()
    t.join(10)
    assert fs.sem._get_value() == 1 and fs.w[H] == 0


def test_a_dead_holders_mark_is_reported_once_to_the_next_taker(path):
    fs = _slot(False)
    acquire, release, calls = _bound(fs)
    fs.w[A] = 9                                             # what the server's reap leaves
    assert acquire() == "warned"
    assert calls == [("warn", 9)] and fs.w[A] == 0 and fs.w[H] == CODE
    release()
    assert acquire() is True and calls == [("warn", 9)]
    release()


def test_an_rlock_counts_its_holders_recursion_and_refuses_others(path):
    fs = _slot(True)
    acquire, release, calls = _bound(fs)
    assert acquire() and acquire() and acquire()
    assert fs.w[C] == 3 and fs.sem._get_value() == 0
    errors = []

    def other_thread():
        try:
            release()
        except AssertionError as e:
            errors.append(str(e))
        errors.append(acquire(False))

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(10)
    assert errors == ["attempt to release recursive lock not owned by thread", "slow"]
    release()
    release()
    assert fs.w[C] == 1 and fs.sem._get_value() == 0
    release()
    assert (fs.w[H], fs.w[C]) == (0, 0) and fs.sem._get_value() == 1
    with pytest.raises(AssertionError):
        release()
