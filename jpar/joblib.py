"""joblib's ``jpar`` backend: ``with joblib.parallel_config(backend="jpar"): Parallel(...)(...)``.

Importing this module registers the backend (``register()`` does it again, idempotently) through
joblib's public ``register_parallel_backend``; no joblib class is patched. Each joblib batch is
one call on a ``jpar.futures.Executor``; joblib's own auto-batching sizes the batches from their
measured durations, and the cluster's scheduler balances them over the engines.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from jpar.errors import import_optional

joblib = import_optional("joblib", "jpar's joblib backend (jpar.joblib)", "pip install joblib")
from joblib.parallel import AutoBatchingMixin, ParallelBackendBase  # noqa: E402  (joblib is there)

from jpar import submitter as _pool  # noqa: E402
from jpar.process_executor import Executor

__all__ = ["JparBackend", "register"]


class JparBackend(AutoBatchingMixin, ParallelBackendBase):
    """Runs joblib batches as jpar tasks on the current cluster (started if none is running).

    n_jobs: -1 (the default) uses every CPU of the cluster; a positive value caps how many
    batches run at once.
    """

    supports_retrieve_callback = True
    default_n_jobs = -1
    uses_threads = False
    supports_sharedmem = False

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 **backend_kwargs: Any):
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads,
                         **backend_kwargs)
        self._executor: Executor | None = None
        self._n_jobs: int | None = None
        self._futures: set = set()
        self._futures_lock = threading.Lock()

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        cpus = _pool.ensure_cluster()
        if n_jobs is None or n_jobs < 0:
            n = (n_jobs if n_jobs is not None else -1)
            return max(cpus + 1 + n, 1)
        return n_jobs

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        n = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        if self._executor is None or self._n_jobs != n:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            self._executor = Executor(max_workers=n)
            self._n_jobs = n
        return n

    def submit(self, func: Callable, callback: Callable | None = None):
        fut = self._executor.submit(func)
        with self._futures_lock:
            self._futures.add(fut)
        fut.add_done_callback(self._forget)
        if callback is not None:
            fut.add_done_callback(callback)
        return fut

    def _forget(self, fut) -> None:
        with self._futures_lock:
            self._futures.discard(fut)

    def retrieve_result_callback(self, out):
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A batch failed: cancel every batch still queued or running."""
        with self._futures_lock:
            futures = list(self._futures)
        for f in futures:
            f.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel,
                           **getattr(self.parallel, "_backend_kwargs", {}))

    def terminate(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self.reset_batch_stats()


def register() -> None:
    """Register the ``jpar`` backend with joblib (done on import of ``jpar.joblib``)."""
    joblib.register_parallel_backend("jpar", JparBackend)


register()
