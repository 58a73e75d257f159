"""Actors on another host: placed by resources like tasks, started by an engine there.

The other host is a network namespace joined to this one by a veth pair (tests/netns.py): the head
runs on this side (node "near", one engine), engines join from the namespace (node "far") with
``jpar start --address ... --resources '{"far": 1}'``, CurveZMQ on (off loopback); this process's
driver connects by address and key. An actor asking for the "far" resource can only start there:
one of that host's engines starts its process, which joins the head like any actor process. The
tests check where it runs (its network namespace), that its calls, a large argument and a named
lookup work across the link, and what its end looks like: ``jpar.kill``, a crash (restarted there),
the loss of its host's engines (a clear error naming the node, or, with restarts left, a restart on
another host that fits). Every process is stopped by pid and the namespace deleted, whatever a test did.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import psutil
import pytest

import jpar
from jpar import hooks

from . import netns
from .conftest import shm_segments

pytestmark = pytest.mark.timeout(240)

_SKIP = netns.netns_unavailable()
if _SKIP:
    pytest.skip(_SKIP, allow_module_level=True)

FAR_ONLY = {"resources": {"far": 1}}


def _by_value():
    class Probe:
        def __init__(self):
            self.calls = []

        def where(self):
            return os.readlink("/proc/self/ns/net"), jpar.get_runtime_context().get_node_id(), os.getpid()

        def add(self, i):
            self.calls.append(i)
            return list(self.calls)

        def total(self, arr):
            return float(arr.sum()), arr.shape

        def crash(self):
            os._exit(7)

    def ones(n):
        return np.ones(n)

    def total(arr):
        return float(arr.sum())

    def made_where(n):
        return jpar.get_runtime_context().get_node_id(), np.ones(n)

    def second_total(pair):
        return float(pair[1].sum())

    def node_of(value):
        return jpar.get_runtime_context().get_node_id()

    def made_here_and_where(n):
        return jpar.get_runtime_context().get_node_id(), np.ones(n)

    made_remote = jpar.remote(made_here_and_where)

    def handed_over(n, resources):
        """A value whose owner is this task's process, not the test's driver: [its ref, where it is]."""
        node_ref, value = made_remote.options(num_returns=2, resources=resources).remote(n)
        return [value, jpar.get(node_ref)]

    return (jpar.remote(Probe), jpar.remote(ones), jpar.remote(total), jpar.remote(made_where),
            jpar.remote(second_total), jpar.remote(node_of), made_remote, jpar.remote(handed_over))


Probe, ones, total, made_where, second_total, node_of, made_here_and_where, handed_over = _by_value()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One namespace, a head here and two engines there advertising {"far": 1}, for the module."""
    before = set(shm_segments())
    with netns.veth_pair("jpa", 252, unique=True) as pair:
        s = netns.Site(pair, tmp_path_factory.mktemp("remote-actors"), secure=True)
        try:
            s.start_head()
            s.join(2, "--resources", '{"far": 1}')
            s.connect(engines=3)
            yield s
        finally:
            s.close()
    left = set(shm_segments()) - before
    assert not left, f"shared-memory segments left behind: {sorted(left)}"


def _far_pids(site) -> set:
    """Pids of the processes running in the namespace now (the far engines and what they started)."""
    out = set()
    for p in site.far_procs:
        out |= {q.pid for q in netns.tree(p.pid)}
    return out


