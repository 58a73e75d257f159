"""jpar: interactive parallel computing from Jupyter, with Ray's API on a fast local cluster."""

from .api import (ClusterContext, available_resources, cancel, cluster_resources, get, init, is_initialized,
                  put, remote, shutdown, wait)
from .errors import (ActorDiedError, ActorError, ClusterError, ConfigError, EngineCrashedError, GetTimeoutError,
                     JparError, NotInitializedError, ObjectLostError, ObjectStoreFullError, ResourceError,
                     SerializationError, TaskCancelledError, TaskError)
from . import hooks
from .refs import ObjectRef
from .remote_function import RemoteFunction

__version__ = "0.1.0"

__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel",
    "cluster_resources", "available_resources", "ClusterContext", "ObjectRef", "RemoteFunction",
    "JparError", "ClusterError", "ConfigError", "NotInitializedError", "SerializationError", "ResourceError",
    "TaskError", "TaskCancelledError", "EngineCrashedError", "ActorError", "ActorDiedError",
    "GetTimeoutError", "ObjectLostError", "ObjectStoreFullError", "hooks", "__version__",
]
