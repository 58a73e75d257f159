"""concurrent.futures' names with jpar's Executor: ``from jpar.futures import ProcessPoolExecutor``.

Everything but the executor is the stdlib's own object (``wait``, ``as_completed``, ``Future``,
the exceptions), so code that mixes stdlib and jpar futures keeps working.
"""

from concurrent.futures import (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, BrokenExecutor,
                                CancelledError, Future, InvalidStateError, TimeoutError, as_completed,
                                wait)
from concurrent.futures.process import BrokenProcessPool

from jpar.process_executor import Executor, executor

#: the one-line port: ``from concurrent.futures import ProcessPoolExecutor`` -> ``from jpar.futures ...``
ProcessPoolExecutor = Executor

__all__ = [
    "Executor", "ProcessPoolExecutor", "executor", "Future", "wait", "as_completed",
    "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED",
    "CancelledError", "TimeoutError", "InvalidStateError", "BrokenExecutor", "BrokenProcessPool",
]
