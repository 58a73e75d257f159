"""Shared fixtures: one cluster per test module, and a check that nothing leaks.

Every test that starts processes must leave none behind: the session ends by checking
that no child process of pytest and no jpar shared-memory segment is left.
"""

from __future__ import annotations

import os

import psutil
import pytest

import jpar

pytest_plugins = ["jpar.testing.plugin"]   # the conformance kit's --jpar-backend and jpar_cluster

# One Ray authentication mode for the whole session, set before any test uses Ray. The Ray heads the
# tests start (`ray start`) run without token authentication; a process that used Ray with it (2.60's
# default) and later connects to a head without it gets actors that end before they run ("all
# references to the actor were removed"): seen as Processes on Ray reading exit code 1 and actors
# dying whenever a module with a local Ray ran before one with a `ray start` head.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def jpar_children() -> list[psutil.Process]:
    """Processes under this pytest process that belong to jpar (heads, engines)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any("jpar." in part for part in p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def wait_gone(procs, timeout: float = 15.0) -> list[psutil.Process]:
    """Processes among ``procs`` still alive after ``timeout`` (psutil waits on exit events)."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


def shm_segments() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/dev/shm") if "jpar" in n)
    except FileNotFoundError:
        return []


@pytest.fixture(scope="module")
def cluster():
    """A two-engine local cluster shared by the tests of one module."""
    ctx = jpar.init(num_engines=2)
    yield ctx
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == [], "cluster processes survived shutdown()"


@pytest.fixture(scope="session", autouse=True)
def no_leaks_at_end():
    shm_before = set(shm_segments())
    yield
    if jpar.is_initialized():
        jpar.shutdown()
    left = wait_gone(jpar_children(), timeout=15.0)
    for p in left:
        p.kill()
    assert not left, f"jpar processes left behind: {[p.pid for p in left]}"
    new_shm = set(shm_segments()) - shm_before
    assert not new_shm, f"shared-memory segments left behind: {sorted(new_shm)}"
