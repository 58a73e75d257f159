"""The exception tree of jpar: one root, and every message says what to do next.

::

    JparError
     +-- ConfigError                  a JPAR_* variable or init() argument is invalid
     +-- ClusterError                 the cluster cannot be started, reached, or is gone
     |    +-- NotInitializedError     an API call before jpar.init()
     |    +-- HeadDiedError           the head stopped answering
     |    +-- SecurityError           keys missing, refused (file mode) or unusable (libzmq without CURVE)
     +-- ProtocolError                a message was unsigned, malformed or of another version
     +-- SerializationError           a value could not be pickled (names the argument)
     +-- ResourceError                no engine can ever satisfy a task's resource request
     +-- TaskError                    a task raised; get() raises a subclass that is also
     |                                the user's exception type, with the remote traceback
     +-- TaskCancelledError           the task was cancelled with jpar.cancel()
     +-- EngineCrashedError           the engine died under the task and retries are spent
     +-- ActorError
     |    +-- ActorDiedError          the actor's process died or it was killed
     +-- GetTimeoutError (also TimeoutError)   get()/wait-style call ran out of time
     +-- ObjectLostError              the object's value is gone (its owner released it)
     |    +-- ForeignRefError (also ValueError)  the ref was made by another (e.g. shut down) cluster
     |    +-- ObjectFreedError        jpar.free() released the value while refs to it remained
     +-- ObjectStoreFullError         the store is full and nothing can be spilled
     +-- MissingExtraError (also ImportError)  an optional dependency is not installed
     +-- UnsupportedOnBackend (also NotImplementedError)  the backend in use cannot do this
"""

from __future__ import annotations

__all__ = [
    "JparError",
    "ConfigError",
    "ClusterError",
    "NotInitializedError",
    "HeadDiedError",
    "SecurityError",
    "ProtocolError",
    "SerializationError",
    "ResourceError",
    "TaskError",
    "TaskCancelledError",
    "EngineCrashedError",
    "ActorError",
    "ActorDiedError",
    "GetTimeoutError",
    "ObjectLostError",
    "ForeignRefError",
    "ObjectFreedError",
    "ObjectStoreFullError",
    "MissingExtraError",
    "UnsupportedOnBackend",
    "import_optional",
]


class JparError(Exception):
    """Root of every error jpar raises itself."""


class ConfigError(JparError, ValueError):
    pass


class ClusterError(JparError):
    pass


class NotInitializedError(ClusterError):
    def __init__(self, what: str = "This call"):
        super().__init__(f"{what} needs a cluster, but jpar is not initialized. Call jpar.init() first.")


class HeadDiedError(ClusterError):
    pass


class SecurityError(ClusterError):
    """A connection off loopback cannot be secured: keys missing or too widely readable, or no CURVE."""


class ProtocolError(JparError):
    pass


class SerializationError(JparError, TypeError):
    pass


class ResourceError(JparError):
    pass


class TaskCancelledError(JparError):
    def __init__(self, task: str = "the task", why: str = "jpar.cancel()"):
        super().__init__(f"{task} was cancelled ({why}); its result will never be available.")
        self.task = task
        self.why = why

    def __reduce__(self):
        return (type(self), (self.task, self.why))


class EngineCrashedError(JparError):
    pass


class ActorError(JparError):
    pass


class ActorDiedError(ActorError):
    pass


class GetTimeoutError(JparError, TimeoutError):
    pass


class ObjectLostError(JparError):
    pass


class ForeignRefError(ObjectLostError, ValueError):
    """An ObjectRef used with a cluster other than the one that made it. Object ids restart with
    every cluster, so such a ref would name an unrelated value: it is refused instead."""


class ObjectFreedError(ObjectLostError):
    """A ref whose value :func:`jpar.free` released: the ref still exists, its value does not. Raised
    by ``get`` of the ref and by every task given it as an argument, on every backend, so a freed
    value is never mistaken for a lost one (a crash) nor waited for."""

    def __init__(self, what: str = "This object"):
        super().__init__(f"{what} was freed by jpar.free(), so its value can no longer be read or passed to tasks. "
                         "Recompute it (call the task again) or jpar.put() the value again; free a ref only once "
                         "nothing needs its value.")
        self.what = what

    def __reduce__(self):
        return (type(self), (self.what,))


