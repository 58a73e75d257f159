"""Values, functions and exceptions to bytes and back.

Plain values go through the C pickler (fast); anything it cannot pickle by reference
safely, like functions and classes defined in a notebook (``__main__``), goes through
cloudpickle, which ships them by value. Exceptions travel as the exception itself when
it pickles, else as a stand-in carrying its type name and message, so an engine never
fails to report a failure.

Code shipped by value keeps its real filename and carries its source lines: cloudpickle
(3.1.3 on) renames every such code object ``<dynamic-code>`` and an engine cannot read a
notebook cell or a ``python -c`` script, so :class:`Pickler` marshals code objects itself
and the engine registers the lines with :mod:`linecache` as it unpickles them. A remote
traceback then names the user's file or cell and shows the failing line, whichever
cloudpickle version is installed.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

from ...errors import TaskError
from ...pickling import Pickler, RemoteException, cloud_dumps, dumps_args, dumps_exception, dumps_function, remote_traceback  # noqa: F401

__all__ = ["dumps", "loads", "dumps_function", "dumps_args", "dumps_exception", "remote_traceback",
           "Pickler", "cloud_dumps"]

_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})


def dumps(value: Any) -> bytes:
    """Pickle a value; builtin scalars take the C pickler, the rest cloudpickle."""
    if type(value) in _PLAIN:
        return pickle.dumps(value, protocol=5)
    return cloud_dumps(value)


loads = pickle.loads


def dumps_error(err: BaseException) -> bytes:
    """A jpar-made error (cancelled, crashed...) for a result slot."""
    return cloud_dumps(err)


def load_result(status: int, blob: bytes) -> Any:
    """Turn a result slot into its value, or raise what the task raised."""
    if blob[:4] == b"\x00JPL":  # a location in the shared-memory object store: mapped, not copied
        from ..store.object_store import load

        return load(blob)
    value = pickle.loads(blob)
    if status:
        if isinstance(value, TaskError):
            raise value.as_instanceof_cause()
        raise value
    return value


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"
