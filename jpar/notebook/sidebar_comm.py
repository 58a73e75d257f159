"""The kernel's side of the JupyterLab sidebar: what only this notebook knows, over a comm.

The sidebar gets cluster-wide figures from the Jupyter server (:mod:`jpar.labserver`); which
cells of *this* notebook have work in flight, and cancelling it, only the kernel can answer.
The sidebar opens a comm with target ``jpar.sidebar``; JupyterLab >= 4.4 puts it on a kernel
subshell when the kernel supports them (ipykernel >= 7), so answers come while a cell is busy.
Messages may therefore arrive on a subshell thread: handlers only read the driver's dicts
(copied in one C-level step) and send through the comm, which is thread-safe.

::

    sidebar -> kernel  {"request": "info", "id": n}
    kernel  -> sidebar {"reply": "info", "id": n, "attached": bool, "cluster": {...}, "driver": no,
                        "layer": bool, "pending": N,
                        "cells": [{"cell_id", "msg_id", "pending", "names": {...}}, ...]}
    sidebar -> kernel  {"request": "cancel", "id": n, "cell_id": optional, "force": bool}
    kernel  -> sidebar {"reply": "cancel", "id": n, "cancelled": k}

Per-cell figures need the notebook layer (``%load_ext jpar``: it records which cell submitted
each task); without it the reply still says which cluster and driver this kernel is.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

__all__ = ["TARGET", "register", "notebook_info", "cancel_pending"]

TARGET = "jpar.sidebar"
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
            else:
                reply = {"error": f"unknown request {req!r}; this kernel's jpar knows 'info' and 'cancel'"}
        except Exception as exc:   # answer, whatever went wrong: the sidebar is waiting
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        comm.send(dict(reply, reply=req, id=data.get("id")))

    comm.on_msg(on_msg)


def _cell_id(cell: Any) -> str:
    parent = getattr(cell, "parent", None) or {}
    return str((parent.get("metadata") or {}).get("cellId") or "")


def _layer_loaded() -> bool:
    """Whether ``%load_ext jpar`` runs in this kernel (it records which cell submitted each task)."""
    ipython_mod = sys.modules.get("IPython")
    shell = ipython_mod.get_ipython() if ipython_mod is not None else None
    return getattr(shell, "_jpar_layer", None) is not None


def notebook_info() -> dict:
    """Which cluster this kernel drives, and its unfinished tasks grouped by submitting cell."""
    from jpar import hooks

    driver = hooks.driver_info()
    pending = hooks.pending_tasks()
    info: dict = {"attached": driver is not None, "pid": os.getpid(), "pending": len(pending), "cells": [],
                  "layer": _layer_loaded()}
    if driver is None:
        return info
    info["cluster"] = {"id": driver["cluster_id"], "address": driver["address"]}
    info["driver"] = driver["client_no"]
    cells: dict[int, dict] = {}
    for tid, (cell, name) in pending.items():
        key = getattr(cell, "key", 0)
        row = cells.get(key)
        if row is None:
            parent = getattr(cell, "parent", None) or {}
            row = cells[key] = {"cell_id": _cell_id(cell), "msg_id": (parent.get("header") or {}).get("msg_id", ""),
                                "pending": 0, "names": {}}
        row["pending"] += 1
        row["names"][name] = row["names"].get(name, 0) + 1
    info["cells"] = sorted(cells.values(), key=lambda r: -r["pending"])
    return info


def cancel_pending(cell_id: str | None = None, force: bool = False) -> int:
    """Cancel this kernel's unfinished tasks (only those one cell submitted, given its id)."""
    from jpar import hooks

    ids = [tid for tid, (cell, _) in hooks.pending_tasks().items() if not cell_id or _cell_id(cell) == cell_id]
    if ids:
        hooks.cancel_tasks(ids, force=force)
    return len(ids)
