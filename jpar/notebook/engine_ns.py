"""Engine side of ``%%remote``: per-client namespaces that persist between cells.

Runs inside engine processes, so it must never import IPython (nor anything of the
notebook stack). The kernel submits :func:`run_cell` pinned to each target engine;
cloudpickle ships it by reference, so every call on an engine reaches the same
module-level ``_namespaces`` dict there.

A cell is compiled under a filename of its own (``<remote-cell-N>``) whose source is
registered in :mod:`linecache`, so an engine's traceback shows the cell's lines; the
frames of this module are cut from the traceback before it travels.
"""

from __future__ import annotations

import ast
import builtins
import linecache
import os
from typing import Any

from jpar.pickling import cloud_dumps

__all__ = ["run_cell", "namespace", "portable", "unportable"]

_namespaces: dict[str, dict] = {}


def namespace(key: str) -> dict:
    """The namespace of client ``key`` on this engine (created empty on first use)."""
    ns = _namespaces.get(key)
    if ns is None:
        ns = _namespaces[key] = {"__name__": "__main__", "__builtins__": builtins}
    return ns


def portable(value: Any) -> tuple[str, Any]:
    """A value ready to travel back: pickled, or its repr when it cannot be pickled."""
    try:
        return ("pickle", cloud_dumps(value))
    except Exception:
        return ("repr", repr(value))


def unportable(item: tuple[str, Any]) -> Any:
    import pickle

    kind, data = item
    return pickle.loads(data) if kind == "pickle" else RemoteRepr(data)


class RemoteRepr:
    """Stands in for a value that could not be pickled: shows the engine-side repr."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def run_cell(key: str, source: str, filename: str, push: dict | None = None, pull: tuple = ()) -> dict:
    """Run a cell in the namespace ``key``; returns the pid, the last expression's value, the
    pulled names' values and the pulled names that are not defined."""
    ns = namespace(key)
    if push:
        ns.update(push)
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    try:
        tree = ast.parse(source, filename=filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        if tree.body:
            exec(compile(tree, filename, "exec"), ns)
        value = eval(compile(last, filename, "eval"), ns) if last is not None else None
    except BaseException as exc:
        exc.__traceback__ = _cell_frames(exc.__traceback__, filename)
        raise  # a bare raise adds no frame of this function
    return {"pid": os.getpid(),
            "value": None if value is None else portable(value),
            "pulled": {name: portable(ns[name]) for name in pull if name in ns},
            "missing": [name for name in pull if name not in ns]}


def _cell_frames(tb, filename: str):
    """The traceback from the cell's first frame on (None when the cell never ran)."""
    t = tb
    while t is not None and t.tb_frame.f_code.co_filename != filename:
        t = t.tb_next
    return t
