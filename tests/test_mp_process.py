"""jpar.multiprocessing.Process on a real local cluster: the stdlib's semantics, each Process a
process of its own that takes no task slot, and the warm spare actor process behind fast starts."""

import multiprocessing as std_mp
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

import jpar
import jpar.multiprocessing as mp
from jpar.errors import SerializationError
from jpar.multiprocessing.stdlib_check import StdlibObjectError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    from tests.conftest import jpar_children, wait_gone

    ctx = jpar.init(num_engines=2)
    yield ctx
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == [], "cluster processes survived shutdown()"


# ------------------------------------------------------------------ targets
def noop():
    pass


def raises():
    raise ValueError("the target failed")


def exits(code):
    sys.exit(code)


def hard_exit(code):
    os._exit(code)


def sleeps():
    time.sleep(300)


def prints(text):
    print(text)


def who_am_i(q):
    me = mp.current_process()
    parent = mp.parent_process()
    q.put((me.name, me.pid, os.getpid(), me.daemon, bytes(me.authkey), parent.pid, parent.name,
           std_mp.current_process().name))


def at_barrier(barrier, q, i):
    barrier.wait(timeout=60)
    q.put(i)


def waits_for(event):
    event.wait(60)


def starts_a_thread(event):
    def later():
        time.sleep(0.3)
        event.set()

    threading.Thread(target=later).start()   # not a daemon: the process waits for it


def handles_sigterm():
    def on_term(signum, frame):
        sys.exit(7)

    signal.signal(signal.SIGTERM, on_term)
    print("handler installed", flush=True)
    time.sleep(300)


class Squarer(mp.Process):
    def __init__(self, q, n):
        super().__init__()
        self.q = q
        self.n = n

    def run(self):
        self.q.put(self.n * self.n)


def _started(target, *args, **kwargs):
    p = mp.Process(target=target, args=args, **kwargs)
    p.start()
    return p


# ------------------------------------------------------------------ exit codes
@pytest.mark.parametrize("target, args, code", [
    (noop, (), 0),
    (raises, (), 1),
    (exits, (3,), 3),
    (exits, (None,), 0),
    (exits, ("a message",), 1),
    (hard_exit, (5,), 5),
])
def test_exit_codes_are_the_stdlib_ones(target, args, code):
    p = _started(target, *args)
    p.join(60)
    assert p.exitcode == code
    assert not p.is_alive()


@pytest.mark.parametrize("method, code", [("terminate", -signal.SIGTERM), ("kill", -signal.SIGKILL)])
def test_terminate_and_kill_give_minus_the_signal(method, code):
    p = _started(sleeps)
    assert p.is_alive() and p.exitcode is None
    p.join(0)
    assert p.is_alive()
    getattr(p, method)()
    p.join(30)
    assert p.exitcode == code
    assert not p.is_alive()


def count_up(v, started):
    started.set()
    while True:
        v.value += 1


def test_kill_returns_once_the_process_runs_no_more():
    """As with the stdlib (os.kill with SIGKILL), a killed Process does nothing after kill() returns:
    its count in shared memory stays where it was. Before, kill() only asked the head to stop it, and
    the process ran on for a while (a consumer "killed" that way took a queue's next item)."""
    for _ in range(4):
        v, started = mp.RawValue("q", 0), mp.Event()
        p = _started(count_up, v, started)
        assert started.wait(60)
        p.kill()
        at_kill = v.value
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        assert v.value == at_kill


def test_terminate_runs_the_targets_sigterm_handler():
    installed = threading.Event()

    def on_output(chunk, ctx):
        if "handler installed" in chunk.text:
            installed.set()

    jpar.hooks.set_output_handler(on_output)
    try:
        p = _started(handles_sigterm)
        assert installed.wait(60), "the target never said it installed its handler"
        p.terminate()
        p.join(30)
    finally:
        jpar.hooks.set_output_handler(None)
    assert p.exitcode == 7   # the handler's sys.exit(7), not -SIGTERM: the target ran on the main thread


# ------------------------------------------------------------------ identity
def test_current_and_parent_process_inside_the_process():
    q = mp.Queue()
    p = mp.Process(target=who_am_i, args=(q,), name="Named", daemon=True)
    p.start()
    name, pid, real_pid, daemon, authkey, parent_pid, parent_name, std_name = q.get(timeout=60)
    p.join(60)
    assert (name, daemon, std_name) == ("Named", True, "Named")
    assert pid == real_pid == p.pid != os.getpid()
    assert authkey == bytes(mp.current_process().authkey) == p.authkey
    assert parent_pid == os.getpid() and parent_name == mp.current_process().name
    assert p.exitcode == 0


