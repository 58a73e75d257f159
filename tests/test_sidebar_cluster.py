"""The sidebar's card for a Dask or Ray cluster, pushed by the kernel that drives it
(jpar.notebook.sidebar_cluster): the model alone (no processes), then a real kernel per backend
(jupyter_client) with the sidebar's comm open as JupyterLab opens it.
"""

from __future__ import annotations

import time
import types

import pytest

from jpar.events import Event
from jpar.notebook.sidebar_cluster import ClusterFigures, card_info, store_figures

from .test_backends_notebook import kernel  # noqa: F401  (one kernel per backend, module-scoped)
from .test_notebook_kernel import _send, ok

pytestmark = pytest.mark.timeout(240)


def _task(tid: int, state: str, t: float = 0.0) -> Event:
    return Event(t, "task", tid, state, {})


def test_counts_follow_task_events_and_count_a_task_once():
    f = ClusterFigures()
    assert f.apply([_task(1, "queued"), _task(2, "waiting"), _task(1, "running")])
    assert {s: n for s, n in f.counts.items() if n} == {"waiting": 1, "running": 1}
    assert f.apply([_task(1, "done"), _task(2, "cancelled")])
    # Dask runs a cancelled task to its end: its late "done" must not count it again
    assert not f.apply([_task(2, "done"), Event(0.0, "metrics", 0, "sample", {"cpu": 5.0})])
    assert {s: n for s, n in f.counts.items() if n} == {"done": 1, "cancelled": 1}
    assert f.finished == 2 and not f.states


def test_snapshot_has_the_servers_shape_and_the_backends_flags():
    from jpar.backends.dask import DaskBackend

    f = ClusterFigures()
    f.apply([_task(7, "running")])
    f.status = {"engines": [{"id": 1, "pid": 11, "host": "h", "cpu": 50.0, "rss": 2**20, "executing": 1,
                             "memory_limit": 2**30},
                            {"id": 0, "pid": 10, "host": "h", "cpu": 0.0, "rss": 0}],
                "actors": [{"id": 3, "class": "C", "name": "", "state": "alive"}]}
    f.store = {"h": {"used": 5, "capacity": 100, "spilled": 1, "objects": None}}
    connected = types.SimpleNamespace(name="dask", capabilities=DaskBackend.capabilities, owns_cluster=False)
    snap = f.snapshot({"address": "tcp://127.0.0.1:1", "cluster_id": "dask-x", "client_no": 42},
                      card_info(connected), 0.0)
    assert snap["address"] == "tcp://127.0.0.1:1" and snap["backend"] == "dask" and snap["source"] == "kernel"
    assert [e["id"] for e in snap["engines"]] == [0, 1]
    assert snap["engines"][0]["cpu"] is None and snap["engines"][0]["rss"] is None      # not sampled: "-"
    assert snap["engines"][1] == {"id": 1, "node": "h", "pid": 11, "cpu": 50.0, "rss": 2**20, "queued": 0,
                                  "busy": True, "mem_limit": 2**30}
    assert snap["tasks"]["running"] == 1 and snap["drivers"][0]["tasks"] == 1 and snap["drivers"][0]["no"] == 42
    assert snap["store"] == {"used": 5, "capacity": 100, "spilled": 1, "objects": None}
    assert snap["capabilities"]["add_engines"] is False
    assert "adding and removing engines" in snap["unsupported"]["add_engines"]
    assert "stop" not in snap                  # the sidebar can stop it: through this kernel
    assert snap["owned"] is False and "keeps running" in snap["stop_title"]    # connected to: disconnect only
    started = card_info(types.SimpleNamespace(name="dask", capabilities=DaskBackend.capabilities, owns_cluster=True))
    assert started["owned"] is True and "Stop this dask cluster and its workers" in started["stop_title"]


def test_stop_request_shuts_jpar_down_and_says_what_it_stopped(monkeypatch):
    """The sidebar's stop on a Dask or Ray card: the kernel runs jpar.shutdown() and answers which
    cluster it was and whether it stopped it or only left it (run on the native backend here; the
    browser test clicks it on Dask and Ray)."""
    import jpar
    from jpar.notebook.sidebar_comm import stop_cluster

    assert stop_cluster() == {"stopped": None, "backend": None, "owned": False}     # nothing to stop
    address = jpar.init(num_engines=1).address
    try:
        got = stop_cluster()
        assert got == {"stopped": address, "backend": "native", "owned": False} and not jpar.is_initialized()
    finally:
        jpar.shutdown()


