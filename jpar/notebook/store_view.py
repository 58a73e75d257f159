"""The object store's largest objects named by what made them, for the dashboard.

A store reports objects by id, size and owner; a person thinks of them as "the result of
``load_table``", "the array put in cell [4]", "``frames[2]``". All three are driver-side facts, so
they work on every backend: the task's name comes from the dashboard's own task records (a task's
return ref has the task's id), the ``put`` call site from :data:`jpar.api.put_sites` (recorded by
``jpar.put``), and the variables from the kernel's user namespace, looked up when the list is
built (once per status refresh, only for the few objects shown, with bounded cost).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any, Callable

from jpar import api, hooks
from jpar.refs import ObjectRef

__all__ = ["name_objects", "holders", "put_site", "site_label", "scope_label", "kernel_namespace", "freeable", "find_store",
           "normalize_store"]

MAX_NAMES = 5000      # namespace entries looked at per refresh
MAX_ITEMS = 1000      # items looked at in each list, tuple or dict of the namespace
MAX_LOOKS = 50_000    # values looked at per refresh in all (under 10 ms measured at the worst)
MAX_HOLDERS = 4       # names shown per object
LARGEST = 5           # the object store's largest objects shown


def kernel_namespace() -> dict | None:
    """The IPython kernel's user namespace, or None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ip = get_ipython()
    return getattr(ip, "user_ns", None) if ip is not None else None


def put_site(object_id: int) -> str | None:
    """Where ``jpar.put`` made this object: ``"put in cell [4], line 2"``, ``"put at prep.py:17 in load"``;
    None if this process did not put it (or it is older than the newest ``PUT_SITES_MAX`` puts)."""
    site = api.put_sites.get(object_id)
    if site is None:
        return None
    where = site_label(site)
    return f"put {where}" if where.startswith("in ") else f"put at {where}"


def site_label(site: tuple) -> str:
    """A (file, line, function) call site as a person names it: ``"in cell [4], line 2"`` (a notebook
    cell), ``"prep.py:17 in load"`` (a file)."""
    filename, line, function = site
    in_fn = "" if function.startswith("<") else f" in {function}"   # <module>, <listcomp>: the line says it
    cell = _cell_of(filename)
    if cell is not None:
        return (f"in cell [{cell}], line {line}" if cell else f"in a cell, line {line}") + in_fn
    return f"{os.path.basename(filename)}:{line}{in_fn}"


def scope_label(site: tuple) -> str:
    """The block of code a (file, line, function) site is in, as a person names it: ``"cell [4]"``,
    ``"prep.py in load"``, ``"prep.py"`` (module level). What the dashboard groups a function's tasks
    by: every line of a cell or a function is one piece of work, a loop's many tasks with it."""
    filename, _line, function = site
    cell = _cell_of(filename)
    if cell is not None:
        where = f"cell [{cell}]" if cell else "a cell"
    else:
        where = os.path.basename(filename)
    return where if function.startswith("<") else f"{where} in {function}"


