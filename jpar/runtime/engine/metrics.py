"""CPU and memory samples of a process (psutil), for the event stream and dashboards."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

__all__ = ["Sample", "Sampler"]


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_percent: float
    rss: int        # resident bytes
    shared: int     # resident bytes shared with others (the object store's pages): heap = rss - shared


class Sampler:
    """Samples one process; the first CPU reading is 0.0, later ones cover the interval since."""

    def __init__(self, pid: int | None = None):
        self._proc = psutil.Process(pid)
        self._proc.cpu_percent(None)

    def sample(self) -> Sample:
        try:
            with self._proc.oneshot():
                mem = self._proc.memory_info()
                return Sample(self._proc.cpu_percent(None), mem.rss, getattr(mem, "shared", 0))
        except psutil.Error:
            return Sample(0.0, 0, 0)
