"""Queue: a FIFO shared by the driver, tasks and actors, held by one async actor (Ray's ray.util.queue).

The queue lives in an actor whose methods are coroutines on an asyncio.Queue, so blocked
``get``/``put`` calls wait on the actor's event loop without holding up other callers.
A Queue pickles as its actor handle: pass it to tasks and actors like any value.
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from typing import Any, Iterable

import jpar

__all__ = ["Queue", "Empty", "Full"]


class Empty(_stdlib_queue.Empty):
    """get() found nothing in time (also a ``queue.Empty``)."""


class Full(_stdlib_queue.Full):
    """put() found no room in time (also a ``queue.Full``)."""


class _QueueActor:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item, timeout=None) -> bool:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def get(self, timeout=None):
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return False, None

    def put_nowait(self, item) -> bool:
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            return False

    def put_nowait_batch(self, items) -> bool:
        if self.maxsize > 0 and len(items) + self.qsize() > self.maxsize:
            return False
        for item in items:
            self.queue.put_nowait(item)
        return True

    def get_nowait(self):
        try:
            return True, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return False, None

    def get_nowait_batch(self, num_items: int):
        if num_items > self.qsize():
            return False, []
        return True, [self.queue.get_nowait() for _ in range(num_items)]


class Queue:
    """A first-in first-out queue usable from the driver, tasks and actors.

    ``block=False`` (or the ``*_nowait`` forms) raise :class:`Empty`/:class:`Full` at once;
    ``timeout`` is in seconds. ``maxsize <= 0`` means unbounded.
    """

    def __init__(self, maxsize: int = 0, actor_options: dict | None = None):
        self.maxsize = maxsize
        self.actor = jpar.remote(_QueueActor).options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        return jpar.get(self.actor.qsize.remote())

    def qsize(self) -> int:
        return self.size()

    def empty(self) -> bool:
        return jpar.get(self.actor.empty.remote())

    def full(self) -> bool:
        return jpar.get(self.actor.full.remote())

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; waits for room (up to ``timeout`` seconds) unless ``block=False``."""
        if not block:
            return self.put_nowait(item)
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if not jpar.get(self.actor.put.remote(item, timeout)):
            raise Full(f"The queue stayed full for {timeout} s.")

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not block:
            if not await self.actor.put_nowait.remote(item):
                raise Full("The queue is full.")
            return
        if not await self.actor.put.remote(item, timeout):
            raise Full(f"The queue stayed full for {timeout} s.")

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; waits (up to ``timeout`` seconds) unless ``block=False``."""
        if not block:
            return self.get_nowait()
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        ok, item = jpar.get(self.actor.get.remote(timeout))
        if not ok:
            raise Empty(f"The queue stayed empty for {timeout} s.")
        return item

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            ok, item = await self.actor.get_nowait.remote()
        else:
            ok, item = await self.actor.get.remote(timeout)
        if not ok:
            raise Empty("The queue is empty." if not block else f"The queue stayed empty for {timeout} s.")
        return item

    def put_nowait(self, item: Any) -> None:
        if not jpar.get(self.actor.put_nowait.remote(item)):
            raise Full("The queue is full.")

    def put_nowait_batch(self, items: Iterable) -> None:
        items = list(items)
        if not jpar.get(self.actor.put_nowait_batch.remote(items)):
            raise Full(f"Cannot add {len(items)} items: the queue has room for fewer.")

    def get_nowait(self) -> Any:
        ok, item = jpar.get(self.actor.get_nowait.remote())
        if not ok:
            raise Empty("The queue is empty.")
        return item

    def get_nowait_batch(self, num_items: int) -> list:
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError("num_items must be a non-negative integer")
        ok, items = jpar.get(self.actor.get_nowait_batch.remote(num_items))
        if not ok:
            raise Empty(f"The queue holds fewer than {num_items} items.")
        return items

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """End the queue's actor (its items are lost)."""
        if self.actor is not None:
            jpar.kill(self.actor)
        self.actor = None
