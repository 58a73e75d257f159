"""What the head's per-task events carry besides the new state (built only while someone listens).

A submission's event names the task, its ref arguments (``deps``), parent, owner and call site
(``site``, the owner's number for it: see :mod:`jpar.call_sites`), and ``args``:
the bytes of its pickled arguments, which the driver already made for the TaskSpec (a ``len()``,
no pickling here). A finished task's event carries what its engine reported in the TaskDone record,
``fetch``: the seconds it spent resolving the task's ref arguments (mapping them from its host's
object store, pulling them from another host's, unpickling the inline copies the head forwarded),
and ``size``: the bytes of its result(s), the pickle when inline, the segment when stored. The
dashboard and ``jpar.timeline()`` draw ``fetch`` as the run's transfer phase (its wait they take from
the queued -> running gap) and show the sizes beside a task's details: a task's ref argument is
another task's result, whose size its own finished event gave.
"""

from __future__ import annotations

from ..store.segments import LOCATION_MAGIC, decode_location

__all__ = ["submitted", "finished"]


def submitted(task) -> dict:
    """The info of a task's first event (``task``: the scheduler's record, with its TaskSpec)."""
    spec = task.spec
    return {"name": spec.name, "deps": spec.deps, "parent": spec.parent, "owner": task.owner,
            "args": len(spec.args), "site": spec.site}


def finished(records, locations: dict) -> dict:
    """``{task id: {"fetch": s, "size": bytes}}`` for a batch of DoneRecords; ``locations`` is the
    head's table of stored objects (object id -> [Location]), filled from the same records."""
    out = {}
    for r in records:
        size = 0
        for oid, _, blob in r.objects:
            if blob[:4] == LOCATION_MAGIC:
                locs = locations.get(oid)
                size += locs[-1].size if locs else decode_location(blob).size
            else:
                size += len(blob)
        out[r.task_id] = {"fetch": r.fetch, "size": size} if r.objects else {"fetch": r.fetch}
    return out
