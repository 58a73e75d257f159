"""jpar.multiprocessing.Process on the other backends: Ray runs it (its actors are processes), Dask
refuses it up front (its actors live inside worker processes)."""

import gc
import signal
import sys
import time

import pytest

import jpar
import jpar.multiprocessing as mp
from jpar.multiprocessing import server


def exits(code):
    sys.exit(code)


def sleeps():
    time.sleep(300)


def name_into(q):
    q.put(mp.current_process().name)


@pytest.mark.timeout(120)
def test_dask_refuses_processes_and_names_the_alternative():
    pytest.importorskip("distributed")
    jpar.init(backend="dask", num_cpus=1)
    try:
        with pytest.raises(jpar.UnsupportedOnBackend, match="Pool or tasks"):
            mp.Process(target=exits, args=(0,)).start()
        assert mp.active_children() == []
    finally:
        jpar.shutdown()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A local Ray head, started the way the Ray backend's tests start theirs (with a retry: a loaded
    machine can miss Ray's own startup deadline)."""
    pytest.importorskip("ray")
    from tests import test_backend_ray

    yield from test_backend_ray.ray_head.__wrapped__(tmp_path_factory)


@pytest.mark.timeout(300)
def test_ray_process_sys_exit_code(ray_head):
    jpar.init(backend="ray", address=ray_head)
    try:
        p = mp.Process(target=exits, args=(3,))
        p.start()
        p.join(120)
        assert p.exitcode == 3
    finally:
        jpar.shutdown()


@pytest.mark.timeout(300)
def test_ray_runs_processes_with_the_stdlib_exit_codes(ray_head):
    jpar.init(backend="ray", address=ray_head)
    try:
        q = mp.Queue()
        # the state server's handle is held for the cluster's life: Ray ends an actor whose last handle
        # is dropped, named or not, and the Process below then found no server (now and then)
        gc.collect()
        assert server.client()._actor is not None
        p = mp.Process(target=name_into, args=(q,), name="on-ray")
        p.start()
        assert q.get(timeout=120) == "on-ray"
        p.join(60)
        assert p.exitcode == 0
        for method, code in (("terminate", -signal.SIGTERM), ("kill", -signal.SIGKILL)):
            p = mp.Process(target=sleeps)
            p.start()
            getattr(p, method)()
            p.join(60)
            assert p.exitcode == code
    finally:
        jpar.shutdown()


@pytest.mark.timeout(120)
def test_processes_still_running_at_shutdown_end_with_sigkill_and_start_no_new_cluster():
    jpar.init(num_engines=1)
    try:
        p = mp.Process(target=sleeps, daemon=True)
        p.start()
        assert p.pid and p.is_alive()
    finally:
        jpar.shutdown()
    p.join(30)   # returns: nothing would resolve the run call of a cluster that is gone
    assert p.exitcode == -signal.SIGKILL and not p.is_alive()
    p.terminate()   # a no-op now; must not start a new cluster to look the process up
    assert not jpar.is_initialized()
    assert p not in mp.active_children()


def total_from(q):
    return float(q.get(timeout=60).sum())


def total_of_pickled(blob):
    import pickle

    return float(jpar.get(pickle.loads(blob)).sum())


@pytest.mark.timeout(300)
def test_ray_refs_pickled_outside_ray_are_found_by_other_processes(ray_head):
    """A large Queue item (only its ref travels, as bytes, through the state server) and a ref
    pickled by hand are got in a task on Ray; before, the task's process did not know the ref
    ("not known to this process any more", ObjectLostError). The session's registry of such refs is
    a Ray actor while it runs."""
    import pickle

    import numpy as np
    import ray

    from jpar import backends

    jpar.init(backend="ray", address=ray_head)
    try:
        q = mp.Queue()
        q.put(np.ones(300_000))                      # > 1 MiB: through the object store
        assert jpar.get(jpar.remote(total_from).remote(q), timeout=120) == 300_000.0
        ref = jpar.put(np.arange(200_000, dtype=float))
        blob = pickle.dumps(ref)
        del ref
        gc.collect()                                 # the pickle alone keeps the value
        got = jpar.get(jpar.remote(total_of_pickled).remote(blob), timeout=120)
        assert got == float(np.arange(200_000, dtype=float).sum())
        b = backends.current()
        assert ray.get_actor(f"jpar-escaped-{b.cluster_id}", namespace=b.namespace) is not None
    finally:
        jpar.shutdown()
