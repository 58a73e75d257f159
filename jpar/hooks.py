"""Integration points for front ends (the notebook layer, dashboards): who submitted a task,
where its output goes, which engines exist; cluster operations (add and remove engines, cancel
a driver's tasks). Plain functions over the current backend's front-end operations
(``backend.frontend``), so front ends never reach into a backend's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import backends

__all__ = ["set_submit_hook", "set_output_handler", "set_front_end", "apply_front_end", "cancel_tasks", "engines",
           "status", "task_ids_done", "subscribe_events", "summary_expand",
           "set_progress_reporter", "progress_reporter", "task_error", "store_statistics", "release_now",
           "driver_info", "pending_tasks", "remove_engines", "add_engines", "EngineChange", "cancel_driver_tasks"]

_front_end: tuple | None = None   # (submit_hook, output_handler) for drivers made later


def _fe(what: str, backend: Any = None) -> Any:
    return (backend or backends.require(what)).frontend


def _live() -> Any:
    b = backends.current()
    return None if b is None or b.closed else b


def set_submit_hook(hook: Callable[[int], Any] | None) -> None:
    """``hook(task_id)`` runs at every submission from this process (tasks and actor calls);
    what it returns is handed to the output handler with that task's output chunks."""
    _fe("set_submit_hook()").set_submit_hook(hook)


def set_output_handler(handler: Callable[[Any, Any], None] | None) -> None:
    """``handler(chunk, context)`` receives every chunk of task output (a record with ``task_id``,
    ``engine_id``, ``pid``, ``name``, ``stream``, ``text``); None restores printing."""
    _fe("set_output_handler()").set_output_handler(handler)


def set_front_end(submit_hook: Callable[[int], Any] | None,
                  output_handler: Callable[[Any, Any], None] | None) -> None:
    """Set both hooks on the current backend (if any) and remember them for backends that
    init() makes later (see apply_front_end); ``set_front_end(None, None)`` forgets them."""
    global _front_end
    _front_end = None if submit_hook is None and output_handler is None else (submit_hook, output_handler)
    if _live() is not None:
        set_submit_hook(submit_hook)
        set_output_handler(output_handler)


def apply_front_end() -> bool:
    """Give the current backend the remembered hooks if it lacks them; cheap and idempotent.
    Returns whether a live backend now has them."""
    b = _live()
    if _front_end is None or b is None:
        return False
    b.frontend.apply(*_front_end)
    return True


def cancel_tasks(task_ids, force: bool = False) -> None:
    """Cancel tasks by id (as seen by the submit hook); like jpar.cancel() on their refs."""
    _fe("cancel_tasks()").cancel_tasks(task_ids, force)


def cancel_driver_tasks(client_no: int | None = None, force: bool = False, *, driver: Any = None,
                        timeout: float = 10.0) -> int:
    """Cancel every unfinished task of one driver (client number ``client_no``, as in
    ``status()["clients"]``; None: this process's own) and the tasks they submitted; that driver's
    ``jpar.get`` raises TaskCancelledError. ``force`` kills the engines running them (local ones
    are replaced). Actor calls are left alone. Returns how many tasks were cancelled.
    Raises LookupError if no such client is connected. ``driver``: ask through this backend
    instead of the current one (e.g. the sidebar's)."""
    return _fe("cancel_driver_tasks()", driver).cancel_driver_tasks(client_no, force, timeout)


@dataclass(frozen=True)
class EngineChange:
    """What :func:`add_engines` or :func:`remove_engines` did, for a front end to say:
    ``str(change)`` is e.g. "added engine 3 (+1 CPU)".

    ``resources`` is the change of :func:`jpar.cluster_resources` it makes (``{"CPU": 1.0}``,
    ``{"CPU": -1.0}``; empty when the node's CPU count is fixed), ``note`` says why it is empty."""

    action: str                 # "added", "removing" (engines leave once their running task ends), "removed"
    engine_ids: tuple
    pids: tuple = ()
    resources: dict = field(default_factory=dict)
    note: str = ""

    def __str__(self) -> str:
        ids = ", ".join(map(str, self.engine_ids))
        what = f"{self.action} engine{'s' if len(self.engine_ids) != 1 else ''} {ids}"
        delta = ", ".join(f"{v:+g} {k}" for k, v in sorted(self.resources.items()) if v)
        return f"{what} ({delta or 'no resources: ' + (self.note or 'none advertised')})"



def add_engines(count: int = 1, *, timeout: float | None = None, driver: Any = None) -> EngineChange:
    """Start ``count`` more engines on the head's host, as its children (replaced if they crash,
    stopped with the cluster); returns once they have joined, with what they added: each brings one
    CPU unless the cluster was started with a fixed ``num_cpus``, in which case nothing is started
    and ResourceError says so (an engine more would run no more tasks at once). ``timeout``:
    seconds to wait for them to join (default: the start timeout). ``driver``: as above."""
    b = driver or backends.require("add_engines()")
    b.require("add_engines")
    ans = b.frontend.add_engines(count, timeout)
    return EngineChange("added", tuple(ans["engine_ids"]), tuple(ans["pids"]), dict(ans["resources"]),
                        ans.get("fixed", ""))


