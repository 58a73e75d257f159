"""An engine skips exactly the queued copies of a task that it gave back to the head.

The head may take a task back, dispatch it to the same engine again, and take that copy back
too before the engine reached either. Remembered as a set, the two grants skipped one copy and
the engine ran the other while the head ran the task elsewhere: fan-out parents ran twice and
test_nested_tasks' fan-out test hung about one round in a thousand.
"""

from jpar.runtime.engine.engine import GiveBacks


def test_two_copies_given_back_are_both_skipped():
    g = GiveBacks()
    assert g.grant([7]) == [7]      # first copy taken back, not reached yet
    assert g.grant([7]) == [7]      # dispatched here again, taken back again
    assert g.start(7) is False      # the engine reaches the first copy: skipped
    assert g.start(7) is False      # and the second
    assert g.start(7) is True       # a third dispatch, not taken back, runs


def test_a_copy_given_back_once_then_dispatched_again_runs_once():
    g = GiveBacks()
    assert g.grant([3, 4]) == [3, 4]
    assert g.start(3) is False      # the given-back copy
    assert g.start(3) is True       # the copy dispatched after it runs
    assert g.grant([3]) == []       # started: the head keeps it here
    assert g.start(4) is False


def test_a_started_task_is_not_given_back():
    g = GiveBacks()
    assert g.start(5) is True
    assert g.grant([5, 6]) == [6]


def test_started_ids_are_remembered_for_a_bounded_window():
    g = GiveBacks()
    for t in range(GiveBacks.RECENT + 10):
        assert g.start(t)
    assert len(g.started) == GiveBacks.RECENT
    assert g.grant([GiveBacks.RECENT + 9]) == []
