"""Liveness that does not depend on the GIL, and control messages that are never lost.

A task holding the GIL (a long C call) starves every Python thread of its engine, so the
engine's hand-written heartbeats stop; libzmq's ZMTP heartbeats, answered by its I/O thread,
do not. A stopped or killed engine is still found, and a force cancel sent right after a
submission reaches the engine even if its control connection is not up yet.
"""

from __future__ import annotations

import os
import signal

import psutil
import pytest

import jpar
from jpar.backends.native import current_driver

from .conftest import jpar_children, wait_gone


@pytest.fixture
def one_engine():
    jpar.init(num_engines=1)
    yield current_driver()
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == []


@pytest.mark.timeout(90)
def test_a_task_holding_the_gil_for_15_s_is_not_taken_for_a_dead_engine(one_engine):
    @jpar.remote(max_retries=0)
    def hold_gil(seconds):
        import ctypes

        ctypes.PyDLL(None).sleep(seconds)   # PyDLL keeps the GIL through the call
        return os.getpid(), seconds

    @jpar.remote
    def pid():
        return os.getpid()

    before = jpar.get(pid.remote(), timeout=30)
    got_pid, got = jpar.get(hold_gil.remote(15), timeout=60)
    assert (got_pid, got) == (before, 15)                 # the same engine, never killed, result correct
    assert jpar.get(pid.remote(), timeout=30) == before


def _read(path) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


@pytest.mark.timeout(120)
def test_a_stopped_engine_is_found_and_its_task_rerun_elsewhere(tmp_path):
    jpar.init(num_engines=2)
    try:
        @jpar.remote
        def pid():
            return os.getpid()

        @jpar.remote(max_retries=2)
        def slow(path):
            with open(path, "a") as f:
                f.write(f"{os.getpid()}\n")
            import time

            time.sleep(3)
            return "done"

        path = str(tmp_path / "starts")
        ref = slow.remote(path)
        first = None
        while first is None:   # wait for the task to start: its engine wrote its pid
            jpar.wait([pid.remote()], timeout=5)
            if _read(path).strip():
                first = int(_read(path).split()[0])
        os.kill(first, signal.SIGSTOP)
        try:
            assert jpar.get(ref, timeout=60) == "done"     # rerun on the other engine after the stop is noticed
            starts = [int(p) for p in _read(path).split()]
            assert starts[0] == first and first not in starts[1:]
            try:
                stopped = [psutil.Process(first)]
            except psutil.NoSuchProcess:
                stopped = []
            assert wait_gone(stopped, timeout=30) == []   # the head killed the stopped engine
        finally:
            try:
                os.kill(first, signal.SIGCONT)
            except ProcessLookupError:
                pass
    finally:
        procs = jpar_children()
        jpar.shutdown()
        assert wait_gone(procs) == []


@pytest.mark.timeout(240)
def test_force_cancel_right_after_submit_stops_the_task_every_time(one_engine):
    @jpar.remote
    def spin():
        while True:
            pass

    @jpar.remote
    def one():
        return 1

    for _ in range(20):
        r = spin.remote()
        jpar.cancel(r, force=True)       # often before the (new) engine's control connection is up
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(r, timeout=30)
        assert jpar.get(one.remote(), timeout=20) == 1
