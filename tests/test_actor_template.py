"""Actor processes forked from the head's actor-process template: they behave as actor processes
the head starts itself (calls, restarts with exit codes, kill), die with the template or the head,
and when the template is gone actor processes start as interpreters again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import jpar

from .conftest import wait_gone

pytestmark = pytest.mark.timeout(120)

TEMPLATE = "jpar.runtime.engine.forker"

# the start of the scripts that run a cluster of their own (a driver whose head a test may kill)
PRELUDE = textwrap.dedent("""
    import os, sys, psutil, jpar
    jpar.init(num_engines=1)

    @jpar.remote
    class A:
        def pid(self):
            return os.getpid(), os.getppid()
""")


@jpar.remote(max_restarts=1)
class Probe:
    def __init__(self):
        self.calls = 0

    def where(self):
        self.calls += 1
        return os.getpid(), os.getppid(), self.calls

    def crash(self, code: int):
        os._exit(code)


def head_process() -> psutil.Process:
    return psutil.Process(jpar.hooks.status()["pid"])


def template_of(head: psutil.Process) -> psutil.Process | None:
    return next((c for c in head.children() if TEMPLATE in " ".join(c.cmdline())), None)


def forked_probe(head: psutil.Process, tries: int = 40):
    """An actor whose process is a fork of the template (the template starts with the first actor,
    which waits for it; an actor would start as an interpreter only if the template failed)."""
    for _ in range(tries):
        a = Probe.remote()
        pid, ppid, _ = jpar.get(a.where.remote(), timeout=60)
        t = template_of(head)
        if t is not None and ppid == t.pid:
            return a, pid, t
        jpar.kill(a)
    raise AssertionError(f"no actor process was a fork of the template in {tries} actors")


def test_an_actor_forked_from_the_template_keeps_state_restarts_and_reports_exit_codes(cluster):
    head = head_process()
    a, pid, template = forked_probe(head)
    assert [jpar.get(a.where.remote())[2] for _ in range(3)] == [2, 3, 4]    # one process, its state kept
    with pytest.raises(jpar.ActorDiedError):
        jpar.get(a.crash.remote(7), timeout=60)
    pid2, ppid2, calls = jpar.get(a.where.remote(), timeout=60)              # restarted (max_restarts=1)
    assert pid2 != pid and calls == 1 and ppid2 == template.pid and not psutil.pid_exists(pid)
    with pytest.raises(jpar.ActorDiedError):
        jpar.get(a.crash.remote(7), timeout=60)
    with pytest.raises(jpar.ActorDiedError, match="exited with code 7"):     # the template's report
        jpar.get(a.where.remote(), timeout=60)


def test_kill_ends_a_forked_actor_process(cluster):
    a, pid, _ = forked_probe(head_process())
    proc = psutil.Process(pid)
    jpar.kill(a)
    assert wait_gone([proc], timeout=30) == []
    with pytest.raises(jpar.ActorDiedError):
        jpar.get(a.where.remote(), timeout=60)


def test_a_dead_template_takes_its_actors_and_interpreters_start_them_again(cluster):
    head = head_process()
    a, pid, template = forked_probe(head)
    proc = psutil.Process(pid)
    os.kill(template.pid, signal.SIGKILL)
    # its fork died with it, and the head (its subreaper now) reaped it: a zombie would still "exist"
    assert wait_gone([template, proc], timeout=30) == []
    pid2, ppid2, calls = jpar.get(a.where.remote(), timeout=60)              # the restart is an interpreter
    assert pid2 != pid and ppid2 == head.pid and calls == 1
    b = Probe.remote()
    assert jpar.get(b.where.remote(), timeout=60)[1] == head.pid


def test_the_template_and_its_actors_die_with_the_head(tmp_path):
    script = PRELUDE + textwrap.dedent("""
        actors = [A.remote() for _ in range(12)]     # kept: a dropped handle ends its actor
        pids = [jpar.get(a.pid.remote()) for a in actors]
        print(jpar.hooks.status()["pid"], " ".join(f"{p}:{pp}" for p, pp in pids), flush=True)
        input()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        head_pid, pairs = proc.stdout.readline().split(" ", 1)
        head = psutil.Process(int(head_pid))
        template = template_of(head)
        actors = [int(p.split(":")[0]) for p in pairs.split()]
        forked = [int(p.split(":")[0]) for p in pairs.split() if template and int(p.split(":")[1]) == template.pid]
        assert template is not None and forked == actors, "not every actor (the first waits for it) is a fork"
        procs = [psutil.Process(p) for p in actors] + [template]
        head.kill()
        assert wait_gone(procs, timeout=30) == []
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdin.close()
        proc.stdout.close()


def test_with_actor_fork_off_no_template_starts(tmp_path):
    script = PRELUDE + textwrap.dedent("""
        ppids = {jpar.get(A.remote().pid.remote())[1] for _ in range(4)}
        head = jpar.hooks.status()["pid"]
        kids = []
        for c in psutil.Process(head).children():
            try:
                kids.append(" ".join(c.cmdline()))
            except psutil.Error:   # an actor process whose handle went: exited, not yet reaped
                pass
        print(ppids == {head}, any("jpar.runtime.engine.forker" in k for k in kids))
        jpar.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100,
                         cwd=tmp_path, env=dict(os.environ, JPAR_ACTOR_FORK="0"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]


def test_a_template_that_dies_before_it_is_ready_leaves_actors_to_interpreters(tmp_path):
    """The first actor waits for the template; when the template dies first, the head gives it up
    and starts the waiting actor, and every later one, as an interpreter (it once crashed here)."""
    script = PRELUDE + textwrap.dedent("""
        head = psutil.Process(jpar.hooks.status()["pid"])
        a = A.remote()                       # the head starts the template, and the actor waits for it
        template = None
        while template is None:              # its imports take 100+ ms: caught long before it is ready
            template = next((c for c in head.children()
                             if "jpar.runtime.engine.forker" in " ".join(c.cmdline())), None)
        template.suspend()
        assert jpar.wait([a.pid.remote()], timeout=0.5)[0] == []    # no answer: waiting for the template
        template.kill()
        first = jpar.get(a.pid.remote(), timeout=60)[1]
        later = jpar.get(A.remote().pid.remote(), timeout=60)[1]
        kids = [" ".join(c.cmdline()) for c in head.children() if c.status() != psutil.STATUS_ZOMBIE]
        print(first == head.pid, later == head.pid, any("engine.forker" in k for k in kids))
        jpar.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False"], out.stdout + out.stderr
