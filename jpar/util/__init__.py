"""Ray's ``ray.util`` helpers built on actors: :class:`ActorPool` and :class:`Queue`."""

from .actor_pool import ActorPool
from .queue import Empty, Full, Queue

__all__ = ["ActorPool", "Queue", "Empty", "Full"]
