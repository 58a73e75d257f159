"""The dashboard's largest-objects table on the Dask and Ray backends, on real clusters: a task's
result and a put value held by variables are listed under the task's name and the put's call
site, with the variables' names, and can be freed from the table (the "free" button's message).

Their front ends list the largest objects since 2026-12: Dask from a scan on its scheduler, Ray
from the locations of this driver's newest refs (both cached a few seconds, so each test waits
for its rows rather than reading the first answer). One cluster per backend for the module.
"""

from __future__ import annotations

import sys
import time

import psutil
import pytest

import jpar
from jpar.testing.plugin import INIT_ARGS

from .waits import wait_until

pytestmark = pytest.mark.timeout(240)

MiB = 2**20
NEEDS = {"dask": "distributed", "ray": "ray"}


@jpar.remote
def make_block(nbytes):
    return bytes(nbytes)


@pytest.fixture(scope="module", params=sorted(NEEDS), ids=lambda name: f"on-{name}")
def backend(request, tmp_path_factory):
    """A cluster of the backend: Dask's LocalCluster as the conformance kit starts it (on
    127.0.0.1), Ray's head as tests/test_backend_ray.py starts it (``ray start --node-ip-address=
    127.0.0.1``, stopped by its PID; Ray still listens on the host's address too); the backend's
    name. Every process it started is gone once the module's tests on it are done."""
    name = request.param
    pytest.importorskip(NEEDS[name])
    if jpar.is_initialized():
        jpar.shutdown()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    head = None
    if name == "ray":
        from tests.test_backend_ray import _start_head, _stop_head

        head = _start_head(tmp_path_factory.mktemp("ray"))
        assert head is not None, "ray start --head did not come up"
        jpar.init(backend="ray", address=head[2])
    else:
        jpar.init(backend=name, **INIT_ARGS[name])
    try:
        yield name
    finally:
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before
                   and "resource_tracker" not in " ".join(_cmdline(p))]   # multiprocessing's, kept till exit
        jpar.shutdown()
        alive = []
        if head is not None:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            alive = _stop_head(*head[:2])
        _, left = psutil.wait_procs(started, timeout=30)
        for p in left:
            p.kill()
        assert not alive and not left, f"{name} processes survived: {[p.pid for p in alive + left]}"


def _cmdline(p: psutil.Process) -> list:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.fixture
def board(backend):
    """Make dashboards whose variables are a dict of the test's (not a kernel's); closed after."""
    boards = []

    def make(ns: dict):
        d = jpar.dashboard(status_interval=0.2)
        d.model.namespace = lambda: ns
        boards.append(d)
        return d

    yield make
    for d in boards:
        d.close()


def rows_of(d) -> dict:
    """The dashboard's largest-objects rows by id, as last published."""
    return {r["id"]: r for r in ((d.totals.get("store") or {}).get("largest") or ())}


def test_the_table_names_a_task_result_and_a_put_by_what_made_them(board):
    ns: dict = {}
    d = board(ns)
    ns["block"] = make_block.remote(6 * MiB)
    ns["kept"] = [jpar.put(bytes(5 * MiB))]; line = sys._getframe().f_lineno
    jpar.wait([ns["block"]], timeout=60)
    me = test_the_table_names_a_task_result_and_a_put_by_what_made_them.__name__
    want = {f"{ns['block'].id:x}": ("task make_block", ["block"]),
            f"{ns['kept'][0].id:x}": (f"put at test_store_view_backends.py:{line} in {me}", ["kept[0]"])}

    def named():
        rows = rows_of(d)
        return all(k in rows and (rows[k].get("made_by"), rows[k].get("vars")) == v for k, v in want.items())

    assert wait_until(named, 60), d.totals.get("store")
    rows = [r for k, r in rows_of(d).items() if k in want]
    assert all(r["owner"] == "this notebook" and r["mine"] and r["freeable"] and r["size"] >= 5 * MiB
               and r["host"] for r in rows), rows


