"""Actor calls on Dask, made directly: the caller sends each call to the actor's worker (a Dask actor
future, one message there and one back) instead of submitting a Dask task that hands the call on
(a round trip through the scheduler and a worker thread per call: 8x a direct call sequentially,
2x pipelined, in the first benchmark run).

A jpar ref must still be able to become a Dask future (another task's argument, or a ref pickled
into a value that another process reads by key): :meth:`DaskBackend._dep` then submits
:func:`.worker.call_outcome`, a Dask task keyed by the ref that asks the actor for the call's
outcome, which the actor keeps until the caller's ref is collected (:meth:`.worker.ActorHost.forget`).

:class:`CallFuture` gives a direct call the few parts of ``distributed.Future`` the backend and its
front end read (``done``, ``status``, ``exception``, ``add_done_callback``); :func:`gather` and
:func:`wait` accept both kinds.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

__all__ = ["CallFuture", "gather", "wait"]


class CallFuture:
    """One direct actor call: its Dask actor future and, once materialized, the Dask future of
    the task standing for it."""

    __slots__ = ("af", "actor", "task_id", "_loop")

    def __init__(self, af: Any, actor: int, task_id: int, loop: Any):
        self.af = af
        self.actor = actor
        self.task_id = task_id
        self._loop = loop

    def done(self) -> bool:
        return self.af.done()

    @property
    def status(self) -> str:
        if not self.af.done():
            return "pending"
        return "error" if type(self.af._out).__name__ == "_Error" else "finished"

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.af.result(timeout=timeout)
        except BaseException as exc:
            return exc
        return None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        """``fn(self)`` once the call has run, on a thread of the loop's executor (as Dask runs a
        future's callbacks off its event loop: they may block on the client)."""
        async def later():
            await self.af._event.wait()
            await asyncio.get_running_loop().run_in_executor(None, fn, self)

        self._loop.add_callback(later)


async def _done(f: Any) -> None:
    if isinstance(f, CallFuture):
        await f.af._event.wait()
    else:
        await f._state.wait()


async def _wait(fs: list, timeout: float | None, first: bool) -> None:
    pending = [asyncio.ensure_future(_done(f)) for f in fs if not f.done()]
    if not pending:
        return
    _, left = await asyncio.wait(pending, timeout=timeout,
                                 return_when=asyncio.FIRST_COMPLETED if first else asyncio.ALL_COMPLETED)
    for t in left:
        t.cancel()
    if left and not first:
        raise TimeoutError


def wait(client: Any, fs: list, timeout: float | None, first: bool = False) -> None:
    """Wait for all (or the first) of Dask futures and direct calls; TimeoutError if all do not end in time."""
    client.sync(_wait, fs, timeout, first)


async def _gather(client: Any, fs: list) -> list:
    tasks = [(i, f) for i, f in enumerate(fs) if not isinstance(f, CallFuture)]
    out: list = [None] * len(fs)
    if tasks:
        for (i, _), v in zip(tasks, await client._gather([f for _, f in tasks])):
            out[i] = v
    for i, f in enumerate(fs):
        if isinstance(f, CallFuture):
            out[i] = await f.af
    return out


def gather(client: Any, fs: list) -> list:
    """The values of Dask futures and direct calls, in order (the first error raised)."""
    return client.sync(_gather, client, fs)
