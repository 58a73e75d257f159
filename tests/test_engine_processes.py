"""What an engine promises about the processes its tasks start, and about return values it cannot send.

Found by sampling the mutants of jpar/runtime/engine/engine.py (tests/mutation_sample.py): a forked copy outliving a
SIGKILLed engine (no PR_SET_PDEATHSIG), exited children left as zombies, a child that ignores SIGTERM
outliving its removed engine, and the wrong return value named when one cannot be pickled.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest

import jpar

pytestmark = [pytest.mark.timeout(90), pytest.mark.skipif(sys.platform != "linux", reason="prctl is Linux's")]


@jpar.remote
def fork_a_lingering_copy():
    pid = os.fork()
    if pid == 0:
        time.sleep(1000)       # a copy that lingers until the engine goes
        os._exit(0)
    return [os.getpid(), pid]


def _lives(p: psutil.Process) -> bool:
    """Still running (a zombie waiting for the head, its new parent, to reap it is dead)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_forked_copy_dies_at_once_when_its_engine_is_killed(cluster):
    engine_pid, copy_pid = jpar.get(fork_a_lingering_copy.remote(), timeout=30)
    copy = psutil.Process(copy_pid)
    assert _lives(copy)
    os.kill(engine_pid, signal.SIGKILL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5 and _lives(copy):
        time.sleep(0.05)
    assert not _lives(copy), "the forked copy outlived its SIGKILLed engine"
    assert jpar.get(jpar.remote(lambda: 7).remote(), timeout=60) == 7     # the head replaced the engine


@jpar.remote
def fork_a_copy_that_exits():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def test_a_child_that_exits_is_reaped_while_the_engine_idles(cluster):
    """No zombie piles up per fork: the idle engine collects its exited children."""
    pid = jpar.get(fork_a_copy_that_exits.remote(), timeout=30)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid), "the exited child stayed a zombie of the engine"


@jpar.remote
def start_a_child_that_ignores_sigterm():
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                              "print('ready', flush=True); time.sleep(1000)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    return child.pid, jpar.get_runtime_context().engine_id


def test_a_child_that_ignores_sigterm_goes_with_its_engine_when_the_engine_is_removed(cluster):
    """A removed engine stops what its tasks started, SIGKILLing what ignores SIGTERM (the head, which
    keeps running, would only do so at its own shutdown)."""
    deadline = time.monotonic() + 30                   # the engine killed above has been replaced
    while len(jpar.hooks.engines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pid, engine_id = jpar.get(start_a_child_that_ignores_sigterm.remote(), timeout=30)
    child = psutil.Process(pid)
    jpar.hooks.remove_engines(engine_ids=[engine_id], timeout=30)
    deadline = time.monotonic() + 15
    while _lives(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    lives = _lives(child)
    if lives:
        child.kill()
    assert not lives, "a task's child that ignores SIGTERM outlived its removed engine"


def test_an_unpicklable_return_value_names_the_task_and_which_value(cluster):
    import threading

    @jpar.remote
    def give_lock():
        return threading.Lock()

    @jpar.remote(num_returns=2)
    def give_two():
        return 1, threading.Lock()

    with pytest.raises(jpar.SerializationError, match=r"^SerializationError: The return value of task give_lock \(of type lock\) "
                                                      r"could not be pickled to travel back"):
        jpar.get(give_lock.remote(), timeout=30)
    with pytest.raises(jpar.SerializationError, match=r"^SerializationError: The return value 1 of task give_two \(of type lock\)"):
        jpar.get(give_two.remote(), timeout=30)
