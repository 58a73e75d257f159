"""ActorPool: spread work over a fixed set of actors, results in order or as they finish (Ray's API).

Built on the public API only. Each actor runs one submitted call at a time; values wait in
the pool until an actor is free, so a slow actor never holds a queue of work others could do.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import jpar

__all__ = ["ActorPool"]


class ActorPool:
    """``pool = ActorPool([A.remote(), A.remote()])``; ``pool.map(lambda a, v: a.f.remote(v), values)``."""

    def __init__(self, actors: Iterable):
        self._idle = list(actors)
        self._future_to_actor: dict = {}      # first ref of a call -> (index, actor, its ref or list of refs)
        self._index_to_future: dict = {}      # submission index -> first ref of that call
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending: list = []              # (fn, value) waiting for a free actor

    # ---- bulk
    def map(self, fn: Callable[[Any, Any], "jpar.ObjectRef"], values: Iterable) -> Iterator:
        """Results of ``fn(actor, v)`` for each value, in the order of ``values``."""
        self._drain()
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable[[Any, Any], "jpar.ObjectRef"], values: Iterable) -> Iterator:
        """Results of ``fn(actor, v)`` for each value, as they finish."""
        self._drain()
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def _drain(self) -> None:
        while self.has_next():
            try:
                self.get_next_unordered()
            except Exception:  # an earlier map's error was already the caller's to see
                pass

    # ---- one at a time
    def submit(self, fn: Callable[[Any, Any], "jpar.ObjectRef"], value: Any) -> None:
        """Run ``fn(actor, value)`` on a free actor now, or as soon as one is free. ``fn`` returns the
        call's ObjectRef, or its list of refs for a method with ``num_returns`` > 1 (its result is then
        the list of values)."""
        if self._idle:
            actor = self._idle.pop()
            future = fn(actor, value)
            refs = future if isinstance(future, list) else [future]
            if not refs or not all(isinstance(r, jpar.ObjectRef) for r in refs):
                raise TypeError("ActorPool functions must return the ObjectRef of an actor call (or its list of "
                                "refs, for num_returns > 1), e.g. lambda a, v: a.method.remote(v).")
            key = refs[0]   # the refs of one call are ready together: the first stands for all
            self._future_to_actor[key] = (self._next_task_index, actor, future)
            self._index_to_future[self._next_task_index] = key
            self._next_task_index += 1
        else:
            self._pending.append((fn, value))

    def has_next(self) -> bool:
        """Whether results are still to be collected."""
        return bool(self._future_to_actor) or bool(self._pending)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order. ``timeout`` in seconds raises TimeoutError; with
        ``ignore_if_timedout`` that result is also given up (the pool moves on to the next one)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        key = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = jpar.wait([key], timeout=timeout)
            if not ready:
                if ignore_if_timedout:
                    self._forget(key)
                    raise TimeoutError(f"No result within {timeout} s; that task has been ignored.")
                raise TimeoutError(f"No result within {timeout} s.")
        return jpar.get(self._forget(key))

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Whichever result finishes first. ``timeout`` in seconds raises TimeoutError; with
        ``ignore_if_timedout`` the oldest task still running is also given up (its actor goes back
        to the pool and takes new work once that call ends)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = jpar.wait(list(self._future_to_actor), num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout and self._future_to_actor:
                oldest = min(self._future_to_actor, key=lambda k: self._future_to_actor[k][0])
                self._forget(oldest)
                raise TimeoutError(f"No result within {timeout} s; the oldest pending task has been ignored.")
            raise TimeoutError(f"No result within {timeout} s.")
        return jpar.get(self._forget(ready[0]))

    def _forget(self, key) -> Any:
        """Stop tracking one call; returns what get() takes for it (a ref or a list of refs)."""
        index, actor, future = self._future_to_actor.pop(key)
        self._index_to_future.pop(index, None)
        self._next_return_index = max(self._next_return_index, index + 1)
        self._return_actor(actor)
        return future

    def _return_actor(self, actor) -> None:
        self._idle.append(actor)
        if self._pending:
            self.submit(*self._pending.pop(0))

    # ---- the actors
    def has_free(self) -> bool:
        return bool(self._idle) and not self._pending

    def pop_idle(self):
        """Take a free actor out of the pool (None when all are busy)."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor) -> None:
        """Add an actor to the pool (it must not be in it already)."""
        busy = [a for _, a, _ in self._future_to_actor.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to this ActorPool.")
        self._return_actor(actor)
