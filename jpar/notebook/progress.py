"""Progress bars for long ``jpar.get`` / ``jpar.wait`` calls: a bar in a notebook, text in a terminal.

Installed with :func:`enable` (``%load_ext jpar`` does it), through
:func:`jpar.hooks.set_progress_reporter`: ``get``/``wait`` on a list of refs then run inside
a :class:`Progress` context. Nothing is shown for calls shorter than ``delay`` seconds; past
it a bar appears under the cell that is waiting, a thread counts finished refs a few times
a second, and when the call returns the bar completes (or says why it stopped).

In a notebook the bar is an HTML display updated in place (``display_id`` /
``update_display_data``), not a widget: a widget's comm, opened mid-cell, makes JupyterLab (4.4+,
comms over subshells) ask the kernel for a subshell, and the kernel's status messages for that
request turned the status bar to Idle while the cell still ran. Display updates are plain iopub
messages of the waiting cell, shown alike by JupyterLab, Notebook 7, VS Code and nbconvert.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from typing import Any, TextIO

from jpar import hooks
from jpar.errors import import_optional

__all__ = ["enable", "disable", "Progress", "ProgressBar"]

_KINDS = ("html", "text")

_MIN_REFS = 2


class Progress:
    """One blocking call's progress; a context manager made by the reporter :func:`enable` installs."""

    def __init__(self, refs: list, what: str, target: int | None = None, *, kind: str, delay: float = 1.0,
                 interval: float = 0.2, stream: TextIO | None = None):
        self.ids = [r.id for r in refs]
        self.what = f"jpar.{what}"
        self.kind = kind                 # "html" (a notebook display) or "text"
        self.delay = delay
        self.interval = interval
        self.stream = stream
        self.total = len(self.ids) if target is None else min(target, len(self.ids))
        self.done = 0
        self.shown = False
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._parent = None
        self._t0 = 0.0

    def __enter__(self) -> "Progress":
        self._t0 = time.monotonic()
        if self.kind == "html":
            self._parent = _kernel_parent()
        self._thread = threading.Thread(target=self._run, name="jpar-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self.shown:
            self._count()
            if exc_type is None:
                self._finish("done" if self.done >= self.total else "returned")
            else:
                self._finish("interrupted" if issubclass(exc_type, KeyboardInterrupt) else exc_type.__name__)

    # ------------------------------------------------------------ thread
    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        tokens = _set_thread_parent(self._parent)
        try:
            self._count()
            self._show()
            while not self._stop.wait(self.interval):
                self._count()
                self._update()
        except Exception:  # never break the get() this reports on
            pass
        finally:
            _reset_thread_parent(tokens)

    def _count(self) -> None:
        pending = self.ids[self.done:] if self.done < self.total else []
        if pending:
            done = set(hooks.task_ids_done(pending))
            # ids finish in any order: keep the unfinished ones at the end of the list
            if done:
                rest = [i for i in pending if i not in done]
                self.ids = self.ids[:self.done] + [i for i in pending if i in done] + rest
                self.done += len(done)

    def _text(self) -> str:
        return f"{self.what}: {min(self.done, self.total)}/{self.total} ({time.monotonic() - self._t0:.1f} s)"

    def _show(self) -> None:
        if self.kind == "html":
            self._bar = ProgressBar(self.total, self.what)
            self._bar.show(self.done, self._text())
        else:
            self._update()
        self.shown = True

    def _update(self) -> None:
        if self.kind == "html":
            self._bar.set(self.done, self._text())
        else:
            width = 30
            filled = int(width * self.done / max(1, self.total))
            self._write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self._text()}")

    def _finish(self, how: str) -> None:
        text = f"{self._text()} {how}"
        if self.kind == "html" and self._bar is not None:
            self._bar.finish(self.done, text, ok=how in ("done", "returned"))
        else:
            self._update()
            self._write(f" {how}\n")

    def _write(self, s: str) -> None:
        stream = self.stream or sys.stderr
        try:
            stream.write(s)
            stream.flush()
        except (OSError, ValueError):
            pass

    def __repr__(self) -> str:
        return f"Progress({self.what}, {self.total} refs)"