def _cell_of(filename: str) -> int | None:
    """The execution count of the notebook cell compiled as ``filename`` (IPython names cells by
    temporary file names); 0 for a cell not in its map, None for a real file."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ip = get_ipython()
    compiler = getattr(ip, "compile", None) if ip is not None else None
    count = getattr(compiler, "_filename_map", {}).get(filename)
    if count is not None:
        return count
    return 0 if filename.startswith("<ipython-input-") else None


def holders(namespace: dict | None, wanted: set) -> dict:
    """``{object id: [names]}`` of the variables in ``namespace`` that hold a ref to one of the ``wanted``
    object ids, directly (``x``) or in a list, tuple or dict (``refs[3]``, ``d['k']``). Names starting
    with ``_`` (IPython's output history) are skipped; cost is bounded by MAX_NAMES, MAX_ITEMS per
    container and MAX_LOOKS in all."""
    out: dict = {}
    if not namespace or not wanted:
        return out
    try:
        items = list(itertools.islice(namespace.items(), MAX_NAMES))   # the kernel's thread may change it
    except RuntimeError:
        return out

    def note(oid: int, label: str) -> None:
        names = out.setdefault(oid, [])
        if len(names) < MAX_HOLDERS:
            names.append(label)

    budget = MAX_LOOKS
    for name, v in items:
        if budget <= 0:
            break
        budget -= 1
        if name.startswith("_"):
            continue
        if isinstance(v, ObjectRef):
            if v.id in wanted:
                note(v.id, name)
        elif isinstance(v, (list, tuple)):
            part = v[:min(MAX_ITEMS, budget)]
            budget -= len(part)
            for i, x in enumerate(part):
                if isinstance(x, ObjectRef) and x.id in wanted:
                    note(x.id, f"{name}[{i}]")
        elif isinstance(v, dict):
            try:
                entries = list(itertools.islice(v.items(), min(MAX_ITEMS, budget)))
            except RuntimeError:     # changed by the kernel's thread meanwhile
                continue
            budget -= len(entries)
            for k, x in entries:
                if isinstance(x, ObjectRef) and x.id in wanted:
                    note(x.id, f"{name}[{k!r}]")
    return out


def _object_id(text: Any) -> int | None:
    if isinstance(text, int):
        return text
    try:
        return int(str(text), 16)
    except ValueError:
        return None


def name_objects(store: dict | None, task_name: Callable[[int], str | None], namespace: dict | None,
                 client_no: int | None) -> dict | None:
    """Add to each of ``store["largest"]`` (rows of :func:`normalize_store`):
    ``made_by`` (``"task load_table"``, ``"put in cell [4], line 2"``, or ``""`` when unknown: another
    driver's object, or one older than this process's records), ``vars`` (names holding its ref) and
    ``mine`` (this process owns it), ``freeable`` and ``why_not`` (:func:`freeable`). ``task_name(id)`` is the dashboard's name for a task id."""
    if not store or not store.get("largest"):
        return store
    ids = {}
    for row in store["largest"]:
        oid = _object_id(row.get("id"))
        if oid is not None:
            ids[oid] = row
    found = holders(namespace, set(ids))
    for oid, row in ids.items():
        name = task_name(oid)
        row["made_by"] = f"task {name}" if name else (put_site(oid) or "")
        row["vars"] = found.get(oid, [])
        row["mine"] = client_no is not None and row.get("owner_no") == client_no
        if row["mine"]:
            row["owner"] = "this notebook"
        row["freeable"], row["why_not"] = freeable(row)
    return store


def freeable(row: dict) -> tuple[bool, str]:
    """Whether the dashboard may free this object (jpar.free): only one this process holds a ref to,
    as its owner or through a variable; else why not, for the disabled button's title."""
    if row.get("mine") or row.get("vars"):
        return True, ""
    return False, ("another driver's object, and no variable of this notebook holds a ref to it: free it "
                   "from the driver that made it")


def find_store(st: dict) -> Any:
    """The object-store figures of a status: its own entry, else the cluster's store_statistics hook."""
    for k in ("object_store", "store"):
        if st.get(k):
            return st[k]
    fn = getattr(hooks, "store_statistics", None) or getattr(hooks, "object_store", None)
    if callable(fn):
        try:
            return fn()
        except Exception:  # the store's hook is optional and may not be ready
            return None
    return None


def _pick(d: dict, *names, default=None):
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


def _as_dict(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    if hasattr(x, "_asdict"):
        return x._asdict()
    return x


def normalize_store(raw: Any) -> dict | None:
    """Object-store figures in one shape, whatever the store reports (one dict, a list of hosts, or
    ``{node: statistics}``): ``{"hosts": [{host, used, capacity, spilled, objects}], "largest": [{id,
    size, owner, owner_no, host, spilled}]}``; None when the cluster reports none."""
    raw = _as_dict(raw)
    if not raw or not isinstance(raw, dict):
        return None
    hosts_raw = _pick(raw, "hosts", "nodes", default=None)
    if hosts_raw is None:
        values = [_as_dict(v) for v in raw.values()]
        if values and all(isinstance(v, dict) for v in values):      # {node: statistics}
            hosts_raw = {k: v for k, v in zip(raw, values)}
        else:
            hosts_raw = [raw]
    if isinstance(hosts_raw, dict):
        rows = [(k, _as_dict(v)) for k, v in hosts_raw.items()]    # a row's own host name beats its key
        hosts_raw = [dict(v, host=v.get("host") or k) if isinstance(v, dict) else {"host": k} for k, v in rows]
    hosts, objects = [], []
    for h in hosts_raw:
        h = _as_dict(h)
        if not isinstance(h, dict):
            continue
        objs = h.get("objects")
        host = str(_pick(h, "host", "node", "name", default=""))
        count = _pick(h, "object_count", "count", "num_objects", default=None)
        if isinstance(objs, (list, tuple)):
            objects.extend((o, host) for o in objs)
            if count is None:
                count = len(objs)
        elif isinstance(objs, int) and count is None:
            count = objs
        hosts.append({"host": host,
                      "used": _pick(h, "used", "used_bytes", "bytes_used", "bytes", default=None),
                      "capacity": _pick(h, "capacity", "capacity_bytes", "size", "limit", default=None),
                      "spilled": _pick(h, "spilled", "spilled_bytes", "bytes_spilled", default=None),
                      "objects": count})
    objects.extend((o, "") for o in _pick(raw, "largest", "largest_objects", "top", default=()) or ())
    largest = []
    for o, host in objects:
        o = _as_dict(o)
        if isinstance(o, dict):
            oid = _pick(o, "id", "object_id", default="")
            owner = _pick(o, "owner", "holder", "holders", default="")
            largest.append({"id": f"{oid:x}" if isinstance(oid, int) else str(oid), "size": _pick(o, "size", "bytes"),
                            "owner": f"client {owner}" if isinstance(owner, int) else str(owner),
                            "owner_no": owner if isinstance(owner, int) else None, "host": host,
                            "spilled": bool(o.get("spilled"))})
        elif isinstance(o, (list, tuple)) and len(o) >= 2:
            largest.append({"id": f"{o[0]:x}" if isinstance(o[0], int) else str(o[0]), "size": o[1],
                            "owner": str(o[2]) if len(o) > 2 else "", "owner_no": None, "host": host,
                            "spilled": False})
    largest.sort(key=lambda o: -(o["size"] or 0))
    return {"hosts": hosts, "largest": largest[:LARGEST]}
