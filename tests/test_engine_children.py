"""Processes that tasks start never outlive the cluster, and a forked copy of an engine never runs it.

Each test starts its own cluster, so it can check what is left after shutdown().
"""

import os
import subprocess

import psutil
import pytest

import jpar

from .conftest import jpar_children, wait_gone

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def own_cluster():
    jpar.init(num_engines=1)
    yield
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == []


def _processes(pids):
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return out


def _alive_after(procs, timeout):
    """Which of ``procs`` still run (not zombies) after ``timeout`` s; kills them so nothing leaks."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    left = []
    for p in alive:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append(p.pid)
            p.kill()
        except psutil.Error:
            pass
    return left


@jpar.remote
def one():
    return 1


@jpar.remote
def forker():
    pid = os.fork()
    if pid == 0:
        return -1              # the copy returns from the task function: it must end here
    return pid


@jpar.remote
def forker_that_stays():
    import time

    pid = os.fork()
    if pid == 0:
        time.sleep(1000)       # a copy that lingers until the engine goes
        os._exit(0)
    return pid


@jpar.remote
def leave_processes():
    child = subprocess.Popen(["sleep", "1000"])
    # a grandchild whose parent exits at once (re-parented to the engine, its subreaper)
    out = subprocess.run(["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                         check=True)
    return [child.pid, int(out.stdout)]


def test_forked_copy_of_the_engine_exits_when_the_task_returns(own_cluster):
    pid = jpar.get(forker.remote(), timeout=30)
    assert pid > 0                                    # the engine's answer, not the copy's
    copy = _processes([pid])
    assert _alive_after(copy, timeout=20) == []       # gone (and reaped), not spinning in the engine loop
    assert jpar.get([one.remote() for _ in range(20)], timeout=30) == [1] * 20


def test_processes_left_by_tasks_do_not_survive_shutdown(tmp_path):
    jpar.init(num_engines=1)
    try:
        left = jpar.get(leave_processes.remote(), timeout=30)
        stays = jpar.get(forker_that_stays.remote(), timeout=30)
        procs = _processes(left + [stays])
        assert len(procs) == 3
        assert jpar.get([one.remote() for _ in range(20)], timeout=30) == [1] * 20   # still serving
        engines = jpar_children()
    finally:
        jpar.shutdown()
    left = _alive_after(procs, timeout=15)
    assert wait_gone(engines) == []
    assert left == []


@jpar.remote
class SlowStart:
    def __init__(self):
        import time

        time.sleep(1000)     # never ready: its process stays "starting"

    def ping(self):
        return 1


@jpar.remote
class Quick:
    def ping(self):
        return os.getpid()


def test_many_actors_start_a_few_at_a_time_and_shutdown_leaves_none():
    from jpar.runtime.head.controller_actors import starting_limit

    jpar.init(num_engines=1)
    try:
        head = next(p for p in psutil.Process().children() if "jpar.runtime.head.controller" in " ".join(p.cmdline()))
        engines = {p.pid for p in head.children()}
        up = [Quick.remote() for _ in range(5)]
        assert len(set(jpar.get([a.ping.remote() for a in up], timeout=60))) == 5
        stuck = [SlowStart.remote() for _ in range(30)]
        jpar.hooks.status()          # answered after the head has taken every creation above
        kids = [p for p in head.children() if p.pid not in engines]
        template = [p for p in kids if "jpar.runtime.engine.forker" in " ".join(p.cmdline())]
        # actor processes: the head's own (interpreters), or forks of its actor template
        actor_procs = [p for p in kids if p not in template] + [f for t in template for f in t.children()]
        # 5 ready ones, and at most starting_limit() starting (not 30 Python processes at once)
        assert 5 < len(actor_procs) <= 5 + starting_limit()
        everything = [head] + head.children(recursive=True)
    finally:
        jpar.shutdown()
    assert wait_gone(everything, timeout=30) == []
    del stuck, up
