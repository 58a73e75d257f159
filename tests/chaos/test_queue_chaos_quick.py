"""A few queue chaos rounds in ``make test``: producers and consumers of a jpar.multiprocessing Queue
SIGKILLed mid-stream (``make chaos`` runs more: ``python -m tests.chaos.queues``). The seed is fixed so a
failure replays: ``python -m tests.chaos.queues --rounds 4 --seed 7``."""

from __future__ import annotations

import pytest

import jpar

from .queues import run_queue_chaos


@pytest.mark.timeout(300)
def test_queue_chaos_rounds_duplicate_reorder_lose_and_hang_nothing():
    assert not jpar.is_initialized()
    report = run_queue_chaos(rounds=4, seed=7, timeout=60.0)
    assert report.rounds == 4 and report.kills >= 1 and report.delivered > 0
    assert report.ok(), report.problems
    assert not jpar.is_initialized()
