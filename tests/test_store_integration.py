"""The object store in a real cluster: zero copy, freeing by reference count, spilling,
ObjectStoreFullError, two nodes on one machine, and no segment left after shutdown or SIGKILL.

One small-capacity cluster (64 MiB) serves the module; the head-SIGKILL test runs last and
ends it."""

from __future__ import annotations

import gc
import os
import signal
import time
import warnings

import numpy as np
import pytest

import jpar
from jpar.runtime.store import object_store as S
from jpar.backends.native import current_driver as require_driver
from jpar.errors import ObjectStoreFullError

from .conftest import jpar_children, wait_gone

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20
CAPACITY = 64 * MiB


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ctx = jpar.init(num_engines=2, object_store_bytes=CAPACITY,
                    object_spill_dir=str(tmp_path_factory.mktemp("spill")))
    yield ctx
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == []
    assert mine(ctx) == []


def tag(ctx) -> str:
    return S.cluster_tag(bytes.fromhex(require_driver().conn["key"])) if jpar.is_initialized() else ctx._tag


def mine(ctx, kind: str = "") -> list[str]:
    """This cluster's segments in /dev/shm (kind: "o" objects, "p" pooled, "d" freed but mapped)."""
    t = ctx._tag
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"jpar-{t}-") and
                  (not kind or n.split("-")[3] == kind))


@pytest.fixture(autouse=True)
def _remember_tag(cluster):
    cluster._tag = S.cluster_tag(bytes.fromhex(require_driver().conn["key"]))


