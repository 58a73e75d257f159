"""Actors: ``@jpar.remote`` classes and their handles, on whichever backend is current.

``Cls.remote(*args)`` asks the backend to start an actor and returns an :class:`ActorHandle`;
``handle.method.remote(...)`` asks it to send a call (each caller's calls run in the order it
made them). The handle that ``.remote()`` returned owns the actor: when it is collected, and no
copy of it was pickled, the actor ends (Ray's semantics). How calls travel is the backend's
business (native: ``jpar.runtime.driver.actors``).
"""
from __future__ import annotations

from typing import Any

from . import backends
from .options import ActorOptions, method_options
from .remote_function import display_name, first_use_backend

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "method", "make_actor_class", "kill", "get_actor"]


def method(*, num_returns: int = 1, **options):
    """Decorate an actor method to set options (Ray's ``@ray.method(num_returns=2)``). Harmless Ray
    options (``enable_task_events``) are accepted and ignored, as for tasks; any other is a ConfigError."""
    method_options(num_returns, **options)

    def wrap(fn):
        fn.__jpar_num_returns__ = num_returns
        return fn

    return wrap


def _methods(cls: type) -> dict:
    """name -> (num_returns, is_async) for every public method of the class (and its bases)."""
    import inspect  # here, not at import: engines import jpar and should start fast

    out = {}
    for name in dir(cls):
        if name.startswith("__") and name.endswith("__"):
            continue
        attr = inspect.getattr_static(cls, name)
        fn = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        if not callable(fn):
            continue
        is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        out[name] = (int(getattr(fn, "__jpar_num_returns__", 1)), is_async)
    return out


class ActorClass:
    """A class made remote: ``Cls.remote(*args)`` starts an actor and returns its ActorHandle."""

    def __init__(self, cls: type, options: ActorOptions):
        self._cls = cls
        self._options = options
        self._name = display_name(cls)   # as for functions: no <locals> of enclosing functions
        self._methods = _methods(cls)
        self._is_async = any(a for _, a in self._methods.values())
        self._backend_cache: dict = {}   # what a backend keeps per class (its shipped definition)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self._name}()', use '{self._name}.remote()'.")

    def __mro_entries__(self, bases):
        """``class Sub(RemoteCls)`` subclasses the original class; decorate Sub with @jpar.remote to use it."""
        return (self._cls,)

    def __reduce__(self):
        return (ActorClass, (self._cls, self._options))

    def __repr__(self) -> str:
        return f"<jpar.ActorClass {self._name}>"

    def options(self, **changes) -> "ActorClass":
        """The same class with some actor options changed (``Cls.options(name="a").remote()``)."""
        new = ActorClass(self._cls, ActorOptions.build(self._options, **changes))
        new._backend_cache = self._backend_cache
        return new

    def remote(self, *args, **kwargs) -> "ActorHandle":
        """Start an actor running ``Cls(*args, **kwargs)`` in its own process; returns its handle at once."""
        b = first_use_backend(f"{self._name}.remote()")
        if self._options.max_restarts:
            b.require("actor_restart")
        if self._is_async or (self._options.max_concurrency or 1) > 1:
            b.require("actor_concurrency")
        actor_id, meta, owned = b.create_actor(self, args, kwargs, self._options)
        return ActorHandle(actor_id, meta, b if owned else None)