def test_default_names_count_up_and_subclasses_use_their_class_name():
    a, b = mp.Process(target=noop), mp.Process(target=noop)
    na, nb = int(a.name.split("-")[1]), int(b.name.split("-")[1])
    assert a.name.startswith("Process-") and nb == na + 1
    q = mp.Queue()
    s = Squarer(q, 7)
    assert s.name.startswith("Squarer-")
    s.start()
    assert q.get(timeout=60) == 49
    s.join(60)
    assert s.exitcode == 0


def test_active_children_lists_running_ones_and_reaps_ended_ones():
    e = mp.Event()
    p = _started(waits_for, e)
    assert p in mp.active_children()
    e.set()
    p.join(60)
    assert p not in mp.active_children()
    assert p.exitcode == 0


def test_the_process_waits_for_its_non_daemon_threads():
    e = mp.Event()
    p = _started(starts_a_thread, e)
    p.join(60)
    assert p.exitcode == 0
    assert e.is_set()


def test_sentinel_becomes_readable_when_the_process_ends():
    e = mp.Event()
    p = mp.Process(target=waits_for, args=(e,))
    with pytest.raises(ValueError):
        p.sentinel
    p.start()
    fd = p.sentinel
    assert select.select([fd], [], [], 0)[0] == []
    e.set()
    assert select.select([fd], [], [], 60)[0] == [fd]
    p.join(10)
    assert p.exitcode == 0
    p.close()


# ------------------------------------------------------------------ no task slot
def test_eight_processes_meet_at_a_barrier_on_two_cpus():
    """Processes take no task slot: eight waiting ones on a 2-CPU cluster do not deadlock, and
    tasks still run meanwhile."""
    assert jpar.cluster_resources()["CPU"] == 2
    barrier = mp.Barrier(9)
    q = mp.Queue()
    procs = [_started(at_barrier, barrier, q, i) for i in range(8)]
    assert jpar.get(jpar.remote(pow).remote(2, 10), timeout=60) == 1024   # tasks still run meanwhile
    barrier.wait(timeout=60)
    assert sorted(q.get(timeout=60) for _ in range(8)) == list(range(8))
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8


# ------------------------------------------------------------------ output
def test_output_and_the_traceback_reach_the_driver():
    seen = []
    jpar.hooks.set_output_handler(lambda chunk, ctx: seen.append((chunk.stream, chunk.text)))
    try:
        p = _started(prints, "hello from a process")
        p.join(60)
        f = _started(raises)
        f.join(60)
    finally:
        jpar.hooks.set_output_handler(None)
    out = "".join(t for s, t in seen if s == "stdout")
    err = "".join(t for s, t in seen if s == "stderr")
    assert "hello from a process" in out
    assert f"Process {f.name}:" in err and "ValueError: the target failed" in err


# ------------------------------------------------------------------ errors
def test_misuse_raises_the_stdlib_errors():
    p = mp.Process(target=sleeps)
    with pytest.raises(AssertionError, match="can only join a started process"):
        p.join()
    p.start()
    with pytest.raises(AssertionError, match="cannot start a process twice"):
        p.start()
    with pytest.raises(ValueError, match="still running"):
        p.close()
    with pytest.raises(AssertionError, match="already started"):
        p.daemon = True
    p.kill()
    p.join(30)
    p.close()
    for call in (p.is_alive, p.join, p.terminate, p.start):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_a_stdlib_lock_among_the_arguments_names_the_jpar_replacement():
    lock = std_mp.Lock()
    with pytest.raises(StdlibObjectError, match=r"jpar\.multiprocessing\.Lock"):
        mp.Process(target=noop, args=({"nested": [lock]},)).start()
    with pytest.raises(StdlibObjectError, match=r"jpar\.multiprocessing\.Queue"):
        mp.Process(target=noop, kwargs={"q": std_mp.Queue()}).start()
    assert mp.active_children() == [] or all(p.is_alive() for p in mp.active_children())