def test_store_figures_read_rays_and_dasks_keys():
    total, nodes = store_figures({"n1": {"host": "a", "bytes_used": 10, "capacity": 50, "spilled_bytes": 2,
                                         "object_count": 3, "objects": [{}]},
                                  "n2": {"used": 4, "capacity": 50, "spilled": 0, "objects": None}})
    assert total == {"used": 14, "capacity": 100, "spilled": 2, "objects": 3}
    assert [(n["host"], n["objects"]) for n in nodes] == [("a", 3), ("n2", None)]


def test_kernel_pushes_its_clusters_card_while_a_cell_runs(kernel):  # noqa: F811
    """With the sidebar's comm open (main shell, kernel idle), a kernel on Dask or Ray pushes its
    cluster's card: backend, address, engines with CPU and memory, store, capability flags; while a
    cell runs tasks the card's counts move, pushed with no status message but the cell's; after
    jpar.shutdown() the card goes (``cluster: null``)."""
    ok(*kernel.run("import numpy as np\nkept = jpar.put(np.ones(1_000_000))\n"
                   "@jpar.remote\ndef nap(s):\n    time.sleep(s)\n    return s\n"))
    comm_id = f"sidebar-card-{kernel.backend}"
    opened = _send(kernel, "shell_channel", "comm_open", {"comm_id": comm_id, "target_name": "jpar.sidebar", "data": {}})
    kernel.wait_for(lambda m: m["parent_header"].get("msg_id") == opened and m["msg_type"] == "status"
                    and m["content"]["execution_state"] == "idle")

    def card(pred, timeout=60, since=None):
        try:
            t, m = kernel.wait_for(lambda m: m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
                                   and m["content"]["data"].get("push") == "cluster"
                                   and pred(m["content"]["data"]["cluster"]), timeout=timeout, since=since)
        except TimeoutError:
            raise AssertionError(f"no such card pushed: {cards()[-3:]}") from None
        return t, m["content"]["data"]["cluster"]

    def cards():
        return [m["content"]["data"]["cluster"] for _, m in list(kernel.log) if m["msg_type"] == "comm_msg"
                and m["content"]["comm_id"] == comm_id and m["content"]["data"].get("push") == "cluster"]

    _, first = card(lambda c: c is not None and len(c["engines"]) == 2
                    and all(e["rss"] for e in c["engines"]) and c["store"]["used"] >= 8_000_000)
    info = next(m["content"]["data"] for _, m in list(kernel.log) if m["msg_type"] == "comm_msg"
                and m["content"]["comm_id"] == comm_id and m["content"]["data"].get("push") == "info")
    assert first["backend"] == kernel.backend == info["backend"]
    assert first["address"] == info["cluster"]["address"] and first["id"] == info["cluster"]["id"]
    assert first["capabilities"]["add_engines"] is False and first["unsupported"]["add_engines"]
    assert first["store"]["capacity"] > first["store"]["used"]
    assert all(e["cpu"] is not None and e["rss"] > 10 * 2**20 for e in first["engines"]), first["engines"]

    busy = kernel.submit("naps = [nap.remote(0.5) for _ in range(6)]\nprint(sum(jpar.get(naps, timeout=60)))")
    t_started, _ = kernel.wait_for(lambda m: m["parent_header"].get("msg_id") == busy
                                   and m["msg_type"] == "execute_input")
    t_running, running = card(lambda c: c is not None and c["tasks"]["running"] >= 1, since=t_started)
    assert busy not in kernel.replies, "the card came only after the cell"        # pushed mid-cell
    _, done = card(lambda c: c is not None and c["tasks"]["done"] >= 6, since=t_running)
    assert sum(done["tasks"][s] for s in ("waiting", "queued", "assigned", "running")) == 0, done["tasks"]
    ok(kernel.wait(busy, timeout=60), kernel.outputs(busy))
    t_end = max(t for t, m in list(kernel.log) if m["parent_header"].get("msg_id") == busy)
    during = [m for t, m in list(kernel.log) if t_started <= t <= t_end and m["msg_type"] == "status"]
    assert all(m["parent_header"].get("msg_id") == busy for m in during), \
        [(m["parent_header"].get("msg_type"), m["content"]) for m in during]

    t_shut = time.monotonic()
    ok(*kernel.run("jpar.shutdown()"))
    card(lambda c: c is None, timeout=30, since=t_shut)
    _send(kernel, "shell_channel", "comm_close", {"comm_id": comm_id, "data": {}})
