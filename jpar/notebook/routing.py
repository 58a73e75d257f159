"""Remote output to the cell that submitted the work, as real stream outputs labelled per engine.

::

    kernel main thread: f.remote()  --submit hook-->  CellTracker.on_submit(task_id) -> Cell
                                                        (the cell's parent header, its task ids)
    driver receiver thread: chunk(task_id) + Cell  -->  OutputRouter.handle: enqueue, return
                                                              |
    jpar-output thread: group, prefix lines  -----------------+--> the Cell's parent header:
        ipykernel >= 7: OutStream.set_thread_parent(parent) + write (kept in order with the
                        cell's own prints), ipykernel 6: a stream message published with that parent

The parent header is captured when the task is submitted, so output printed long after
its cell finished still lands under that cell, also while another cell runs. Outside a
kernel (terminal IPython, tests) lines are written to ``sys.stdout``/``sys.stderr``.
"""

from __future__ import annotations

import itertools
import queue
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
        cell.tasks.append(task_id)
        return cell


def label(engine_id: int, name: str) -> str:
    """The prefix of an engine's output lines: ``[engine 0] `` for %%remote cells, else with the task's name."""
    if name.startswith("remote-cell-"):
        return f"[engine {engine_id}] "
    return f"[engine {engine_id}: {name}] "


class OutputRouter:
    """The output handler: chunks in on the receiver thread, stream outputs out on its own thread."""

    def __init__(self, kernel: Any = None):
        self.kernel = kernel
        self.streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        if all(hasattr(s, "set_thread_parent") and hasattr(s, "reset_thread_parent") for s in self.streams.values()):
            self.mode = "thread_parent"     # ipykernel >= 7
        elif kernel is not None and hasattr(kernel, "session") and hasattr(kernel, "iopub_socket"):
            self.mode = "publish"           # ipykernel 6
        else:
            self.mode = "plain"
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._partial: dict[tuple, tuple[str, float, Cell | None, str]] = {}   # (cell, task, stream) -> text
        self._open: dict[tuple, tuple] = {}   # (cell, stream) -> key of the task whose line is unfinished
        self.closed = False

    # ---------------------------------------------------------------- receiver thread
    def handle(self, chunk, cell: Cell | None) -> None:
        if self._thread is None:
            self._start()
        self._queue.put((chunk, cell))

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self.closed:
                t = threading.Thread(target=self._loop, name="jpar-output", daemon=True)
                t.start()
                self._thread = t

    # ---------------------------------------------------------------- any thread
    def drain(self, timeout: float = 2.0) -> bool:
        """Wait until every chunk received so far is written (partial lines too)."""
        if self._thread is None or self.closed:
            return True
        done = threading.Event()
        self._queue.put(("drain", done))
        return done.wait(timeout)

    def close(self) -> None:
        if self._thread is not None and not self.closed:
            self.drain(1.0)
            self.closed = True
            self._queue.put(None)
            self._thread.join(2.0)
        self.closed = True

    # ---------------------------------------------------------------- jpar-output thread
    def _loop(self) -> None:
        q = self._queue
        while True:
            timeout = _PARTIAL_S if self._partial else None
            try:
                item = q.get(timeout=timeout)
            except queue.Empty:
                item = ()
            out: list = []        # [cell, stream, text] merged when adjacent
            drains = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif item == ():
                    pass
                elif item[0] == "drain":
                    drains.append(item[1])
                else:
                    self._add(out, *item)
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
            self._flush_partial(out, force=bool(drains) or stop)
            for cell, stream, text in out:
                try:
                    self._write(cell, stream, text)
                except Exception:  # a closed kernel stream at shutdown: drop the text
                    pass
            for ev in drains:
                ev.set()
            if stop:
                return

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
