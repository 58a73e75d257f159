"""Jupyter's interrupt: cancel the tasks the interrupted cell submitted and end it with a short message.

Jupyter interrupts a kernel with SIGINT, so the cell gets ``KeyboardInterrupt`` in the
kernel's main thread, typically while it waits in ``jpar.get``. IPython's custom
exception hook (``set_custom_exc``) sees it before any traceback is shown: if the cell
has submitted tasks that have not finished, they are cancelled (running ones get
``KeyboardInterrupt`` on their engine, which stays usable) and the cell ends with one
line instead of a traceback through jpar's waiting code. Any custom handler installed
before is kept for the exception types it handles.
"""

from __future__ import annotations

from typing import Any

import jpar
from jpar import hooks

from .routing import CellTracker

__all__ = ["InterruptHandler"]


class InterruptHandler:
    def __init__(self, shell: Any, tracker: CellTracker):
        self.shell = shell
        self.tracker = tracker
        self._previous: tuple | None = None

    def install(self) -> None:
        shell = self.shell
        if self._previous is not None:
            return
        self._previous = (shell.custom_exceptions, getattr(shell, "CustomTB", None))
        types = tuple(shell.custom_exceptions) + (KeyboardInterrupt,)
        shell.set_custom_exc(types, self._handle)
        self._installed = shell.CustomTB

    def uninstall(self) -> None:
        shell = self.shell
        if self._previous is None:
            return
        types, handler = self._previous
        self._previous = None
        if getattr(shell, "CustomTB", None) is not self._installed:
            return  # someone installed another handler since: leave theirs
        shell.custom_exceptions = types
        if handler is not None:
            shell.CustomTB = handler

    def cancel_cell_tasks(self) -> int:
        """Cancel the running cell's unfinished tasks; returns how many were cancelled."""
        cell = self.tracker.current
        tasks = cell.tasks if cell is not None else None
        if not tasks or not jpar.is_initialized():
            return 0
        done = set(hooks.task_ids_done(tasks))
        pending = [t for t in tasks if t not in done]
        if pending:
            hooks.cancel_tasks(pending)
            del tasks[:]
        return len(pending)

    def _handle(self, shell, etype, value, tb, tb_offset=None):
        if not issubclass(etype, KeyboardInterrupt):
            return self._fallback(etype, value, tb, tb_offset)
        try:
            n = self.cancel_cell_tasks()
        except Exception:  # the cluster is gone: nothing to cancel
            n = 0
        if not n:
            return self._fallback(etype, value, tb, tb_offset)
        msg = (f"KeyboardInterrupt: cancelled {n} jpar task{'s' if n != 1 else ''} this cell submitted; "
               "the engines stay usable.")
        exc = KeyboardInterrupt(msg.split(": ", 1)[1])
        exc._render_traceback_ = lambda: [msg]
        shell.showtraceback((KeyboardInterrupt, exc, None))
        return None

    def _fallback(self, etype, value, tb, tb_offset):
        prev_types, prev_handler = self._previous or ((), None)
        if prev_handler is not None and prev_types and issubclass(etype, prev_types):
            return prev_handler(etype, value, tb, tb_offset=tb_offset)
        self.shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