class ObjectStoreFullError(JparError, MemoryError):
    pass


class MissingExtraError(JparError, ImportError):
    """A feature needs an optional dependency that is not installed; the message says what to install."""

    def __init__(self, module: str, feature: str, install: str):
        super().__init__(f"{feature} needs {module}, which is not installed. Install it with: {install}",
                         name=module)
        self.module = module
        self.feature = feature
        self.install = install

    def __reduce__(self):
        return (type(self), (self.module, self.feature, self.install))


class UnsupportedOnBackend(JparError, NotImplementedError):
    """The backend in use cannot do this; the message names the backend, the feature and what to use instead."""

    def __init__(self, backend: str, feature: str, instead: str):
        super().__init__(f"The {backend} backend does not support {feature}: {instead}. "
                         "docs/scaling-out.md says what each backend can do.")
        self.backend = backend
        self.feature = feature
        self.instead = instead

    def __reduce__(self):
        return (type(self), (self.backend, self.feature, self.instead))


NOTEBOOK_EXTRA = "pip install 'jpar[notebook]'"


def import_optional(module: str, feature: str, install: str = NOTEBOOK_EXTRA):
    """``import module``, or MissingExtraError naming ``feature`` and the pip command that adds it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:   # absent, or something it needs is absent: the extra brings both
        raise MissingExtraError(exc.name or module, feature, install) from exc


class TaskError(JparError):
    """A task raised an exception on an engine.

    ``get()`` raises an instance of a class deriving from both ``TaskError`` and the
    original exception type, so ``except ValueError:`` catches a remote ValueError.
    ``cause`` is the original exception, ``remote_traceback`` the engine's traceback
    with jpar's own frames removed.
    """

    def __init__(self, function_name: str, remote_traceback: str, cause: BaseException | None = None):
        Exception.__init__(self, function_name, remote_traceback)
        self.function_name = function_name
        self.remote_traceback = remote_traceback
        self.cause = cause

    def __str__(self) -> str:
        cause = self.cause
        if isinstance(cause, SystemExit):   # not an Exception: get() raises a plain TaskError, so say it here
            head = (f"SystemExit: task {self.function_name} called sys.exit({cause.code!r}). A task cannot end its "
                    "engine: return a value or raise an exception instead (the SystemExit is this error's .cause)")
        elif cause is not None:
            head = f"{type(cause).__name__}: {cause}"
        else:
            head = "task failed"
        return f"{head}\n\nRemote traceback of {self.function_name}:\n{self.remote_traceback}"

    def __reduce__(self):
        return (_rebuild_task_error, (self.function_name, self.remote_traceback, self.cause))

    def _render_traceback_(self) -> list[str]:
        """IPython shows the remote traceback instead of jpar's local frames."""
        return [self.remote_traceback.rstrip("\n")]

    def as_instanceof_cause(self) -> "TaskError":
        """This error as an instance of a class that is both TaskError and the cause's type."""
        cause = self.cause
        if cause is None or isinstance(cause, TaskError) or not isinstance(cause, Exception):
            return self
        cls = _dual_class(type(cause))
        if cls is None:
            return self
        err = cls.__new__(cls)
        try:
            err.__dict__.update(cause.__dict__)
        except (AttributeError, TypeError):
            pass
        err.args = cause.args
        err.function_name = self.function_name
        err.remote_traceback = self.remote_traceback
        err.cause = cause
        return err


_DUAL: dict[type, type | None] = {}


def _dual_class(cause_type: type) -> type | None:
    if cause_type not in _DUAL:
        try:
            cls = type(
                f"TaskError({cause_type.__name__})",
                (TaskError, cause_type),
                {"__init__": TaskError.__init__, "__str__": TaskError.__str__, "__reduce__": TaskError.__reduce__,
                 "__module__": cause_type.__module__, "__qualname__": f"TaskError({cause_type.__qualname__})"},
            )
        except TypeError:  # final types or incompatible layouts: plain TaskError it is
            cls = None
        _DUAL[cause_type] = cls
    return _DUAL[cause_type]


def _rebuild_task_error(function_name, remote_traceback, cause):
    return TaskError(function_name, remote_traceback, cause).as_instanceof_cause()