def _ends(proc: psutil.Process, timeout: float) -> bool:
    """Whether ``proc`` (not this process's child, so no wait() for it) exits within ``timeout``
    seconds: gone, or a zombie whose parent has not collected it yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_an_actor_whose_resources_only_another_host_has_runs_there(site):
    here = os.readlink("/proc/self/ns/net")
    a = Probe.options(name="far-probe", **FAR_ONLY).remote()
    ns, node, pid = jpar.get(a.where.remote(), timeout=60)
    assert (node, ns != here) == (netns.FAR, True), (node, ns, here)
    assert pid in _far_pids(site)                       # a child of one of that host's engines
    assert jpar.get([a.add.remote(i) for i in range(20)], timeout=60)[-1] == list(range(20))   # in order
    arr = np.arange(1_000_000, dtype=np.float64)        # 8 MB: through the object store and across the link
    assert jpar.get(a.total.remote(jpar.put(arr)), timeout=60) == (float(arr.sum()), arr.shape)
    same = jpar.get_actor("far-probe")                  # found by name from this (third) host
    assert jpar.get(same.where.remote(), timeout=30)[2] == pid
    status = {x["id"]: x for x in hooks.status()["actors"]}
    assert status[a._actor_id]["node"] == netns.FAR and status[a._actor_id]["pid"] == pid, status
    jpar.kill(a)
    assert _ends(psutil.Process(pid), 30)                # its process is gone
    with pytest.raises(jpar.ActorDiedError):
        jpar.get(a.where.remote(), timeout=30)


def test_later_remote_actors_are_forks_of_their_engines_template(site):
    """The first actor an engine starts starts that engine's template and waits for it: the engine's
    actors are forks of it, on the far host, answering as any."""
    actors, parents = [], set()
    for _ in range(30):
        a = Probe.options(**FAR_ONLY).remote()
        ns, node, pid = jpar.get(a.where.remote(), timeout=60)
        actors.append(a)
        parent = psutil.Process(pid).parent()
        if "jpar.runtime.engine.forker" in " ".join(parent.cmdline()):
            assert node == netns.FAR and parent.pid in _far_pids(site)
            assert parent.parent().pid in {p.pid for p in site.far_procs}   # the template of a far engine
            assert jpar.get(a.add.remote(1), timeout=30) == [1]
            break
        parents.add(parent.pid)
    else:
        raise AssertionError(f"no far actor was forked from a template: parents {parents}")
    for a in actors:
        jpar.kill(a)


def test_a_remote_actor_that_crashes_restarts_on_its_host(site):
    a = Probe.options(max_restarts=1, **FAR_ONLY).remote()
    _, node, pid = jpar.get(a.where.remote(), timeout=60)
    with pytest.raises(jpar.ActorDiedError):
        jpar.get(a.crash.remote(), timeout=60)
    _, node2, pid2 = jpar.get(a.where.remote(), timeout=60)   # the restarted process answers
    assert (node, node2) == (netns.FAR, netns.FAR) and pid2 != pid and pid2 in _far_pids(site)
    with pytest.raises(jpar.ActorDiedError):
        jpar.get(a.crash.remote(), timeout=60)                 # no restart left: dead,
    with pytest.raises(jpar.ActorDiedError, match="exited with code 7"):   # saying how
        jpar.get(a.where.remote(), timeout=60)


def test_a_task_runs_where_its_large_argument_is(site):
    """Locality: a task given a value stored on one host runs there when an engine of that host is
    free, instead of pulling it across the link to the first free engine (the head's host's comes
    first otherwise), and a value stored on the head's host keeps its tasks here."""

    def placed(value) -> list:
        nodes = []
        for _ in range(5):
            nodes.append(jpar.get(node_of.remote(value), timeout=60))
            while hooks.status()["scheduler"]["tasks"]["running"]:   # the head saw it end: engines idle
                pass
        return nodes

    far_value = made_where.options(**FAR_ONLY).remote(1_000_000)     # 8 MB, in node "far"'s store
    assert jpar.wait([far_value], timeout=60)[0] == [far_value]
    assert placed(far_value) == [netns.FAR] * 5
    [near_engine] = [e["id"] for e in hooks.engines() if e["node"] == netns.NEAR]
    near_value = made_where.options(placement=near_engine).remote(1_000_000)   # in the head's host's store
    assert jpar.get(near_value, timeout=60)[0] == netns.NEAR
    assert placed(near_value) == [netns.NEAR] * 5


def test_what_lived_on_a_lost_host_says_where_it_was(site):
    """An actor there dies naming the node; a value stored only there raises ObjectLostError at once,
    naming the node and the task that made it, in get() and in a task given it. It kills node
    "far"'s engines (the next test joins others)."""
    value = ones.options(**FAR_ONLY).remote(1_000_000)   # 8 MB: in node "far"'s store only
    assert jpar.wait([value], timeout=60)[0] == [value]
    a = Probe.options(**FAR_ONLY).remote()               # (the task gave "far" back: the actor takes it)
    _, _, pid = jpar.get(a.where.remote(), timeout=60)
    starter = psutil.Process(pid).parent()              # its engine, or that engine's actor template
    actor = psutil.Process(pid)
    for p in site.far_procs:                            # every engine of that host, by pid
        if p.is_running() and p.pid != pid:
            p.send_signal(signal.SIGKILL)
    assert _ends(starter, 30) and _ends(actor, 30)      # it went with its engine
    with pytest.raises(jpar.ActorDiedError, match=f"node {netns.FAR!r}"):
        jpar.get(a.where.remote(), timeout=60)
    while any(e["node"] == netns.FAR for e in hooks.engines()):   # each call a round trip to the head
        pass
    t0 = time.monotonic()
    with pytest.raises(jpar.ObjectLostError, match=f"task ones.*node {netns.FAR!r}"):
        jpar.get(value, timeout=60)
    assert time.monotonic() - t0 < 5, "get tried to pull from a node that is gone"
    with pytest.raises(jpar.ObjectLostError, match=f"node {netns.FAR!r}"):
        jpar.get(total.remote(value), timeout=60)     # runs here, given the lost value
    b = Probe.options(**FAR_ONLY).remote()              # no host has "far" any more
    with pytest.raises(jpar.ActorDiedError, match="no node of the cluster can ever provide"):
        jpar.get(b.where.remote(), timeout=30)


