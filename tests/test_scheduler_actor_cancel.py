"""The head's rule for cancelling a call a threaded or async actor has not started: the owner hears
(its get() raises) only once the actor's process acknowledged the cancel, so the call can never
start after get() raised. Before, the owner was told at once, and a threaded actor whose main
thread had not yet read the cancel started the call when a thread freed up (CI, 1 run in ~40).
Pure scheduler: no processes."""

from __future__ import annotations

import pytest

from jpar.runtime.head.scheduler import Scheduler
from jpar.runtime.head.scheduler_actors import CancelCall
from jpar.runtime.head.scheduler_state import SendFailure
from jpar.runtime.wire import protocol as P

ACTOR, CALL = 0x1000, 0x2000


def _alive_actor_with_a_call(**options) -> Scheduler:
    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.engine_added(1, "h", {"CPU": 2.0})
    s.create_actor(1, 0, P.ActorSpec(ACTOR, 1, "Sync", b"", (), (), dict(max_restarts=1, **options), ""))
    s.actor_ready(ACTOR, s.actors[ACTOR].incarnation, True, ("ipc://x",), "h")
    s.submit(1, [P.TaskSpec(CALL, 1, "Sync.record", b"", (), 1, (), 0, False, 0, ACTOR, -1)])
    return s


def _failures(actions) -> list:
    return [a for a in actions if isinstance(a, SendFailure)]


@pytest.mark.parametrize("options", [{"max_concurrency": 2}, {"is_async": True}], ids=["threaded", "async"])
def test_the_owner_of_a_concurrent_actors_call_hears_after_the_actor_acknowledged(options):
    s = _alive_actor_with_a_call(**options)
    actions = s.cancel(CALL, False, False)
    assert any(isinstance(a, CancelCall) and a.task_id == CALL for a in actions)
    assert not _failures(actions)                 # not yet: the actor's process may not have read it
    told = _failures(s.cancel_acked(CALL))
    assert [(f.owner, f.task_id) for f in told] == [(1, CALL)]
    assert not _failures(s.cancel_acked(CALL))    # once


def test_a_sync_actors_owner_hears_at_once():
    """A sync actor reads the head before each call, in order: no acknowledgement to wait for."""
    s = _alive_actor_with_a_call()
    assert [f.task_id for f in _failures(s.cancel(CALL, False, False))] == [CALL]


def test_an_actor_process_that_dies_before_acknowledging_lets_the_owner_hear():
    s = _alive_actor_with_a_call(max_concurrency=2)
    assert not _failures(s.cancel(CALL, False, False))
    told = _failures(s.actor_process_died(ACTOR, s.actors[ACTOR].incarnation, "was killed"))
    assert [f.task_id for f in told] == [CALL]    # restarting: no call of the old process can start
