"""Chaining on a real cluster: a task waiting for one value goes to the engine making it and starts
there when it is made; whatever happens to the producer, every link ends as it would have without."""

import os
import signal
import time

import pytest

import jpar
from jpar import hooks

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("cluster")]   # conftest: one cluster per module


@jpar.remote
def inc(x, wait=0.0):
    time.sleep(wait)
    return x + 1


@jpar.remote
def step(prev, wait=0.0):
    """A link that says where it ran: (links so far, the pid of each)."""
    time.sleep(wait)
    n, pids = prev
    return n + 1, (*pids, os.getpid())


@jpar.remote
def fail_at(x, bad):
    if x == bad:
        raise KeyError(f"link {x}")
    return x + 1


@jpar.remote(max_retries=1, retry_exceptions=True)
def flaky(x, marker):
    if not os.path.exists(marker):           # the first attempt fails, the retry succeeds
        open(marker, "w").close()
        raise ConnectionError("first attempt")
    return x + 1


@jpar.remote(num_returns=2)
def split(x):
    return x, bytes(2 * 2**20)                # the second: over the inline limit, in the object store


@jpar.remote
def size(b, x):
    return len(b) + x


def _states(sub, ids) -> dict:
    """task id -> the states its events went through, from a subscription made before submitting."""
    seen: dict = {}
    for e in sub.poll(0.5):
        if e.kind == "task" and e.key in ids:
            seen.setdefault(e.key, []).append(e.state)
    return seen


def test_a_chain_runs_on_its_engine_without_waiting_at_the_head():
    sub = hooks.subscribe_events()
    try:
        x = 0
        refs = []
        for _ in range(200):
            x = inc.remote(x)
            refs.append(x)
        assert jpar.get(x, timeout=60) == 200
        assert jpar.get(refs, timeout=30) == list(range(1, 201))
        deadline = time.monotonic() + 10
        seen: dict = {}
        ids = {r.id for r in refs}
        while time.monotonic() < deadline and sum(1 for s in seen.values() if "done" in s) < 200:
            for k, v in _states(sub, ids).items():
                seen.setdefault(k, []).extend(v)
        chained = [k for k, s in seen.items() if s[:2] == ["waiting", "assigned"] and "queued" not in s]
        # without chaining every link goes waiting -> queued at the head once its argument is made
        assert len(chained) >= 150, {k: seen[k] for k in list(seen)[:5]}
    finally:
        sub.close()


def test_each_link_runs_where_its_argument_was_made():
    """A chain submitted while its first link runs: every link runs in that link's engine process
    (a link submitted after its argument was made is placed like any ready task)."""
    x = step.remote((0, ()), 0.5)
    for _ in range(30):
        x = step.remote(x)
    n, pids = jpar.get(x, timeout=30)
    assert n == 31 and len(set(pids)) == 1, pids


def test_a_failing_link_fails_every_later_link_with_its_error():
    x = 0
    refs = []
    for _ in range(40):
        x = fail_at.remote(x, 10)
        refs.append(x)
    assert jpar.get(refs[9], timeout=30) == 10
    for r in (refs[10], refs[25], refs[-1]):
        with pytest.raises(KeyError, match="link 10"):
            jpar.get(r, timeout=30)
    assert jpar.get(inc.remote(1), timeout=30) == 2          # the cluster goes on


def test_a_retried_link_still_feeds_the_chain(tmp_path):
    x = inc.remote(0, 0.2)                                    # the retried link is chained behind this one
    x = flaky.remote(x, str(tmp_path / "tried"))
    for _ in range(20):
        x = inc.remote(x)
    assert jpar.get(x, timeout=60) == 22
    assert (tmp_path / "tried").exists()


def test_cancelling_a_link_fails_the_links_behind_it():
    head = inc.remote(0, 30.0)
    x = head
    refs = []
    for _ in range(10):
        x = inc.remote(x)
        refs.append(x)
    jpar.cancel(head)
    with pytest.raises(jpar.TaskCancelledError):
        jpar.get(head, timeout=30)
    for r in refs:                                   # long before the 30 s link could have ended
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(r, timeout=20)
    assert jpar.get(inc.remote(1), timeout=30) == 2


def test_a_chain_through_a_stored_value_and_a_second_return():
    a, big = split.remote(5)
    x = size.remote(big, 0)                                   # chained behind split, on its engine
    for _ in range(5):
        x = inc.remote(x)
    assert jpar.get(x, timeout=30) == 2 * 2**20 + 5
    assert jpar.get(a, timeout=30) == 5


def test_two_tasks_waiting_for_one_value_both_get_it():
    r = inc.remote(0, 0.2)
    kids = [inc.remote(r) for _ in range(6)]                  # one is chained, the others wait at the head
    assert jpar.get(kids, timeout=30) == [2] * 6


def test_a_chain_survives_its_engine_being_killed():
    """The engine running a chain is SIGKILLed after its first link: the links it held go back to the
    head (unstarted ones wait again for their argument), the started one is retried, and the chain ends
    with the right value. Last in this module: the cluster has one engine fewer afterwards."""
    first = step.remote((0, ()), 0.2)
    x = first
    for _ in range(40):
        x = step.remote(x, 0.05)
    _, (pid,) = jpar.get(first, timeout=30)
    os.kill(pid, signal.SIGKILL)
    n, pids = jpar.get(x, timeout=60)
    # (the first link itself may run again: its engine can die before the head hears it finished)
    assert n == 41 and pids[-1] != pid, pids
