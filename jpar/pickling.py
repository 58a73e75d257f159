"""Pickling what the user defined (functions, classes, closures, the exceptions they raise), by value,
with its source lines: what every backend ships to its workers and back.

cloudpickle ships functions and classes from a notebook (``__main__``) or a script by value. Since
3.1.3 it renames every such code object ``<dynamic-code>``, and a process on another machine
cannot read a notebook cell or a ``python -c`` script anyway, so :class:`Pickler` marshals code
objects itself, keeping their filename, and carries the lines they span; the receiving process
registers them with :mod:`linecache`. A remote traceback then names the user's file or cell and
shows the failing line, on any backend and any cloudpickle version.
"""

from __future__ import annotations

import hashlib
import io
import linecache
import marshal
import pickle
import traceback
import types
from collections import ChainMap
from typing import Any

import cloudpickle

from .errors import SerializationError, TaskError

__all__ = ["Pickler", "cloud_dumps", "dumps_args", "dumps_function", "shipped_definition", "RemoteException", "dumps_exception", "remote_traceback"]

_PLAIN_ARGS = frozenset({int, float, str, bytes, bool, type(None), complex})


def _reduce_code(code: types.CodeType) -> tuple:
    """A code object as marshal bytes (filename kept) plus the source lines it spans."""
    first = code.co_firstlineno
    last = max((line for _, _, line in code.co_lines() if line is not None), default=first)
    lines = linecache.getlines(code.co_filename)[first - 1:last]
    return _rebuild_code, (marshal.dumps(code), code.co_filename, first, lines)


def _rebuild_code(blob: bytes, filename: str, first: int, lines: list) -> types.CodeType:
    """Unpickling side of :func:`_reduce_code`: register the lines unless this process reads
    the same lines from the file itself, then rebuild the code object."""
    if lines and linecache.getlines(filename)[first - 1:first - 1 + len(lines)] != lines:
        entry = linecache.cache.get(filename)
        known = list(entry[2]) if entry is not None and entry[1] is None else []  # registered, not read
        end = first - 1 + len(lines)
        known.extend(["\n"] * (end - len(known)))
        known[first - 1:end] = lines
        linecache.cache[filename] = (sum(map(len, known)), None, known, filename)
    return marshal.loads(blob)


class Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler with code objects that keep their filename and source lines."""

    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


def cloud_dumps(value: Any, buffer_callback: Any = None) -> bytes:
    """``cloudpickle.dumps`` (protocol 5) through :class:`Pickler`: the one way jpar pickles
    anything that may hold functions or classes defined by the user."""
    with io.BytesIO() as f:
        Pickler(f, protocol=5, buffer_callback=buffer_callback).dump(value)
        return f.getvalue()


class RemoteException(Exception):
    """Stands in for an exception that could not be pickled on the engine."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self):
        return (RemoteException, (self.type_name, self.message))


def portable_exception(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a RemoteException naming its type and message
    (an exception whose ``__init__`` rejects its own args pickles but fails to load)."""
    try:
        pickle.loads(cloud_dumps(exc))
        return exc
    except Exception:
        return RemoteException(type(exc).__qualname__, str(exc))


def dumps_exception(exc: BaseException, function_name: str, skip_frames: int = 0) -> bytes:
    """A task's exception as a pickled TaskError carrying the remote traceback."""
    tb = remote_traceback(exc, skip_frames)
    err = TaskError(function_name, tb, portable_exception(exc))
    try:
        return cloud_dumps(err)
    except Exception:
        return cloud_dumps(TaskError(function_name, tb, RemoteException(type(exc).__qualname__, str(exc))))


def remote_traceback(exc: BaseException, skip_frames: int = 0) -> str:
    """The traceback as text, without the first ``skip_frames`` (jpar's own engine frames)."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines)


def dumps_args(name: str, args: tuple, kwargs: dict) -> bytes:
    """Pickle a call's arguments; an unpicklable one is named in the error."""
    if not kwargs and all(type(a) in _PLAIN_ARGS for a in args):
        return pickle.dumps((args, kwargs), protocol=5)
    try:
        return cloud_dumps((args, kwargs))
    except Exception:
        pass
    for i, a in enumerate(args):
        _check_argument(name, f"positional argument {i} ({type(a).__name__})", a)
    for k, a in kwargs.items():
        _check_argument(name, f"keyword argument {k!r} ({type(a).__name__})", a)
    raise SerializationError(f"The arguments of {name} could not be pickled.")


def _check_argument(name: str, what: str, value: Any) -> None:
    try:
        cloud_dumps(value)
    except Exception as exc:
        raise SerializationError(
            f"Cannot send {what} of {name} to the cluster: {type(exc).__name__}: {exc}. "
            "Arguments are pickled; pass something picklable (e.g. a file path instead of an open file, "
            "or create the object inside the task)."
        ) from exc


def dumps_function(fn: Any, name: str, where: str = "the engines") -> bytes:
    """Pickle a function or class by value where needed (notebook definitions included); an
    unpicklable one raises SerializationError saying what it probably captured."""
    try:
        return cloud_dumps(fn)
    except Exception as exc:
        raise SerializationError(
            f"Cannot ship {name} to {where}: {type(exc).__name__}: {exc}. "
            "It probably captures an unpicklable global (a lock, socket or open file): "
            "create that object inside the function instead."
        ) from exc


def shipped_definition(cache: dict, key: Any, obj: Any, name: str, where: str) -> tuple[int, bytes]:
    """``(id, pickled bytes)`` of a function or class, made once and kept in ``cache`` (a
    RemoteFunction's or ActorClass's ``_backend_cache``) under ``key``; the id is a hash of the bytes,
    so workers unpickle each definition once."""
    d = cache.get(key)
    if d is None:
        blob = dumps_function(obj, name, where)
        d = cache[key] = (int.from_bytes(hashlib.blake2b(blob, digest_size=7).digest(), "big"), blob)
    return d
