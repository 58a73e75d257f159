"""Waiting for a state that no event announces (a Dask scheduler's task table, the dashboard's
published rows of a backend's store): ask again every ``step`` seconds until it holds or time
runs out. Where there is an event (a process exit, a trait change, a head answer), wait on it
instead."""

from __future__ import annotations

import time


def wait_until(pred, timeout: float = 30.0, step: float = 0.05) -> bool:
    """Whether ``pred()`` held within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
