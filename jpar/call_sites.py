"""Where this process's code submitted its tasks: the dashboard groups a function's tasks by call site.

``f.remote()`` in cell [3] and in cell [5] are two different pieces of work to the person reading
the task graph, though the function is one. Each submission notes its caller's (file, line, function)
here, outside jpar's own modules (a ``Pool.map`` is named by the line that called ``map``).

Cost is what decides the shape: a submission costs a few microseconds in all, so noting its site must
cost well under one. Task ids of one process grow with each submission, and a loop submits from
one line many times in a row, so the sites are kept as runs ``(first id, last id, site)``: a submission
from the same site as the previous one only moves that run's end (one comparison, one store), and
memory grows with the number of site changes, not of tasks. Ids that arrive out of order (two threads
submitting at once; the Ray backend's ids are random) go to a small side table; when that table
drops its oldest entries, the runs their ids fall in can no longer tell them from their own, so
those runs answer "not known" from then on rather than a wrong site. Only three fields of the frame are kept, never the frame
(it would keep the caller's locals alive). Both tables are bounded: the oldest half goes first.
"""

from __future__ import annotations

import bisect
import sys
import threading

__all__ = ["begin", "note", "current", "site_number", "site_of", "clear", "submitting", "RUNS_MAX"]

RUNS_MAX = 8192          # site runs kept (each a change of call site between two submissions)
_ODD_MAX = 8192          # out-of-order ids kept
_GAP = 1 << 16           # a run takes in ids at most this far past its end: the ids of one process's
                         # submissions count up (native, Dask); random ones (Ray) each start a run,
                         # so a run never spans ids another process may have made

_firsts: list = []       # first task id of each run, ascending
_runs: list = []         # [first, last, site, code, line, mixed] per run, same order (mixed: see _odd)
_odd: dict = {}          # task id -> site, for ids below the newest run's end
_lock = threading.Lock()
_get_ident = threading.get_ident
#: idents of the threads inside a ``.remote()`` now (-> the site :func:`begin` found): the head may
#: publish a task's first event before its submission returns and notes the site, so a reader that
#: finds no site while this is not empty asks again a moment later (the dashboard does) instead of
#: taking the task for another process's
submitting: dict = {}
_numbers: dict = {}      # (code, line) -> its number (what a task's spec carries: see current())
_sites: list = [None]    # number -> (file, line, function); 0 is "no site"
SITES_MAX = 65536
_COMPREHENSIONS = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})


def begin(depth: int = 2) -> int:
    """A ``.remote()`` starts submitting (see :data:`submitting`): finds its caller (``depth`` frames
    above this call, past jpar's own code) and numbers that site (:func:`current`, which the native
    backend puts in the task's spec so the head can count tasks per call site); :func:`note` then
    records it for the task id. The caller discards the result from :data:`submitting` once noted."""
    ident = _get_ident()
    f = _caller(depth)
    code, line = f.f_code, f.f_lineno
    number = _numbers.get((code, line))
    if number is None:
        number = _number(f, code, line)
    submitting[ident] = (code, line, number, f)
    return ident


def _caller(depth: int):
    """The first frame, ``depth`` frames above the caller of this function, that is not jpar's own code."""
    f = sys._getframe(depth + 1)
    name = f.f_globals.get("__name__", "")
    while (name == "jpar" or name.startswith("jpar.")) and f.f_back is not None:   # jpar submits for users
        f = f.f_back
        name = f.f_globals.get("__name__", "")
    return f


def _scope(f) -> str:
    """The function whose code a frame runs (Python < 3.12: a comprehension's enclosing one)."""
    scope = f.f_code.co_name
    if scope in _COMPREHENSIONS and f.f_back is not None:
        scope = f.f_back.f_code.co_name
    return scope


def _number(f, code, line) -> int:
    scope = _scope(f)
    with _lock:
        number = _numbers.get((code, line))
        if number is None:
            if len(_sites) >= SITES_MAX:   # past it, new sites go unnumbered (grouped by function only):
                return 0                   # a number is never reused, so none ever names another site
            number = _numbers[(code, line)] = len(_sites)
            _sites.append((code.co_filename, line, scope))
    return number


def current() -> int:
    """The number of the call site of the ``.remote()`` this thread is in (0 outside one)."""
    located = submitting.get(_get_ident())
    return located[2] if located is not None else 0


def site_number(number: int) -> tuple | None:
    """(file, line, function) of a call site by its number (:func:`current`), None if unknown."""
    return _sites[number] if 0 < number < len(_sites) else None


def note(task_id: int, depth: int = 2, ident: int | None = None) -> None:
    """Record the call site of the submission that made ``task_id``: the site :func:`begin` found for
    thread ``ident``, or else the first frame, from ``depth`` frames above this call, that is not
    jpar's own code."""
    located = submitting.get(ident) if ident is not None else None
    if located is not None:
        code, line, _, f = located
    else:
        f = _caller(depth)
        code, line = f.f_code, f.f_lineno
    last = _runs[-1] if _runs else None
    # the loop's case, without the lock (a list item store is atomic under the GIL; two threads
    # submitting at the same instant from different lines may name one task by the other's line)
    if last is not None and 0 < task_id - last[1] <= _GAP and last[3] is code and last[4] == line:
        last[1] = task_id
        return
    scope = _scope(f)
    with _lock:
        if _runs and task_id <= _runs[-1][1]:
            _odd[task_id] = (code.co_filename, line, scope)
            if len(_odd) > _ODD_MAX:
                for k in list(_odd)[:_ODD_MAX // 2]:
                    del _odd[k]
                    i = bisect.bisect_right(_firsts, k) - 1
                    if i >= 0 and _runs[i][1] >= k:
                        _runs[i][5] = True    # that id now reads as its run's: the run cannot tell
        else:
            _firsts.append(task_id)
            _runs.append([task_id, task_id, (code.co_filename, line, scope), code, line, False])
            if len(_runs) > RUNS_MAX:
                del _firsts[:RUNS_MAX // 2]
                del _runs[:RUNS_MAX // 2]


def site_of(task_id: int) -> tuple | None:
    """(file, line, function) of the submission (the function whose code it is: a comprehension's
    enclosing one) that made ``task_id`` in this process; None if another
    process submitted it or its record is gone (older than the tables keep)."""
    with _lock:
        site = _odd.get(task_id)
        if site is not None:
            return site
        i = bisect.bisect_right(_firsts, task_id) - 1
        if i >= 0 and _runs[i][1] >= task_id and not _runs[i][5]:
            return _runs[i][2]
    return None


def clear() -> None:
    """Forget every site (task ids start over with the next cluster)."""
    with _lock:
        _firsts.clear()
        _runs.clear()
        _odd.clear()
