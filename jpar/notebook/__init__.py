"""The notebook layer of jpar: ``%load_ext jpar``, ``%jpar``, ``%%remote``, output in the right cell,
Jupyter's interrupt cancelling the cell's tasks.

Importing this package does not import IPython: engines import
:mod:`jpar.notebook.engine_ns` (the engine side of ``%%remote``) through it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext jpar``: register the magics, output routing and interrupt handling."""
    from .extension import NotebookLayer

    NotebookLayer.load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext jpar``: undo everything load_ipython_extension did."""
    from .extension import NotebookLayer

    NotebookLayer.unload(ipython)
