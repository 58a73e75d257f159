"""Where the scheduler starts an actor: on the head's node when its resources fit there (or it asks
for none), else on the first other node that has an engine and room; nowhere when no live node can
ever hold it. Pure scheduler: no processes (tests/test_remote_actors.py runs it across hosts)."""

from __future__ import annotations

from jpar.runtime.head.scheduler import Scheduler
from jpar.runtime.head.scheduler_actors import SpawnActor
from jpar.runtime.wire import protocol as P

HEAD, FAR, OTHER = "head-host", "far-host", "other-host"


def _cluster() -> Scheduler:
    s = Scheduler(prefetch=0)
    s.head_node = HEAD
    s.client_added(1)
    s.engine_added(1, HEAD, {"CPU": 2.0})
    s.engine_added(2, FAR, {"CPU": 4.0, "bigmem": 1.0})
    s.engine_added(3, OTHER, {"CPU": 8.0, "bigmem": 1.0})
    return s


def _create(s: Scheduler, actor_id: int, **resources) -> list:
    spec = P.ActorSpec(actor_id, 1, "A", b"", (), tuple(resources.items()), {}, "")
    return s.create_actor(1, 0, spec)


def _spawned(actions) -> list:
    return [(a.actor_id, a.node) for a in actions if isinstance(a, SpawnActor)]


def test_an_actor_asking_for_nothing_or_what_the_head_has_starts_on_the_heads_node():
    s = _cluster()
    assert _spawned(_create(s, 10)) == [(10, HEAD)]
    assert _spawned(_create(s, 11, CPU=2.0)) == [(11, HEAD)]


def test_an_actor_goes_where_its_resources_fit_first_by_node_name():
    s = _cluster()
    assert _spawned(_create(s, 10, bigmem=1.0)) == [(10, FAR)]      # far-host sorts before other-host
    assert _spawned(_create(s, 11, bigmem=1.0)) == [(11, OTHER)]    # far-host's bigmem is taken
    assert _spawned(_create(s, 12, CPU=6.0)) == [(12, OTHER)]       # only other-host has 6 CPUs
    assert s.nodes[OTHER].used == {"bigmem": 1.0, "CPU": 6.0}


def test_an_actor_waits_while_a_node_that_can_hold_it_is_busy_and_starts_when_it_frees():
    s = _cluster()
    _create(s, 10, bigmem=1.0)
    _create(s, 11, bigmem=1.0)
    assert _spawned(_create(s, 12, bigmem=1.0)) == []               # both taken: pending, not dead
    assert s.actors[12].state.value == "pending"
    assert _spawned(s.kill_actor(10, no_restart=True)) == [(12, FAR)]


def test_a_node_whose_engines_are_gone_holds_no_actor_and_one_only_it_could_hold_dies_saying_so():
    s = _cluster()
    s.engine_removed(2, "lost")
    s.engine_removed(3, "lost")
    actions = _create(s, 10, bigmem=1.0)
    assert _spawned(actions) == []
    assert s.actors[10].state.value == "dead"
    assert "no node of the cluster can ever provide" in str(s.actors[10].detail)


def test_a_restart_stays_on_the_actors_node():
    s = _cluster()
    spec = P.ActorSpec(10, 1, "A", b"", (), (("bigmem", 1.0),), {"max_restarts": 1}, "")
    assert _spawned(s.create_actor(1, 0, spec)) == [(10, FAR)]
    s.actor_ready(10, 0, True, ("tcp://x",), FAR)
    assert _spawned(s.actor_process_died(10, 0, "exited with code 1")) == [(10, FAR)]


def test_an_actor_whose_node_lost_its_engines_restarts_wherever_it_fits_now():
    s = _cluster()
    spec = P.ActorSpec(10, 1, "A", b"", (), (("bigmem", 1.0),), {"max_restarts": 2}, "")
    s.create_actor(1, 0, spec)
    s.actor_ready(10, 0, True, ("tcp://x",), FAR)
    s.engine_removed(2, "lost")                      # far-host has no engine left: its actor died with it
    assert _spawned(s.actor_process_died(10, 0, "was lost with its engine")) == [(10, OTHER)]
    assert FAR not in s.nodes and s.nodes[OTHER].used == {"bigmem": 1.0}
    s.actor_ready(10, 1, True, ("tcp://y",), OTHER)
    s.engine_removed(3, "lost")                      # and now no host has room: it waits, restarting
    assert _spawned(s.actor_process_died(10, 1, "was lost with its engine")) == []
    assert s.actors[10].state.value == "restarting"
    assert _spawned(s.engine_added(4, "new-host", {"CPU": 1.0, "bigmem": 1.0})) == [(10, "new-host")]


def test_killing_an_actor_that_waits_for_a_node_ends_it():
    s = _cluster()
    spec = P.ActorSpec(10, 1, "A", b"", (), (("bigmem", 1.0),), {"max_restarts": 2}, "")
    s.create_actor(1, 0, spec)
    s.actor_ready(10, 0, True, ("tcp://x",), FAR)
    s.engine_removed(2, "lost")
    s.engine_removed(3, "lost")
    s.actor_process_died(10, 0, "was lost with its engine")
    s.kill_actor(10, no_restart=False)               # restarts left, but nothing to kill: it ends
    assert s.actors[10].state.value == "dead"