def test_an_actor_whose_host_is_lost_restarts_on_another_host_that_fits(site):
    """After the test above: node "far" has no engine left. Two more "hosts" (node names) join in the
    namespace, each advertising {"far": 1}; the actor starts on the first, which is then lost."""
    first = site.join(1, "--resources", '{"far": 1}', node="far-b")
    site.join(1, "--resources", '{"far": 1}', node="far-c")
    a = Probe.options(max_restarts=1, max_task_retries=1, **FAR_ONLY).remote()
    _, node, pid = jpar.get(a.where.remote(), timeout=60)
    assert node == "far-b"
    for p in first:
        p.send_signal(signal.SIGKILL)
    assert _ends(psutil.Process(pid), 30)               # the actor's process went with its engine
    _, node2, pid2 = jpar.get(a.where.remote(), timeout=60)   # sent before or after the restart: it runs there
    assert (node2, pid2 != pid) == ("far-c", True)


def test_a_value_lost_with_its_host_is_made_again_by_its_task(site):
    """Lineage: a task's 8 MB result stored only on one host; that host's engines are SIGKILLed while
    the driver holds the ref. get() pulls from the dead host at first, gives up when the head says
    the node left and the task runs again, and returns the value made anew on the other host; tasks
    given the ref, just before the head knew and after, get it too."""
    procs = {n: site.join(1, "--resources", '{"lin": 1}', node=n) for n in ("far-d", "far-e")}
    deadline = time.monotonic() + 60
    while not set(procs) <= {e["node"] for e in hooks.engines()}:
        assert time.monotonic() < deadline, hooks.engines()
    value = made_where.options(resources={"lin": 1}).remote(1_000_000)
    node, arr = jpar.get(value, timeout=60)
    assert node in procs and arr.sum() == 1_000_000
    for p in procs[node]:
        p.send_signal(signal.SIGKILL)
    user = second_total.remote(value)                    # sent the old location, or waits for the new one
    t0 = time.monotonic()
    node2, arr2 = jpar.get(value, timeout=60)
    assert time.monotonic() - t0 < 25, "the pull from the lost host waited out its timeout"
    assert node2 == ({"far-d", "far-e"} - {node}).pop() and arr2.sum() == 1_000_000
    assert jpar.get([user, second_total.remote(value)], timeout=60) == [1_000_000] * 2


def test_a_reader_that_does_not_own_a_lost_value_gets_it_made_again_without_waiting(site):
    """The test's driver reads a value owned by another process (a task's, handed over inside a list)
    and already holds its location on the far host when that host's engines are SIGKILLed: the head
    tells every process (NodeLost), so get() asks for the value again and returns the one made anew on
    the other host. Before, only the owner heard: get() pulled from the dead host, waited out the
    pull's 30 s timeout, then asked again."""
    procs = {n: site.join(1, "--resources", '{"lin2": 1}', node=n) for n in ("far-h", "far-i")}
    deadline = time.monotonic() + 60
    while not set(procs) <= {e["node"] for e in hooks.engines()}:
        assert time.monotonic() < deadline, hooks.engines()
    near = next(e["id"] for e in hooks.engines() if e["node"] == netns.NEAR)
    value, node = jpar.get(handed_over.options(placement=near).remote(1_000_000, {"lin2": 1}), timeout=60)
    assert node in procs and value.owner != hooks.driver_info()["client_no"]
    ready, _ = jpar.wait([value], timeout=60, fetch_local=False)   # its location, not its bytes
    assert ready == [value]
    for p in procs[node]:
        p.send_signal(signal.SIGKILL)
    while node in {e["node"] for e in hooks.engines()}:           # the head saw the host go
        assert time.monotonic() < deadline + 60, hooks.engines()
    t0 = time.monotonic()
    arr = jpar.get(value, timeout=60)
    assert time.monotonic() - t0 < 20, "the pull from the lost host waited out its timeout"
    assert arr.sum() == 1_000_000