class ProgressBar:
    """The notebook view of :class:`Progress`: an HTML bar and its label, shown once under the waiting
    cell and then replaced in place. Its text/plain form is a stable "jpar progress bar" (nbval compares
    it); the HTML uses JupyterLab's theme variables, with fallbacks for other front ends."""

    def __init__(self, total: int, what: str):
        self.display = import_optional("IPython.display", "jpar's progress bars")
        self.total = max(1, total)
        self.what = what
        self.handle: Any = None

    def show(self, done: int, text: str) -> None:
        self.handle = self.display.display(_Bar(done, self.total, text, None), display_id=True)

    def set(self, done: int, text: str) -> None:
        self.handle.update(_Bar(done, self.total, text, None))

    def finish(self, done: int, text: str, ok: bool) -> None:
        self.handle.update(_Bar(done, self.total, text, "success" if ok else "danger"))


_COLOURS = {None: "var(--jp-brand-color1, #1976d2)", "success": "var(--jp-success-color1, #388e3c)",
            "danger": "var(--jp-error-color1, #d32f2f)"}


class _Bar:
    """One rendering of the bar (what ``display``/``update`` send)."""

    def __init__(self, done: int, total: int, text: str, style: str | None):
        self.done, self.total, self.text, self.style = min(done, total), total, text, style

    def __repr__(self) -> str:
        return "jpar progress bar"

    def _repr_html_(self) -> str:
        pct = 100.0 * self.done / self.total
        state = self.style or "running"
        return (f'<div class="jpar-progress" data-state="{state}" data-done="{self.done}" data-total="{self.total}" '
                'style="display:flex;align-items:center;gap:8px;font-family:var(--jp-ui-font-family,sans-serif);'
                'font-size:var(--jp-ui-font-size1,13px);color:var(--jp-ui-font-color1,inherit)">'
                '<div style="width:420px;height:14px;border-radius:3px;'
                'background:var(--jp-layout-color3,#e0e0e0);overflow:hidden">'
                f'<div style="width:{pct:.1f}%;height:100%;background:{_COLOURS[self.style]}"></div></div>'
                f'<span>{html.escape(self.text)}</span></div>')


def _kernel_parent() -> Any:
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip.get_parent() if ip is not None and hasattr(ip, "get_parent") else None
    except Exception:
        return None


def _set_thread_parent(parent: Any) -> Any:
    if parent is None:
        return None
    try:
        from IPython import get_ipython

        ip = get_ipython()
        if ip is not None and hasattr(ip, "set_thread_parent"):
            return ip.set_thread_parent(parent)
    except Exception:
        pass
    return None


def _reset_thread_parent(tokens: Any) -> None:
    if tokens is None:
        return
    try:
        from IPython import get_ipython

        get_ipython().reset_thread_parent(tokens)
    except Exception:
        pass


def _in_kernel() -> bool:
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    shell = ip.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def enable(kind: str = "auto", *, delay: float = 1.0, min_refs: int = _MIN_REFS, stream: TextIO | None = None) -> None:
    """Show progress for ``jpar.get``/``jpar.wait`` waiting for at least ``min_refs`` refs and taking longer
    than ``delay`` seconds. ``kind``: "html" (a bar in the notebook), "text" (terminal) or "auto"."""
    if kind == "auto":
        kind = "html" if _in_kernel() else "text"
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r}: use 'html', 'text' or 'auto'.")

    def reporter(refs: list, what: str, target: int):
        if target < min_refs:
            return None
        return Progress(refs, what, target, kind=kind, delay=delay, stream=stream)

    reporter.kind = kind  # type: ignore[attr-defined]
    hooks.set_progress_reporter(reporter)


def disable() -> None:
    """No more progress bars."""
    hooks.set_progress_reporter(None)
