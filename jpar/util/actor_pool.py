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
        self._future_to_actor: dict = {}      # ref -> (index, actor)
        self._index_to_future: dict = {}      # submission index -> ref
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
        """Run ``fn(actor, value)`` on a free actor now, or as soon as one is free."""
        if self._idle:
            actor = self._idle.pop()
            ref = fn(actor, value)
            if not isinstance(ref, jpar.ObjectRef):
                raise TypeError("ActorPool functions must return the ObjectRef of an actor call, e.g. "
                                "lambda a, v: a.method.remote(v).")
            self._future_to_actor[ref] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = ref
            self._next_task_index += 1
        else:
            self._pending.append((fn, value))

    def has_next(self) -> bool:
        """Whether results are still to be collected."""
        return bool(self._future_to_actor) or bool(self._pending)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order; ``timeout`` in seconds raises TimeoutError."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        ref = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = jpar.wait([ref], timeout=timeout)
            if not ready:
                if ignore_if_timedout:
                    self._forget(ref)
                raise TimeoutError(f"No result within {timeout} s.")
        self._forget(ref)
        return jpar.get(ref)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Whichever result finishes first; ``timeout`` in seconds raises TimeoutError."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = jpar.wait(list(self._future_to_actor), num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError(f"No result within {timeout} s.")
        ref = ready[0]
        self._forget(ref)
        return jpar.get(ref)

    def _forget(self, ref) -> None:
        index, actor = self._future_to_actor.pop(ref)
        self._index_to_future.pop(index, None)
        self._next_return_index = max(self._next_return_index, index + 1)
        self._return_actor(actor)

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
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to this ActorPool.")
        self._return_actor(actor)
