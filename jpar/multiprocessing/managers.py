"""Manager() / SyncManager: shared dict, list, Namespace, value and array proxies, plus the
queues and locks, all held by the cluster's state server.

There is no manager process: the state server is already the one place every process of the
cluster reaches, so a manager is a label on the objects it made. ``shutdown()`` (or leaving its
``with`` block) frees them; the server itself lives as long as the cluster.

A dict, list or Namespace is a real object in the server (as in the stdlib's manager process):
each method call sends its arguments there (cloudpickled) and brings the result back. What a
proxy returns is a copy, so ``d["k"].append(1)`` changes nothing in the server; assign instead, or
store a proxy in the container (``d["k"] = manager.list()``), as with the stdlib.
"""

from __future__ import annotations

import array
import pickle
import secrets
from multiprocessing.managers import Namespace as _Namespace
from multiprocessing.managers import Value as _ValueObj

from . import queues, sharedctypes, synchronize
from .server import Handle

__all__ = ["BaseManager", "SyncManager", "Manager", "BaseProxy", "ListProxy", "DictProxy", "NamespaceProxy",
           "ValueProxy", "ArrayProxy", "Namespace"]

Namespace = _Namespace


class BaseProxy(Handle):
    """A proxy to one managed object: ``_callmethod(name, args, kwds)`` runs its method in the server."""

    def __init__(self, obj, *, _group=None):
        from jpar.pickling import cloud_dumps

        self._create("managed", _group, blob=cloud_dumps(obj))

    def _callmethod(self, methodname: str, args: tuple = (), kwds: dict | None = None):
        from jpar.pickling import cloud_dumps

        result = self._call("call", methodname, cloud_dumps((tuple(args), dict(kwds or {}))))
        return None if result is None else pickle.loads(result)

    def _getvalue(self):
        """A copy of the referent, brought here."""
        return self._callmethod("#getvalue")

    def __str__(self) -> str:
        return self._callmethod("__repr__")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object {self._oid} of the jpar state server>"


def _forward(name: str):
    def method(self, *args, **kwds):
        return self._callmethod(name, args, kwds)
    method.__name__ = name
    return method


def _make_proxy(cls_name: str, exposed: tuple, base=BaseProxy) -> type:
    return type(cls_name, (base,), {name: _forward(name) for name in exposed})


class ListProxy(_make_proxy("_ListBase", (
        "__add__", "__contains__", "__delitem__", "__getitem__", "__len__", "__mul__", "__reversed__",
        "__rmul__", "__setitem__", "append", "count", "extend", "index", "insert", "pop", "remove",
        "reverse", "sort", "copy"))):

    def __iadd__(self, value):
        self._callmethod("extend", (value,))
        return self

    def __imul__(self, value):
        self._callmethod("__imul__", (value,))
        return self

    def __iter__(self):
        return _iterator(self)


class DictProxy(_make_proxy("_DictBase", (
        "__contains__", "__delitem__", "__getitem__", "__len__", "__setitem__", "clear", "copy",
        "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values"))):

    def __iter__(self):
        return _iterator(self)

    def __ior__(self, value):
        self._callmethod("update", (value,))
        return self


class IteratorProxy(BaseProxy):
    """A live iterator in the server (``iter()`` of a list or dict proxy): it sees later changes,
    and raises what the server's iterator raises (RuntimeError when a dict changed size)."""

    def __iter__(self):
        return self

    def __next__(self):
        return self._callmethod("__next__")


def _iterator(proxy: BaseProxy) -> IteratorProxy:
    from .server import _rebuild
    return _rebuild(IteratorProxy, proxy._client.locator(), proxy._call("iter"), {})


class NamespaceProxy(BaseProxy):
    """Attributes of a shared Namespace; names starting with '_' are this proxy's own."""


    def __getattr__(self, key):
        if key.startswith("_"):
            raise AttributeError(key)
        return self._callmethod("__getattribute__", (key,))

    def __setattr__(self, key, value):
        if key.startswith("_"):
            return object.__setattr__(self, key, value)
        self._callmethod("__setattr__", (key, value))

    def __delattr__(self, key):
        if key.startswith("_"):
            return object.__delattr__(self, key)
        self._callmethod("__delattr__", (key,))


class ValueProxy(BaseProxy):
    """``get()``, ``set(v)`` and ``.value`` of a managed value."""


    def get(self):
        return self._callmethod("get")

    def set(self, value) -> None:
        self._callmethod("set", (value,))

    value = property(get, set)


class ArrayProxy(_make_proxy("_ArrayBase", ("__len__", "__getitem__", "__setitem__"))):

    def __iter__(self):
        return _iterator(self)


class AutoProxy(BaseProxy):
    """The proxy of a registered type: any public attribute is a method run in the server."""


    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwds: self._callmethod(name, args, kwds)


