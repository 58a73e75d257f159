"""Objects of jpar.multiprocessing outlive their cluster without starting another.

A Pipe end (or any object) of a stopped cluster that is garbage-collected later used to reach for its
state server through ``jpar.get_actor`` / an actor call, which started a new cluster on first use in
the middle of other work (and then waited on it for ever): later ``jpar.init(...)`` calls found that
cluster running and ignored their arguments."""

import gc

import pytest

import jpar
import jpar.multiprocessing as mp

pytestmark = pytest.mark.timeout(90)


def test_objects_of_a_stopped_cluster_collected_later_start_no_cluster():
    jpar.init(num_engines=1)
    a, b = mp.Pipe()
    q = mp.Queue()
    q.put(1)
    jpar.shutdown()
    del a, b, q
    gc.collect()
    assert not jpar.is_initialized()
