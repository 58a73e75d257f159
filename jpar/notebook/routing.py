"""Remote output to the cell that submitted the work, as real stream outputs labelled per engine.

::

    kernel main thread: f.remote()  --submit hook-->  CellTracker.on_submit(task_id) -> Cell
                                                        (the cell's parent header, its task ids)
    driver receiver thread: chunk(task_id) + Cell  -->  OutputRouter.handle
    prefix whole lines with the engine, then write them with the Cell's parent header:
        ipykernel >= 7: OutStream.set_thread_parent(parent) + write (kept in order with the
                        cell's own prints); ipykernel 6: stream messages published with that
                        parent by the jpar-output thread (coalesced)

The parent header is captured when the task is submitted, so output printed long after
its cell finished still lands under that cell, also while another cell runs. Outside a
kernel (terminal IPython, tests) lines are written to ``sys.stdout``/``sys.stderr``.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import Any

__all__ = ["Cell", "CellTracker", "OutputRouter", "label"]

_PARTIAL_S = 0.1        # a line without its newline is shown after this long


class Cell:
    """One execution of a cell: where its output goes and which tasks it submitted."""

    __slots__ = ("key", "parent", "tasks")

    def __init__(self, key: int, parent: dict | None):
        self.key = key
        self.parent = parent
        self.tasks: list[int] | None = []      # cleared when the cell ends (the context outlives it)


class CellTracker:
    """The submit hook: which cell is running, and which tasks each running cell submitted."""

    def __init__(self, kernel: Any = None):
        self.kernel = kernel
        self.current: Cell | None = None
        self._keys = itertools.count(1)
        self._loose: Cell | None = None       # submissions outside any cell (threads, comms)

    def parent(self) -> dict | None:
        k = self.kernel
        if k is None:
            return None
        try:
            return k.get_parent()
        except Exception:
            return None

    def start_cell(self) -> Cell:
        self.current = Cell(next(self._keys), self.parent())
        return self.current

    def end_cell(self) -> None:
        cell, self.current = self.current, None
        if cell is not None:
            cell.tasks = None

    def on_submit(self, task_id: int) -> Cell:
        cell = self.current
        if cell is None:
            parent = self.parent()
            cell = self._loose
            if cell is None or cell.parent is not parent:
                cell = self._loose = Cell(next(self._keys), parent)
                cell.tasks = None
            return cell
        tasks = cell.tasks
        if tasks is not None:          # None: the cell ended meanwhile (a submission from another thread)
            tasks.append(task_id)
        return cell


def label(engine_id: int, name: str) -> str:
    """The prefix of an engine's output lines: ``[engine 0] `` for %%remote cells, else with the task's name."""
    if name.startswith("remote-cell-"):
        return f"[engine {engine_id}] "
    return f"[engine {engine_id}: {name}] "


class OutputRouter:
    """The output handler: chunks in on the driver's receiver thread, stream outputs out.

    Complete lines are written at once on the receiver thread (ipykernel 7 and plain
    streams), so a task's output is in the kernel's stream before ``get()`` returns and
    shows above the cell's result. Stream messages published by hand (ipykernel 6) are
    coalesced by the ``jpar-output`` thread, which also shows unfinished lines after
    a short while.
    """

    def __init__(self, kernel: Any = None):
        self.kernel = kernel
        self.streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        if all(hasattr(s, "set_thread_parent") and hasattr(s, "reset_thread_parent") for s in self.streams.values()):
            self.mode = "thread_parent"     # ipykernel >= 7
        elif kernel is not None and hasattr(kernel, "session") and hasattr(kernel, "iopub_socket"):
            self.mode = "publish"           # ipykernel 6
        else:
            self.mode = "plain"
        self._cond = threading.Condition(threading.RLock())
        self._thread: threading.Thread | None = None
        self._outbox: list = []               # [cell, stream, text] waiting for the thread (publish mode)
        self._partial: dict[tuple, tuple[str, float, Cell | None, str]] = {}   # (cell, task, stream) -> text
        self._open: dict[tuple, tuple] = {}   # (cell, stream) -> key of the task whose line is unfinished
        self.closed = False

    # ---------------------------------------------------------------- receiver thread
    def handle(self, chunk, cell: Cell | None) -> None:
        with self._cond:
            if self.closed:
                return
            out: list = []
            self._add(out, chunk, cell)
            if self.mode == "publish":
                self._merge(self._outbox, out)
            else:
                self._write_all(out)
            if self._outbox or self._partial:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="jpar-output", daemon=True)
                    self._thread.start()
                self._cond.notify()

    # ---------------------------------------------------------------- any thread
    def drain(self, timeout: float = 2.0) -> bool:
        """Write everything received so far, unfinished lines included (the cell is ending)."""
        if not self._cond.acquire(timeout=timeout):
            return False
        try:
            out, self._outbox = self._outbox, []
            self._flush_partial(out, force=True)
            self._write_all(out)
        finally:
            self._cond.release()
        return True

    def close(self) -> None:
        self.drain(1.0)
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(2.0)

    # ---------------------------------------------------------------- jpar-output thread
    def _loop(self) -> None:
        with self._cond:
            while not self.closed:
                if not self._outbox:
                    self._cond.wait(_PARTIAL_S if self._partial else None)
                out, self._outbox = self._outbox, []
                self._flush_partial(out, force=False)
                self._write_all(out)

    def _write_all(self, out: list) -> None:
        for cell, stream, text in out:
            try:
                self._write(cell, stream, text)
            except Exception:  # a closed kernel stream at shutdown: drop the text
                pass

    @staticmethod
    def _merge(into: list, out: list) -> None:
        for item in out:
            if into and into[-1][0] is item[0] and into[-1][1] == item[1]:
                into[-1][2] += item[2]
            else:
                into.append(item)

    def _add(self, out: list, chunk, cell: Cell | None) -> None:
        stream = "stderr" if chunk.stream == "stderr" else "stdout"
        key = (cell.key if cell is not None else 0, chunk.task_id, stream)
        prev = self._partial.pop(key, None)
        text = chunk.text if prev is None else prev[0] + chunk.text
        cut = text.rfind("\n") + 1
        if cut:
            self._emit(out, key, cell, stream, text[:cut], label(chunk.engine_id, chunk.name))
        if cut < len(text):
            self._partial[key] = (text[cut:], time.monotonic(), cell, label(chunk.engine_id, chunk.name))

    def _flush_partial(self, out: list, force: bool) -> None:
        if not self._partial:
            return
        now = time.monotonic()
        for key, (text, since, cell, prefix) in list(self._partial.items()):
            if force or now - since >= _PARTIAL_S:
                del self._partial[key]
                self._emit(out, key, cell, key[2], text, prefix)

    def _emit(self, out: list, key: tuple, cell: Cell | None, stream: str, text: str, prefix: str) -> None:
        """Append ``text`` (whole lines, or a partial last line) with a prefix at each line start."""
        where = (key[0], stream)
        owner = self._open.get(where)
        if owner == key:
            head = ""                          # continues this task's unfinished line
        elif owner is not None:
            head = "\n" + prefix               # another task left a line open: end it first
        else:
            head = prefix
        body = text[:-1].replace("\n", "\n" + prefix) + text[-1]
        if text.endswith("\n"):
            self._open.pop(where, None)
        else:
            self._open[where] = key
        if out and out[-1][0] is cell and out[-1][1] == stream:
            out[-1][2] += head + body
        else:
            out.append([cell, stream, head + body])

    def _write(self, cell: Cell | None, stream: str, text: str) -> None:
        parent = cell.parent if cell is not None else None
        if parent and self.mode == "thread_parent":
            s = self.streams[stream]
            token = s.set_thread_parent(parent)
            try:
                s.write(text)
            finally:
                s.reset_thread_parent(token)
        elif parent and self.mode == "publish":
            k = self.kernel
            self.streams[stream].flush()       # the cell's own earlier prints first
            k.session.send(k.iopub_socket, "stream", {"name": stream, "text": text}, parent=parent,
                           ident=b"stream." + stream.encode())
        else:
            s = sys.stderr if stream == "stderr" else sys.stdout
            s.write(text)
            s.flush()