def test_the_free_message_frees_the_object_and_its_row_stays_gone(board):
    ns: dict = {}
    d = board(ns)
    ns["block"] = make_block.remote(7 * MiB)
    ns["kept"] = jpar.put(bytes(6 * MiB))
    jpar.wait([ns["block"]], timeout=60)
    keys = [f"{ns['block'].id:x}", f"{ns['kept'].id:x}"]
    assert wait_until(lambda: all(rows_of(d).get(k, {}).get("freeable") for k in keys), 60), d.totals.get("store")
    for key in keys:
        d._on_front_end_msg(d, {"type": "free", "id": key}, [])
    assert wait_until(lambda: not set(keys) & set(rows_of(d)), 60), d.totals.get("store")
    # the front ends cache their lists for a few seconds: a freed object must not come back meanwhile
    deadline = time.monotonic() + 7.0
    while time.monotonic() < deadline:
        assert not set(keys) & set(rows_of(d)), d.totals.get("store")
        time.sleep(0.2)
    for ref in (ns["block"], ns["kept"]):
        with pytest.raises(jpar.ObjectFreedError):
            jpar.get(ref, timeout=30)
    assert jpar.get(make_block.remote(10), timeout=60) == bytes(10)     # the cluster goes on


@pytest.mark.parametrize("backend", ["dask"], indirect=True, ids=["on-dask"])
def test_another_dask_clients_object_is_listed_but_not_freeable(backend, board):
    """A jpar object of another client of the Dask cluster (its key made here by a plain Dask
    client, as another driver's put would be) is listed with that client as owner; it cannot be
    freed from this notebook, and a message asking to is refused."""
    import distributed

    from jpar import backends

    b = backends.current()
    other_no = b.prefix ^ 1                          # another client's number (Dask's ids: client << 32 | n)
    oid = (other_no << 32) | 1
    key = f"{oid:x}"
    ns: dict = {}
    d = board(ns)
    other = distributed.Client(b.client.scheduler.address, set_as_default=False)
    try:
        held = other.scatter({b.key(oid): bytes(9 * MiB)})
        assert wait_until(lambda: key in rows_of(d), 60), d.totals.get("store")
        row = rows_of(d)[key]
        assert row["owner"] == f"client {other_no}" and not row["mine"] and not row["freeable"], row
        assert row["size"] >= 9 * MiB and row["why_not"], row
        assert d.free_object(key) is False           # what the updater thread does with a free message
        assert key in rows_of(d), d.totals.get("store")
        assert other.gather(held[b.key(oid)]) == bytes(9 * MiB)
    finally:
        other.close()


@pytest.mark.parametrize("backend", ["ray"], indirect=True, ids=["on-ray"])
def test_rays_driver_only_listing_uses_the_dashboards_ids(backend):
    """Ray's listing without node statistics (Ray's minimal install, no grpcio) names objects by the
    ids the dashboard's table and its free button use (``f"{id:x}"``): ids are random, so one in
    four has a leading zero, which a fixed-width hex id kept and the table's rows then missed."""
    import gc

    from jpar import backends, hooks
    from jpar.notebook.store_view import normalize_store

    ref = None
    while ref is None:                      # ~4 tries: a ref whose 62-bit id has a leading zero hex digit
        r = jpar.put(bytes(8 * MiB))
        if r.id < 1 << 60:
            ref = r
        del r
        gc.collect()
        hooks.release_now()
    fe = backends.current().frontend
    out = {node: dict(row, objects=[]) for node, row in hooks.store_statistics(timeout=10).items()}
    fe._driver_objects(out, 10.0)           # what store_statistics lists when no raylet answers GetNodeStats
    largest = normalize_store(out)["largest"]
    assert f"{ref.id:x}" in {o["id"] for o in largest}, (f"{ref.id:x}", largest)