def wait_until(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        gc.collect()
        time.sleep(0.05)
    return pred()


def store_stats() -> dict:
    return require_driver().query("object_store", timeout=10)


@jpar.remote
def describe(x):
    base = x.base
    while base is not None and not isinstance(base, memoryview) and getattr(base, "base", None) is not None:
        base = base.base
    obj = base.obj if isinstance(base, memoryview) else None
    return x.flags.writeable, type(obj).__name__, float(x.sum()), os.getpid()


@jpar.remote
def make(n: int, value: float):
    return np.full(n, value)


def backing(arr) -> str:
    """What finally holds an array's memory: "mmap" for a mapped store segment."""
    base = arr.base
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return type(base.obj).__name__ if isinstance(base, memoryview) else type(base).__name__


def test_put_get_is_zero_copy_and_read_only(cluster):
    arr = np.arange(MiB, dtype=np.float64)                 # 8 MiB
    ref = jpar.put(arr)
    assert len(mine(cluster, "o")) == 1                    # written once into shared memory
    a, b = jpar.get(ref), jpar.get(ref)
    assert np.array_equal(a, arr)
    assert not a.flags.writeable and not a.flags.owndata
    assert backing(a) == "mmap" and backing(b) == "mmap"   # a view on the mapped segment, no copy
    assert not np.shares_memory(a, arr)
    with pytest.raises(ValueError):
        a[0] = 1


def test_ref_argument_on_same_host_is_mapped_not_copied(cluster):
    arr = np.ones(MiB)
    ref = jpar.put(arr)
    writeable, kind, total, _ = jpar.get(describe.remote(ref))
    assert (writeable, kind, total) == (False, "mmap", float(MiB))


def test_large_argument_by_value_is_put_once(cluster):
    arr = np.full(MiB, 2.0)
    writeable, kind, total, _ = jpar.get(describe.remote(arr))
    assert (writeable, kind, total) == (False, "mmap", 2.0 * MiB)   # travelled through the store
    small = np.ones(10)
    writeable, kind, _, _ = jpar.get(describe.remote(small))
    assert writeable and kind != "mmap"                    # small values stay inline


@jpar.remote
def mapping_of(x):
    """This engine's pid and the inode of the mapping that holds ``x``'s data (from /proc/self/maps)."""
    addr = x.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            span, _, _, _, inode = line.split()[:5]
            lo, hi = (int(v, 16) for v in span.split("-"))
            if lo <= addr < hi:
                return os.getpid(), int(inode)
    return os.getpid(), None


def mapped_inodes(pid: int) -> set:
    with open(f"/proc/{pid}/maps") as f:
        return {int(line.split()[4]) for line in f if "/dev/shm/jpar-" in line}


def test_an_argument_passed_by_value_is_not_kept_mapped_by_the_engine(cluster):
    """Only this task reads a value passed by value: the engine lets go of its mapping when the
    task ends (before its result leaves), so freeing the value recycles its segment at once and
    the driver's next large write reuses it without page faults. A ref's value stays cached."""
    pid, inode = jpar.get(mapping_of.remote(np.full(MiB, 1.0)))
    assert inode and inode not in mapped_inodes(pid)
    ref = jpar.put(np.full(MiB, 2.0))
    pid, inode = jpar.get(mapping_of.remote(ref))
    assert inode in mapped_inodes(pid)                  # kept: the next task on this ref pays no faults


def test_large_result_travels_as_a_location(cluster):
    ref = make.remote(MiB, 4.0)
    out = jpar.get(ref)
    assert backing(out) == "mmap" and out.sum() == 4.0 * MiB
    d = require_driver()
    assert S.is_location(d.results[ref.id][1]) and len(d.results[ref.id][1]) < 200


def test_dropping_the_last_ref_frees_the_segment(cluster):
    gc.collect()
    assert wait_until(lambda: mine(cluster, "o") == [])
    ref = jpar.put(np.ones(MiB))
    res = make.remote(MiB, 1.0)
    jpar.get(res)                                           # the value is not kept: nothing maps it
    assert len(mine(cluster, "o")) == 2
    stats = store_stats()
    node = next(iter(stats.values()))
    assert node.object_count == 2 and all(o.refcount == 1 for o in node.objects)
    del ref, res
    assert wait_until(lambda: mine(cluster, "o") == [] and mine(cluster, "d") == [])


def test_a_kept_value_holds_memory_not_the_ref(cluster):
    """A get() result (e.g. in IPython's Out[]) keeps its mapping, not the object: the segment
    is parked as "held" and recycled once the value is dropped."""
    ref = jpar.put(np.ones(2 * MiB))
    value = jpar.get(ref)
    del ref
    assert wait_until(lambda: mine(cluster, "o") == [] and len(mine(cluster, "d")) == 1)
    assert next(iter(store_stats().values())).held_bytes >= 16 * MiB
    assert value.sum() == 2 * MiB                          # still valid
    del value
    assert wait_until(lambda: mine(cluster, "d") == [])


def test_spilling_and_transparent_restore(cluster):
    refs = [jpar.put(np.full(2 * MiB, float(i))) for i in range(6)]   # 6 x 16 MiB > 64 MiB
    node = next(iter(store_stats().values()))
    assert node.spilled_bytes > 0 and node.bytes_used <= CAPACITY
    assert sum(o.spilled for o in node.objects) >= 2
    for i, r in enumerate(refs):                          # spilled objects come back on get
        assert jpar.get(r)[0] == float(i)
    assert jpar.get(describe.remote(refs[0]))[2] == 0.0   # and in tasks
    del refs, r
    assert wait_until(lambda: mine(cluster, "o") == [] and mine(cluster, "d") == [] and
                      next(iter(store_stats().values())).spilled_bytes == 0)


def test_full_store_raises_object_store_full_error(cluster):
    held = [jpar.get(jpar.put(np.full(2 * MiB, 1.0))) for _ in range(3)]   # mapped: pinned
    # the refs are gone but the values map their segments: they cannot be spilled
    with pytest.raises(ObjectStoreFullError, match="capacity"):
        jpar.put(np.ones(3 * MiB))
    assert all(h[0] == 1.0 for h in held)                   # nothing was lost
    assert jpar.get(jpar.put(123)) == 123                  # the cluster keeps serving
    del held
    assert wait_until(lambda: mine(cluster, "d") == [])


def test_engine_sigkill_keeps_its_objects_and_leaves_no_segment(cluster):
    ref = make.remote(MiB, 7.0)
    _, _, _, pid = jpar.get(describe.remote(ref))           # an engine that mapped the object
    os.kill(pid, signal.SIGKILL)
    assert jpar.get(ref).sum() == 7.0 * MiB                 # objects outlive the process that wrote them
    assert jpar.get(describe.remote(ref))[2] == 7.0 * MiB   # the respawned engine maps it too
    del ref
    assert wait_until(lambda: mine(cluster, "o") == [])


def test_two_nodes_pull_objects_over_zeromq(cluster):
    from jpar import cli

    d = require_driver()
    before = {e["id"] for e in cluster.status()["engines"]}
    with warnings.catch_warnings():                     # `jpar start` leaves its engines running on purpose
        warnings.simplefilter("ignore", ResourceWarning)
        assert cli.main(["start", "--address", d.conn["head"], "--node", "other", "-n", "1"]) == 0
        gc.collect()
    d.query("wait_engines", len(before) + 1, timeout=30)
    other = next(e for e in cluster.status()["engines"] if e["node"] == "other")
    on_other = describe.options(placement=other["id"])
    arr = np.arange(2 * MiB, dtype=np.float64)
    ref = jpar.put(arr)
    writeable, kind, total, _ = jpar.get(on_other.remote(ref))
    assert total == float(arr.sum()) and kind != "mmap"    # pulled in chunks, not mapped
    made = make.options(placement=other["id"]).remote(MiB, 3.0)   # held: its segment stays to be counted
    out = jpar.get(made)
    assert out.sum() == 3.0 * MiB and backing(out) != "mmap"   # the driver pulled the other node's result
    stats = store_stats()
    assert "other" in stats                                # each node has its own namespace
    node_tags = {n.split("-")[2] for n in mine(cluster, "o")}
    assert len(node_tags) == 2


def test_head_sigkill_leaves_no_segment(cluster):
    """Last test: kills the module's head. The owner driver and the engines sweep the segments."""
    keep = [jpar.put(np.ones(MiB)), make.remote(MiB, 1.0)]
    jpar.get(keep[1])
    assert mine(cluster)
    procs = jpar_children()
    os.kill(require_driver().process.pid, signal.SIGKILL)
    assert wait_gone(procs, timeout=30) == []
    jpar.shutdown()
    assert mine(cluster) == []
    del keep
