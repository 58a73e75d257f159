"""The stdlib multiprocessing module's pool names on a jpar cluster: the one-line port.

``from multiprocessing import Pool`` -> ``from jpar.multiprocessing import Pool``. The pool's
exceptions are the stdlib's (``TimeoutError`` here is a subclass of ``multiprocessing.TimeoutError``,
of the builtin ``TimeoutError`` and of ``jpar.JparError``). Process, Queue, Manager and the
other process-level names are deliberately not here: work runs on cluster engines, which are
not children of this process (see docs/dropins.md).
"""

import os
from multiprocessing import AuthenticationError, BufferTooShort, ProcessError

from jpar.pool import (ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult,
                       MaybeEncodingError, Pool, RemoteTraceback, TimeoutError)

__all__ = [
    "Pool", "AsyncResult", "ApplyResult", "MapResult", "IMapIterator", "IMapUnorderedIterator",
    "TimeoutError", "ProcessError", "AuthenticationError", "BufferTooShort", "MaybeEncodingError",
    "RemoteTraceback", "cpu_count",
]


def cpu_count() -> int:
    """The cluster's CPU count if jpar is initialized, else this machine's (which is what a
    ``Pool()`` started from here would get)."""
    import jpar

    if jpar.is_initialized():
        return max(1, int(jpar.cluster_resources().get("CPU", 1)))
    n = os.cpu_count()
    if n is None:
        raise NotImplementedError("cannot determine number of cpus")
    return n
