"""The kernel's side of the JupyterLab sidebar: what only this notebook knows, over a comm.

The sidebar gets a native cluster's figures from the Jupyter server (:mod:`jpar.labserver`); which
cells of *this* notebook have work in flight only the kernel knows, and so does a Dask or Ray
cluster's card (the server cannot reach those clusters). The sidebar opens a comm
with target ``jpar.sidebar`` (on the main shell, while the kernel is idle); from then on the
kernel *pushes* this notebook's figures from a thread of its own whenever they change, at most
``PUSH_INTERVAL_S`` apart. No request travels while a cell runs, and that matters: every request
a kernel handles makes it publish busy/idle status messages, and JupyterLab shows the last one
it saw as the notebook's state, so a request answered on a subshell mid-cell flipped a busy
notebook to "Idle". Messages the kernel sends on its own carry no status.

::

    sidebar -> kernel  comm_open (target jpar.sidebar), on the main shell while the kernel is idle
    kernel  -> sidebar {"push": "info", "attached": bool, "cluster": {...}, "driver": no,
                        "backend": name, "layer": bool, "pending": N, "pid": pid,
                        "cells": [{"cell_id", "msg_id", "pending", "names": {...},
                                   "tasks": ["ID" or "FIRST-LAST", ...]}, ...]}
                       (at once, then whenever it changes; a thread of this kernel sends it)
    kernel  -> sidebar {"push": "cluster", "cluster": {...card...} or null}
                       (only on a backend the Jupyter server cannot watch, Dask or Ray: the
                        cluster's card, from a second thread; see :mod:`.sidebar_cluster`)

Cancelling a cell's tasks goes through the Jupyter server with those task ids
(``POST /jpar/cancel {"address", "tasks"}``), never through the kernel, which may be busy
running that very cell; on Dask and Ray, which the server cannot reach, the sidebar sends the
``cancel`` request below, only while the kernel is idle. Requests work for any client, on any
shell or subshell (they are answered from the thread that receives them; handlers only read the driver's dicts,
copied in one C-level step, and send through the comm, which is thread-safe)::

    client -> kernel  {"request": "info", "id": n}           -> {"reply": "info", "id": n, ...as above}
    client -> kernel  {"request": "cancel", "id": n, "cell_id": optional, "force": bool}
                                                             -> {"reply": "cancel", "id": n, "cancelled": k}
    client -> kernel  {"request": "stop", "id": n}          -> {"reply": "stop", "id": n, "stopped": address
                                                                or None, "backend", "owned": bool}

``stop`` is the stop button of a Dask or Ray card (the server cannot reach those clusters): this
kernel runs ``jpar.shutdown()``, which stops a cluster jpar started and disconnects from one it
connected to; the sidebar sends it only while the kernel is idle, after asking the user.

Per-cell figures need the notebook layer (``%load_ext jpar``: it records which cell submitted
each task); without it the push still says which cluster and driver this kernel is.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

__all__ = ["TARGET", "register", "notebook_info", "cancel_pending", "stop_cluster"]

TARGET = "jpar.sidebar"
PUSH_INTERVAL_S = 0.5          # a comm's figures are looked at this often, and sent when they changed
_registered: set = set()          # ids of comm managers the target is registered with
_lock = threading.Lock()


def register() -> bool:
    """Register the comm target in the running IPython kernel, once; False outside a kernel.

    Cheap and import-free outside a kernel: ``import jpar`` calls it when ipykernel is loaded."""
    ipython_mod = sys.modules.get("IPython")
    shell = ipython_mod.get_ipython() if ipython_mod is not None else None
    manager = getattr(getattr(shell, "kernel", None), "comm_manager", None)
    if manager is None or not hasattr(manager, "register_target"):
        return False
    with _lock:
        if id(manager) in _registered:
            return True
        manager.register_target(TARGET, _on_open)
        _registered.add(id(manager))
    return True


def _on_open(comm: Any, open_msg: dict) -> None:
    def on_msg(msg: dict) -> None:
        data = (msg.get("content") or {}).get("data") or {}
        req = data.get("request")
        try:
            if req == "info":
                reply = notebook_info()
            elif req == "cancel":
                reply = {"cancelled": cancel_pending(data.get("cell_id"), bool(data.get("force")))}
            elif req == "stop":
                reply = stop_cluster()
            else:
                reply = {"error": f"unknown request {req!r}; this kernel's jpar knows 'info', 'cancel' and 'stop'"}
        except Exception as exc:   # answer, whatever went wrong: the sidebar is waiting
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        comm.send(dict(reply, reply=req, id=data.get("id")))

    from .sidebar_cluster import ClusterPusher

    pusher = _Pusher(comm)
    cards = ClusterPusher(comm.send)     # the card of a Dask or Ray cluster this kernel drives
    comm.on_msg(on_msg)
    comm.on_close(lambda msg: (pusher.stop(), cards.stop()))
    pusher.start()
    cards.start()


def stop_cluster() -> dict:
    """The sidebar's stop on a card this kernel pushes: ``jpar.shutdown()`` here. Says which cluster
    it was and whether it stopped (jpar started it) or only this kernel left it."""
    from .. import api, backends

    b = backends.current()
    if b is None or b.closed:
        return {"stopped": None, "backend": None, "owned": False}
    try:
        address = b.describe().get("address", b.cluster_id)
    except Exception:    # a cluster that no longer answers: stop what is left of it all the same
        address = b.cluster_id
    owned, name = bool(b.owns_cluster), b.name
    api.shutdown()
    return {"stopped": address, "backend": name, "owned": owned}


class _Pusher:
    """One comm's thread: sends this notebook's figures whenever they change (no status messages)."""

    def __init__(self, comm: Any, interval: float = PUSH_INTERVAL_S):
        self.comm = comm
        self.interval = interval
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="jpar-sidebar-push", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        last = None
        while True:
            try:
                info = notebook_info(with_tasks=True)
            except Exception as exc:   # say it, and keep going: the next look may work
                info = {"error": f"{type(exc).__name__}: {exc}"}
            if info != last:
                try:
                    self.comm.send(dict(info, push="info"))
                except Exception:      # the comm or the kernel is closing
                    return
                last = info
            if self.stopping.wait(self.interval):
                return


def _cell_id(cell: Any) -> str:
    parent = getattr(cell, "parent", None) or {}
    return str((parent.get("metadata") or {}).get("cellId") or "")


def _layer_loaded() -> bool:
    """Whether ``%load_ext jpar`` runs in this kernel (it records which cell submitted each task)."""
    ipython_mod = sys.modules.get("IPython")
    shell = ipython_mod.get_ipython() if ipython_mod is not None else None
    return getattr(shell, "_jpar_layer", None) is not None


def _runs(ids: list) -> list:
    """Sorted task ids as ``"ID"`` / ``"FIRST-LAST"`` strings (ids pass 2**53: JSON numbers would round)."""
    out: list = []
    for tid in sorted(ids):
        if out and tid == out[-1][1] + 1:
            out[-1][1] = tid
        else:
            out.append([tid, tid])
    return [str(a) if a == b else f"{a}-{b}" for a, b in out]


def notebook_info(with_tasks: bool = False) -> dict:
    """Which cluster this kernel drives, and its unfinished tasks grouped by submitting cell
    (``with_tasks``: each cell's task ids too, as :func:`_runs` writes them)."""
    from jpar import backends, hooks

    driver = hooks.driver_info()
    pending = hooks.pending_tasks()
    info: dict = {"attached": driver is not None, "pid": os.getpid(), "pending": len(pending), "cells": [],
                  "layer": _layer_loaded()}
    if driver is None:
        return info
    info["cluster"] = {"id": driver["cluster_id"], "address": driver["address"]}
    info["backend"] = getattr(backends.current(), "name", "")
    info["driver"] = driver["client_no"]
    cells: dict[int, dict] = {}
    ids: dict[int, list] = {}
    for tid, (cell, name) in pending.items():
        key = getattr(cell, "key", 0)
        row = cells.get(key)
        if row is None:
            parent = getattr(cell, "parent", None) or {}
            row = cells[key] = {"cell_id": _cell_id(cell), "msg_id": (parent.get("header") or {}).get("msg_id", ""),
                                "pending": 0, "names": {}}
            ids[key] = []
        row["pending"] += 1
        row["names"][name] = row["names"].get(name, 0) + 1
        ids[key].append(tid)
    if with_tasks:
        for key, row in cells.items():
            row["tasks"] = _runs(ids[key])
    info["cells"] = sorted(cells.values(), key=lambda r: (-r["pending"], r["cell_id"]))
    return info


def cancel_pending(cell_id: str | None = None, force: bool = False) -> int:
    """Cancel this kernel's unfinished tasks (only those one cell submitted, given its id)."""
    from jpar import hooks

    ids = [tid for tid, (cell, _) in hooks.pending_tasks().items() if not cell_id or _cell_id(cell) == cell_id]
    if ids:
        hooks.cancel_tasks(ids, force=force)
    return len(ids)
