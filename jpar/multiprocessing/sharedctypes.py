"""Value, Array, RawValue and RawArray: ctypes objects held by the state server, read and written
from any process of the cluster.

The server keeps a real ctypes object, so conversions and errors are ctypes' own (assigning a
float to ``Value('i')`` raises TypeError; ``Value('b')`` wraps around). Where shared memory
serves (jpar.multiprocessing.fastsync), its bytes live there: processes on the server's host map
them and read and write a ctypes object of their own over them, with no server call, and
``with v.get_lock(): v.value += 1`` costs microseconds; on other hosts each ``.value`` read or
write, index or slice is one request to the server, which reads and writes the same bytes.
``lock=True`` (the default) gives the object a new RLock, ``lock=False`` none, and a jpar Lock
or RLock is used as given.
"""

from __future__ import annotations

import ctypes
from multiprocessing.sharedctypes import typecode_to_type

from .fastsync import open_data
from .server import Handle
from .synchronize import Lock, RLock

_UNSET = object()

__all__ = ["Value", "Array", "RawValue", "RawArray", "Synchronized", "SynchronizedArray"]


def _ctype(typecode_or_type):
    if isinstance(typecode_or_type, str):
        try:
            return typecode_to_type[typecode_or_type]
        except KeyError:
            raise TypeError(f"bad typecode {typecode_or_type!r} (use one of {''.join(typecode_to_type)})") from None
    return typecode_or_type


def _held(attr: str) -> property:
    """An attribute of the shared ctypes object: of its mapping here, or read and written in the server."""

    def get(self):
        obj = self._local()
        return self._call("get", attr) if obj is None else getattr(obj, attr)

    def put(self, v) -> None:
        obj = self._local()
        if obj is None:
            self._call("set", attr, v)
        else:
            setattr(obj, attr, v)

    return property(get, put, doc=f"``{attr}`` of the shared object.")


class _Data(Handle):
    """A Handle whose ctypes bytes may be mapped here: ``_obj_here`` (opened on first use)."""

    _obj_here = _UNSET

    def _ctype(self):
        return self._type

    def _local(self):
        obj = self._obj_here
        if obj is _UNSET:
            obj = self._obj_here = open_data(self, self._ctype())
        return obj


class RawValue(_Data):
    """A ctypes value (``.value``) shared by the cluster, without a lock."""

    def __init__(self, typecode_or_type, *args, _group=None):
        self._type = _ctype(typecode_or_type)
        self._create("cdata", _group, type_=self._type, args=args)

    def _extra(self) -> dict:
        return {"_type": self._type}

    value = _held("value")

    def __repr__(self) -> str:
        return f"{self._type.__name__}({self.value!r})"


class RawArray(_Data):
    """A ctypes array shared by the cluster: indexing, slicing, ``len``; ``.value``/``.raw`` for 'c'."""

    def __init__(self, typecode_or_type, size_or_initializer, _group=None):
        self._type = _ctype(typecode_or_type)
        if isinstance(size_or_initializer, int):
            size, init = size_or_initializer, None
        else:
            init = list(size_or_initializer) if not isinstance(size_or_initializer, bytes) else size_or_initializer
            size = len(init)
        self._len = size
        self._create("cdata", _group, type_=self._type, size=size, init=init)

    def _extra(self) -> dict:
        return {"_type": self._type, "_len": self._len}

    def _ctype(self):
        return self._type * self._len

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):
        obj = self._local()
        return self._call("getitem", index) if obj is None else obj[index]

    def __setitem__(self, index, value) -> None:
        if isinstance(index, slice) and not isinstance(value, (bytes, list)):
            value = list(value)
        obj = self._local()
        if obj is None:
            self._call("setitem", index, value)
        else:
            obj[index] = value

    def __iter__(self):
        return iter(self[:])

    value = _held("value")

    raw = _held("raw")

    def __repr__(self) -> str:
        return f"<jpar.multiprocessing array of {self._len} {self._type.__name__}: {self[:]!r}>"


def _make_lock(lock, group):
    if lock is True or lock is None:
        return RLock(_group=group)
    if isinstance(lock, Lock):
        return lock
    if hasattr(lock, "acquire") and hasattr(lock, "release"):
        raise TypeError(f"lock={type(lock).__name__}: a jpar Value/Array needs a jpar.multiprocessing Lock or "
                        "RLock (it is shared with other processes of the cluster).")
    raise AttributeError(f"{lock!r} has no method 'acquire'")


class _SynchronizedBase:
    """The lock of a synchronized Value/Array and the lock's methods."""

    def get_lock(self):
        return self._lock

    def get_obj(self):
        return self._obj

    def acquire(self, *args, **kwargs):
        return self._lock.acquire(*args, **kwargs)

    def release(self):
        return self._lock.release()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)


def _locked(attr: str) -> property:
    """An attribute of the shared object, read and written under the wrapper's lock."""

    def get(self):
        with self._lock:
            return getattr(self._obj, attr)

    def put(self, v) -> None:
        with self._lock:
            setattr(self._obj, attr, v)

    return property(get, put, doc=f"``{attr}`` of the shared object, under its lock.")


class Synchronized(_SynchronizedBase):
    """What ``Value(..., lock=...)`` returns: ``.value`` through its lock, ``get_lock()``, ``get_obj()``."""

    def __init__(self, obj: RawValue, lock):
        self._obj, self._lock = obj, lock

    value = _locked("value")

    def __repr__(self) -> str:
        return f"<Synchronized wrapper for {self._obj!r}>"


class SynchronizedArray(_SynchronizedBase):
    """What ``Array(..., lock=...)`` returns: indexing and slicing through its lock."""

    def __init__(self, obj: RawArray, lock):
        self._obj, self._lock = obj, lock

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, index):
        with self._lock:
            return self._obj[index]

    def __setitem__(self, index, value) -> None:
        with self._lock:
            self._obj[index] = value

    def __iter__(self):
        return iter(self[:])

    value = _locked("value")
    raw = _locked("raw")

    def __repr__(self) -> str:
        return f"<SynchronizedArray wrapper for {self._obj!r}>"


def Value(typecode_or_type, *args, lock=True, ctx=None, _group=None):
    """A shared ctypes value; with ``lock`` (default) wrapped so each access takes that lock."""
    obj = RawValue(typecode_or_type, *args, _group=_group)
    if lock is False:
        return obj
    return Synchronized(obj, _make_lock(lock, _group))


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None, _group=None):
    """A shared ctypes array; with ``lock`` (default) wrapped so each access takes that lock."""
    obj = RawArray(typecode_or_type, size_or_initializer, _group=_group)
    if lock is False:
        return obj
    return SynchronizedArray(obj, _make_lock(lock, _group))


del ctypes