class ActorHandle:
    """A reference to a running actor: ``handle.method.remote(...)``; pass it to tasks and other actors."""

    __slots__ = ("_actor_id", "_meta", "_owner", "_cache", "__weakref__")

    def __init__(self, actor_id: int, meta: dict, owner: Any = None):
        self._actor_id = actor_id
        self._meta = meta
        self._cache: dict = {}
        self._owner = owner           # the backend, on the owner's handles: they end the actor when collected
        if owner is not None:
            owner.actor_handle_made(actor_id, meta)

    def __getattr__(self, name: str) -> "ActorMethod":
        if name.startswith("__") or name in ActorHandle.__slots__:
            raise AttributeError(name)
        m = self._cache.get(name)
        if m is None:
            spec = self._meta["methods"].get(name)
            if spec is None:
                raise AttributeError(
                    f"The actor {self._meta['class_name']} has no method {name!r}. "
                    f"Its methods: {', '.join(sorted(self._meta['methods'])) or '(none)'}.")
            m = self._cache[name] = ActorMethod(self, name, spec[0])
        return m

    def __reduce__(self):
        b = self._owner
        if b is not None:
            b.actor_handle_escaped(self._actor_id)
        return (_rebuild_handle, (self._actor_id, self._meta))

    def __del__(self):
        b = self._owner
        if b is not None:
            try:
                b.actor_handle_dropped(self._actor_id)
            except Exception:  # interpreter shutdown
                pass

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self):
        return hash(self._actor_id)

    def __repr__(self) -> str:
        return f"Actor({self._meta['class_name']}, {self._actor_id:016x})"

    def _repr_html_(self) -> str:
        """Class, id, state as this process knows it (pending, alive, restarting, dead) and methods."""
        import html

        b = backends.current()
        state = b.actor_state(self._actor_id) if b is not None and not b.closed else "no cluster connected"
        methods = ", ".join(sorted(self._meta.get("methods", {})))
        name = self._meta.get("name") or ""
        return (f"<code>Actor({html.escape(self._meta['class_name'])}, {self._actor_id:016x})</code> "
                f"<small>{html.escape(state)}{' · named ' + html.escape(name) if name else ''}"
                f" · methods: {html.escape(methods)}</small>")


def _rebuild_handle(actor_id: int, meta: dict) -> ActorHandle:
    return ActorHandle(actor_id, meta)


class ActorMethod:
    """``handle.method``: call ``.remote(...)`` (or ``.options(num_returns=n).remote(...)``)."""

    __slots__ = ("_handle", "_name", "_num_returns")

    def __init__(self, handle: ActorHandle, name: str, num_returns: int):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def __call__(self, *args, **kwargs):
        cls = self._handle._meta["class_name"]
        raise TypeError(f"Actor methods cannot be called directly. Instead of '{cls}.{self._name}()', "
                        f"try 'handle.{self._name}.remote()'.")

    def options(self, *, num_returns: int | None = None, **options) -> "ActorMethod":
        """This method with other options: ``num_returns``, and the harmless Ray options accepted by
        :func:`method`; any other option is a ConfigError."""
        method_options(num_returns, **options)
        return ActorMethod(self._handle, self._name, self._num_returns if num_returns is None else num_returns)

    def remote(self, *args, **kwargs):
        backend = backends.current()
        if backend is None or backend.closed:
            backend = first_use_backend("actor method .remote()")
        return backend.call_actor(self._handle, self._name, self._num_returns, args, kwargs)


# ---------------------------------------------------------------- public functions
def make_actor_class(cls: type, options: dict) -> ActorClass:
    """What ``@jpar.remote`` makes of a class."""
    if isinstance(cls, ActorClass):
        raise TypeError("This class is already remote; apply @jpar.remote once.")
    return ActorClass(cls, ActorOptions.build(**options))


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """End an actor now: calls in flight and later ones raise ActorDiedError. With
    ``no_restart=False`` an actor with restarts left is restarted instead (like a crash)."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"jpar.kill() takes an actor handle, got {type(actor).__name__}. "
                        "To stop a task use jpar.cancel(ref).")
    first_use_backend("jpar.kill()").kill_actor(actor, no_restart)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor created with ``.options(name=name)``, from any driver of the cluster."""
    if not isinstance(name, str) or not name:
        raise ValueError("jpar.get_actor() needs the actor's name as a non-empty string.")
    found = first_use_backend("jpar.get_actor()").get_actor(name, namespace)
    if found is None:
        raise ValueError(f"Failed to look up actor with name {name!r}: no live actor has it. Create it with "
                         f"Cls.options(name={name!r}).remote() (or get_if_exists=True to do both).")
    return ActorHandle(*found)