def test_an_unpicklable_target_says_what_could_not_be_pickled():
    lock = threading.Lock()
    with pytest.raises(SerializationError, match=r"its target .* could not be pickled"):
        mp.Process(target=lambda: lock.acquire()).start()
    with pytest.raises(SerializationError, match=r"keyword argument 'gen'"):
        mp.Process(target=noop, kwargs={"gen": (i for i in range(3))}).start()


# ------------------------------------------------------------------ __main__ and spares
def test_a_function_defined_in_main_runs_in_a_process(tmp_path):
    """The classic spawn failure (a function in __main__ cannot be found by the child) does not
    happen: cloudpickle ships it by value."""
    script = textwrap.dedent("""
        import jpar, jpar.multiprocessing as mp

        def square_into(q, x):
            q.put(x * x)

        class Doubler(mp.Process):
            def __init__(self, q):
                super().__init__()
                self.q = q

            def run(self):
                self.q.put("doubled")

        if __name__ == "__main__":
            jpar.init(num_engines=1)
            q = mp.Queue()
            p = mp.Process(target=square_into, args=(q, 12))
            p.start()
            d = Doubler(q)
            d.start()
            got = sorted(map(str, [q.get(timeout=60), q.get(timeout=60)]))
            p.join(60)
            d.join(60)
            print(got, p.exitcode, d.exitcode)
            jpar.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=110,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['144', 'doubled'] 0 0"


def test_an_actor_start_takes_the_warm_spare():
    """After the first actor, the head keeps an idle actor process: the next Process runs in it."""
    p = _started(noop)   # makes sure the cluster has started an actor
    p.join(60)
    head = next(c for c in psutil.Process().children() if "jpar.runtime.head.controller" in " ".join(c.cmdline()))
    busy = {e["pid"] for e in jpar.hooks.status()["engines"]}
    deadline = time.monotonic() + 60
    spare = set()
    while not spare:   # no event tells when a spare is up: watch the head's children
        assert time.monotonic() < deadline, "no spare actor process appeared"
        busy |= {a["pid"] for a in jpar.hooks.status()["actors"]}
        kids = head.children()
        template = [c for c in kids if "jpar.runtime.engine.forker" in " ".join(c.cmdline())]
        kids = [c for c in kids if c not in template] + [f for t in template for f in t.children()]
        spare = {c.pid for c in kids if c.pid not in busy and c.status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.05)
    q = mp.Queue()
    p = _started(who_am_i, q)
    assert q.get(timeout=60)[2] in spare
    p.join(60)


# ------------------------------------------------------------------ the module and its contexts
def test_start_methods_are_accepted_recorded_and_checked_as_the_stdlib_does():
    from jpar.multiprocessing import Queue  # noqa: F401  naming a name must not fix the method
    from jpar.multiprocessing import context

    saved = context.get_start_method(allow_none=True)
    try:
        context.set_start_method(None, force=True)
        assert mp.get_start_method(allow_none=True) is None
        mp.set_start_method("fork")
        assert mp.get_start_method() == "fork" and mp.get_context().get_start_method() == "fork"
        with pytest.raises(RuntimeError, match="already been set"):
            mp.set_start_method("spawn")
        mp.set_start_method("forkserver", force=True)
        assert mp.get_start_method() == "forkserver"
        with pytest.raises(ValueError, match="cannot find context"):
            mp.get_context("threads")
        ctx = mp.get_context("spawn")
        assert ctx.Process is mp.Process and ctx.get_start_method() == "spawn"
        assert sorted(mp.get_all_start_methods()) == ["fork", "forkserver", "spawn"]
    finally:
        context.set_start_method(saved, force=True)


def test_the_stdlib_layout_imports():
    from jpar.multiprocessing.pool import Pool
    from jpar.pool import Pool as JparPool

    assert Pool is JparPool
    import multiprocessing

    assert set(multiprocessing.__all__) - {"reducer"} <= set(mp.__all__)
    code = ("import sys, jpar.multiprocessing; print(sorted(m for m in sys.modules "
            "if m.startswith('jpar.multiprocessing.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['jpar.multiprocessing.context', 'jpar.multiprocessing.process']", out.stderr


def test_a_context_makes_processes_and_synchronization_objects():
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=who_am_i, args=(q,))
    p.start()
    assert q.get(timeout=60)[2] == p.pid
    p.join(60)
    assert p.exitcode == 0