class BaseManager:
    """A manager: ``start()`` / ``shutdown()``, a context manager; the objects it makes live in the
    cluster's state server until it shuts down. ``address``, ``authkey`` and ``serializer`` are
    accepted for the stdlib's signature: there is no manager process to address."""

    _registry: dict = {}

    def __init__(self, address=None, authkey=None, serializer="pickle", ctx=None, *, shutdown_timeout=1.0):
        self._group: str | None = None
        self._address = address

    @property
    def address(self):
        return self._address

    def start(self, initializer=None, initargs=()):
        """Start the manager (the cluster's state server starts with its first object)."""
        if self._group is not None:
            from multiprocessing import ProcessError
            raise ProcessError("Already started server")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._group = "manager-" + secrets.token_hex(8)
        if initializer is not None:
            initializer(*initargs)

    def connect(self):
        self.start()

    def shutdown(self) -> None:
        """Free every object this manager made; using them afterwards raises ValueError."""
        if self._group is not None:
            from .server import client
            client().call("free_group", 0, self._group)
            self._group = None

    def join(self, timeout=None) -> None:
        """Nothing to wait for: the manager has no process."""

    def _number_of_objects(self) -> int:
        from .server import client
        return 0 if self._group is None else client().call("group_size", 0, self._group)

    def __enter__(self):
        if self._group is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def _need_started(self) -> str:
        if self._group is None:
            raise ValueError("Manager has not been started: call start() or use it in a with block")
        return self._group

    @classmethod
    def register(cls, typeid: str, callable=None, proxytype=None, exposed=None, method_to_typeid=None,
                 create_method=True):
        """Add ``manager.<typeid>(*args)``: ``callable(*args)`` made in the server, behind ``proxytype``
        (default: a proxy forwarding every public method)."""
        if "_registry" not in cls.__dict__:
            cls._registry = dict(cls._registry)
        proxy = proxytype or AutoProxy
        if exposed is not None and proxytype is None:
            proxy = _make_proxy(f"AutoProxy[{typeid}]", tuple(exposed))
        cls._registry[typeid] = (callable, proxy)
        if create_method:
            def create(self, *args, **kwds):
                fn, ptype = type(self)._registry[typeid]
                return ptype(fn(*args, **kwds) if fn is not None else None, _group=self._need_started())
            create.__name__ = typeid
            setattr(cls, typeid, create)


class SyncManager(BaseManager):
    """The stdlib's SyncManager: shared containers, queues and synchronization objects."""

    def dict(self, *args, **kwargs) -> DictProxy:
        return DictProxy(dict(*args, **kwargs), _group=self._need_started())

    def list(self, sequence=()) -> ListProxy:
        return ListProxy(list(sequence), _group=self._need_started())

    def Namespace(self, **kwargs) -> NamespaceProxy:
        return NamespaceProxy(_Namespace(**kwargs), _group=self._need_started())

    def Value(self, typecode, value, lock=True) -> ValueProxy:
        return ValueProxy(_ValueObj(typecode, value, lock), _group=self._need_started())

    def Array(self, typecode, sequence, lock=True) -> ArrayProxy:
        return ArrayProxy(array.array(typecode, sequence), _group=self._need_started())

    def Queue(self, maxsize: int = 0) -> queues.Queue:
        return queues.Queue(maxsize, _group=self._need_started())

    def JoinableQueue(self, maxsize: int = 0) -> queues.JoinableQueue:
        return queues.JoinableQueue(maxsize, _group=self._need_started())

    def Lock(self) -> synchronize.Lock:
        return synchronize.Lock(_group=self._need_started())

    def RLock(self) -> synchronize.RLock:
        return synchronize.RLock(_group=self._need_started())

    def Semaphore(self, value: int = 1) -> synchronize.Semaphore:
        return synchronize.Semaphore(value, _group=self._need_started())

    def BoundedSemaphore(self, value: int = 1) -> synchronize.BoundedSemaphore:
        return synchronize.BoundedSemaphore(value, _group=self._need_started())

    def Condition(self, lock=None) -> synchronize.Condition:
        return synchronize.Condition(lock, _group=self._need_started())

    def Event(self) -> synchronize.Event:
        return synchronize.Event(_group=self._need_started())

    def Barrier(self, parties: int, action=None, timeout=None) -> synchronize.Barrier:
        return synchronize.Barrier(parties, action, timeout, _group=self._need_started())

    def Pool(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None):
        from jpar.pool import Pool
        return Pool(processes, initializer, initargs, maxtasksperchild)


def Manager(*, ctx=None) -> SyncManager:
    """A started SyncManager (use it as a context manager to shut it down)."""
    m = SyncManager(ctx=ctx)
    m.start()
    return m


del sharedctypes