def remove_engines(count: int = 1, engine_ids=None, *, wait: bool = True, timeout: float | None = None,
                   driver: Any = None) -> EngineChange:
    """Remove engines from the cluster gracefully: ``engine_ids``, or else ``count`` of them (idle
    ones first, then the least busy, the newest first). Each takes no new task, gives back the tasks
    it prefetched but had not started (they run on other engines), finishes its running task, then
    stops (a local one is not replaced) and its node gives back the CPU it brought. Tasks pinned to
    it that had not started fail with ResourceError. Returns an :class:`EngineChange` (``engine_ids``,
    ``pids``, ``resources``: e.g. ``{"CPU": -1.0}``).

    With ``wait``, returns once they are gone from ``status()["engines"]`` (their processes exit
    right after), raising GetTimeoutError after ``timeout`` seconds (they still leave when done).
    Raises ValueError, removing nothing, if that would leave no engine taking tasks (a cluster keeps
    one: stop it instead), LookupError for an unknown engine id. ``driver``: as above."""
    b = driver or backends.require("remove_engines()")
    b.require("add_engines")
    ids = [int(i) for i in engine_ids or ()]
    ans, gone = b.frontend.remove_engines(count, ids, wait, timeout)
    return EngineChange("removed" if gone else "removing", tuple(ans["engine_ids"]), tuple(ans.get("pids", ())),
                        dict(ans.get("resources", {})), ans.get("fixed", ""))


def task_ids_done(task_ids) -> list:
    """Which of these task ids have a result (or error) in this process already."""
    return _fe("task_ids_done()").task_ids_done(task_ids)


def status(timeout: float = 10.0) -> dict:
    """The cluster's view: engines (id, pid, node, cpu, rss, queued), clients, resources, task counts."""
    return _fe("status()").status(timeout)


def engines(timeout: float = 10.0) -> list[dict]:
    """Live engines, ordered by id."""
    return sorted(status(timeout)["engines"], key=lambda e: e["id"])


def subscribe_events(summary: bool = False):
    """Subscribe to the current cluster's event stream (events published from now on): an object
    with ``poll(timeout)`` returning event records (``kind``, ``id``, ``state``, ``info``...),
    iteration, ``close()`` and ``summary``.

    ``summary=True`` asks for what a dashboard needs at any scale, where the backend can make it
    (the native one; elsewhere the full stream, and ``summary`` is False on the result): every
    0.25 s a ``summary`` event with each call site's task counts per state (absolute), and every
    event of the first 500 tasks submitted each second and of every failed task, not every task's."""
    return _fe("subscribe_events()").subscribe_events(summary)


def summary_expand(groups, on: bool = True) -> bool:
    """On the summary stream (``subscribe_events(summary=True)``): have every task of these groups
    (``(owner, name, site)`` as its ``summary`` events name them) told one by one from now on
    (``on``), as a dashboard does for the group it expands, or no longer. False where the backend
    has no summary stream."""
    return _fe("summary_expand()").summary_expand(list(groups), on)


# ---------------------------------------------------------------- progress reporting
_progress_reporter: Callable[[list, str, int], Any] | None = None


def set_progress_reporter(reporter: Callable[[list, str, int], Any] | None) -> None:
    """Install ``reporter(refs, what, target)``: jpar.get/jpar.wait on a list call it (``what`` is "get" or
    "wait", ``target`` how many refs must be ready) and run inside the context manager it returns (or
    without one if it returns None). None uninstalls."""
    global _progress_reporter
    _progress_reporter = reporter


def progress_reporter() -> Callable[[list, str, int], Any] | None:
    """The installed progress reporter, or None."""
    return _progress_reporter



def task_error(task_id: int) -> str | None:
    """``"Type: message"`` of a failed task whose result came back to this process, else None."""
    b = _live()
    return b.frontend.task_error(task_id) if b is not None else None


def store_statistics(timeout: float = 10.0) -> dict:
    """Object-store figures per node: ``{node: StoreStatistics}`` (used, capacity, spilled, objects)."""
    return _fe("store_statistics()").store_statistics(timeout)


def release_now(timeout: float = 10.0) -> None:
    """Send the releases of refs already garbage collected, and return once the cluster has applied
    them."""
    _fe("release_now()").release_now(timeout)


def driver_info() -> dict | None:
    """This process's connection as front ends name it (cluster, address, client number); None if none."""
    b = _live()
    return b.frontend.driver_info() if b is not None else None


def pending_tasks() -> dict:
    """``{task_id: (context, name)}`` of this process's unfinished tasks that a submit hook saw
    (the context is what the hook returned: the notebook layer's Cell). Empty without a hook."""
    b = _live()
    return b.frontend.pending_tasks() if b is not None else {}
