"""Ray's exception names, for code ported with ``import jpar as ray`` (``ray.exceptions.X``).

Each name is the jpar class with the same meaning; catching the Ray name catches jpar's error.
"""

from .errors import ActorDiedError, ActorError, EngineCrashedError, GetTimeoutError, JparError, ObjectLostError, ObjectStoreFullError, TaskCancelledError, TaskError

__all__ = ["RayError", "RayTaskError", "RayActorError", "ActorDiedError", "ActorUnavailableError",
           "WorkerCrashedError", "GetTimeoutError", "TaskCancelledError", "ObjectLostError",
           "ObjectStoreFullError", "ActorError"]

RayError = JparError
RayTaskError = TaskError
RayActorError = ActorDiedError
ActorUnavailableError = ActorDiedError
WorkerCrashedError = EngineCrashedError
