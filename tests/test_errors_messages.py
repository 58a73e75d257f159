"""Error messages say what happened and what to do: unpicklable results, a wrong number of
return values, how an engine died, bad timeouts, sys.exit() in a task, the exported error names."""

import os
import pathlib
import signal
import threading

import pytest

import jpar

pytestmark = pytest.mark.timeout(120)
DOCS = pathlib.Path(__file__).parent.parent / "docs"


@jpar.remote
def give_lock():
    return threading.Lock()


@jpar.remote(num_returns=2)
def give_one():
    return 7


@jpar.remote(num_returns=2)
def give_three():
    return 1, 2, 3


@jpar.remote(max_retries=0)
def die(how):
    if how == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(7)


@jpar.remote
def leave(code):
    import sys

    sys.exit(code)


@jpar.remote
def ok():
    return "ok"


def test_an_unpicklable_result_names_the_task_that_returned_it(cluster):
    with pytest.raises(jpar.SerializationError) as info:
        jpar.get(give_lock.remote(), timeout=30)
    msg = str(info.value)
    assert "return value of task give_lock" in msg and "cannot pickle '_thread.lock'" in msg
    assert isinstance(info.value, jpar.TaskError) and isinstance(info.value, TypeError)


def test_num_returns_mismatch_says_how_many_came_back(cluster):
    first, _ = give_one.remote()
    with pytest.raises(ValueError, match=r"give_one returned one value \(of type int\), but num_returns=2 expected 2"):
        jpar.get(first, timeout=30)
    first, _ = give_three.remote()
    with pytest.raises(ValueError, match=r"give_three returned 3 values, but num_returns=2 expected 2"):
        jpar.get(first, timeout=30)


@pytest.mark.parametrize("how, said", [("signal", r"killed by signal 9 \(SIGKILL\)"),
                                       ("exit", r"exited with code 7")])
def test_engine_crashed_error_says_how_the_engine_ended(cluster, how, said):
    with pytest.raises(jpar.EngineCrashedError, match=said) as info:
        jpar.get(die.remote(how), timeout=60)
    assert "die" in str(info.value)
    assert jpar.get(ok.remote(), timeout=60) == "ok"    # the engine was replaced


def test_negative_timeouts_are_rejected(cluster):
    ref = ok.remote()
    for bad in (-1, -0.5, float("nan")):
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
            jpar.get(ref, timeout=bad)
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
            jpar.wait([ref], timeout=bad)
    assert jpar.get(ref, timeout=0 if jpar.wait([ref], timeout=30)[0] else 30) == "ok"


def test_sys_exit_in_a_task_is_a_task_error_naming_system_exit(cluster):
    with pytest.raises(jpar.TaskError) as info:
        jpar.get(leave.remote(3), timeout=30)
    err = info.value
    assert isinstance(err.cause, SystemExit) and err.cause.code == 3
    assert str(err).startswith("SystemExit: task leave called sys.exit(3).")
    assert jpar.get(ok.remote(), timeout=30) == "ok"     # the engine lives on


def test_head_died_error_is_exported_and_documented():
    assert jpar.HeadDiedError is jpar.errors.HeadDiedError and "HeadDiedError" in jpar.__all__
    assert issubclass(jpar.HeadDiedError, jpar.ClusterError)
    assert "HeadDiedError" in (DOCS / "reference" / "errors.md").read_text()
