"""``multiprocessing.pool``'s names on a jpar cluster: ``from jpar.multiprocessing.pool import Pool``.

The pool itself is :mod:`jpar.pool` (chunks of work become tasks the cluster balances); this
module only gives it the stdlib's import path. ``ThreadPool`` is the stdlib's own: threads of
this process are not cluster work.
"""

from multiprocessing.pool import ThreadPool

from jpar.pool import (CLOSE, INIT, RUN, TERMINATE, ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator,
                       MapResult, MaybeEncodingError, Pool, RemoteTraceback, TimeoutError)

__all__ = ["Pool", "ThreadPool", "AsyncResult", "ApplyResult", "MapResult", "IMapIterator", "IMapUnorderedIterator",
           "TimeoutError", "RemoteTraceback", "MaybeEncodingError", "INIT", "RUN", "CLOSE", "TERMINATE"]
