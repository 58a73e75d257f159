"""The backends' per-call fast paths keep their guarantees (see docs/benchmarks.md, "jpar on Dask and Ray").

* Dask: the refs a driver dropped are released in one batch (:mod:`jpar.backends.dask.release`);
  a key whose future something else still holds stays until that holder lets it go.
* Ray: a call's header travels as plain lists (Ray msgpacks them instead of pickling), and the
  user's values keep their types and their sharing.
"""

from __future__ import annotations

import gc

import pytest

import jpar
from jpar import backends

from .waits import wait_until

pytestmark = pytest.mark.timeout(180)


@jpar.remote
def echo(*args, **kwargs):
    return args, kwargs


@jpar.remote
class Box:
    def __init__(self, x=0):
        self.x = x

    def get(self, *args, **kwargs):
        return self.x, args, kwargs


@pytest.fixture
def dask_backend():
    pytest.importorskip("distributed")
    if jpar.is_initialized():
        jpar.shutdown()
    jpar.init(backend="dask", num_engines=2)
    yield backends.current()
    jpar.shutdown()


def test_dask_dropped_refs_are_released_in_one_batch_and_held_futures_stay(dask_backend):
    b = dask_backend
    client = b.client
    refs = [echo.remote(i) for i in range(200)]
    assert len(jpar.get(refs, timeout=60)) == 200
    keys = [b.key(r.id) for r in refs]
    kept = refs[0]
    held = b._futures[kept.id]          # a holder of the Dask future besides the backend
    del refs
    gc.collect()
    b._drain()

    def on_scheduler(dask_scheduler, keys=keys):
        return [k for k in keys if k in dask_scheduler.tasks]

    assert wait_until(lambda: client.run_on_scheduler(on_scheduler) == [keys[0]])
    assert all(k not in client.refcount for k in keys[1:])
    assert jpar.get(kept, timeout=30) == ((0,), {})
    del kept
    gc.collect()
    b._drain()
    assert held.result(timeout=30) == ((0,), {})      # still ours: the backend did not release it
    del held
    gc.collect()
    assert wait_until(lambda: client.run_on_scheduler(on_scheduler) == [])


@pytest.fixture(scope="module")
def ray_backend():
    pytest.importorskip("ray")
    if jpar.is_initialized():
        jpar.shutdown()
    jpar.init(backend="ray", num_engines=2)
    yield backends.current()
    jpar.shutdown()


def _has_tuple(x) -> bool:
    if isinstance(x, tuple):
        return True
    if isinstance(x, list):
        return any(_has_tuple(v) for v in x)
    return False


def test_ray_call_header_is_plain_lists(ray_backend):
    b = ray_backend
    fnbox = b._ship(echo, echo._fn, echo._name)
    values, rrs, kw_names, deps = b._pack((), {})
    meta = b._meta(1 << 16, "echo", None, kw_names)
    assert values is None and rrs == [] and deps == []
    assert not _has_tuple([meta, fnbox, values])       # Ray packs it with msgpack alone


def test_ray_values_keep_their_types_and_sharing(ray_backend):
    shared = [1, 2]
    ref = jpar.put({"k": (1, 2)})
    args, kwargs = jpar.get(echo.remote((1,), [2], {3: (4,)}, shared, shared, None, b"x", 2 ** 70, k=ref, t=()),
                            timeout=60)
    assert args[:4] == ((1,), [2], {3: (4,)}, [1, 2]) and args[3] is args[4]
    assert args[5:] == (None, b"x", 2 ** 70)
    assert kwargs == {"k": {"k": (1, 2)}, "t": ()}
    assert jpar.get(echo.remote(), timeout=60) == ((), {})
    box = Box.remote(5)
    assert jpar.get(box.get.remote(), timeout=60) == (5, (), {})
    assert jpar.get(box.get.remote((1,), y=echo.remote(2)), timeout=60) == (5, ((1,),), {"y": ((2,), {})})
    assert jpar.get(echo.options(placement=0).remote(1, z=(2,)), timeout=60) == ((1,), {"z": (2,)})


def test_ray_ids_do_not_follow_the_random_module_seed():
    pytest.importorskip("ray")
    import random

    from jpar.backends.ray import worker as W

    random.seed(0)
    first = [W.new_id() for _ in range(3)]
    random.seed(0)
    assert not set(first) & {W.new_id() for _ in range(3)}      # user code seeding random repeats no id
    assert all(i & 0xFFFF == 0 and 0 < i < 2 ** 62 for i in first)   # room for num_returns
