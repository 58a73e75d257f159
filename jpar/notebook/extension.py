"""The notebook layer's life cycle in one kernel: what ``%load_ext jpar`` installs and removes.

It wires together the cell tracker and output router (:mod:`.routing`), the interrupt
handler (:mod:`.interrupt`) and the magics (:mod:`.magics`), and keeps the driver's
hooks in place across ``jpar.init()`` / ``jpar.shutdown()`` through
:func:`jpar.hooks.set_front_end` (re-applied before every cell).
"""

from __future__ import annotations

from typing import Any

from jpar import hooks

from .interrupt import InterruptHandler
from .magics import JparMagics
from .routing import CellTracker, OutputRouter

__all__ = ["NotebookLayer"]


class NotebookLayer:
    """Everything the extension installs in one IPython shell."""

    def __init__(self, shell: Any):
        self.shell = shell
        kernel = getattr(shell, "kernel", None)
        self.tracker = CellTracker(kernel)
        self.router = OutputRouter(kernel)
        self.interrupts = InterruptHandler(shell, self.tracker)
        self.magics = JparMagics(shell, self)

    # ---------------------------------------------------------------- install / remove
    @classmethod
    def load(cls, shell: Any) -> "NotebookLayer":
        layer = getattr(shell, "_jpar_layer", None)
        if layer is not None:
            return layer
        layer = cls(shell)
        shell.register_magics(layer.magics)
        shell.events.register("pre_run_cell", layer._pre_run_cell)
        shell.events.register("post_run_cell", layer._post_run_cell)
        layer.interrupts.install()
        hooks.set_front_end(layer.tracker.on_submit, layer.router.handle)
        from . import progress

        progress.enable()                 # long jpar.get/wait show a bar under the waiting cell
        from . import sidebar_comm

        sidebar_comm.register()           # the JupyterLab sidebar asks this kernel about its cells
        layer.tracker.start_cell()        # %load_ext runs inside a cell: track that one too
        shell._jpar_layer = layer
        return layer

    @classmethod
    def unload(cls, shell: Any) -> None:
        layer = getattr(shell, "_jpar_layer", None)
        if layer is None:
            return
        del shell._jpar_layer
        for event, fn in (("pre_run_cell", layer._pre_run_cell), ("post_run_cell", layer._post_run_cell)):
            try:
                shell.events.unregister(event, fn)
            except ValueError:
                pass
        layer.interrupts.uninstall()
        hooks.set_front_end(None, None)
        from . import progress

        progress.disable()
        magics = shell.magics_manager.magics
        magics["line"].pop("jpar", None)
        magics["cell"].pop("remote", None)
        layer.router.close()

    def attach(self) -> None:
        """Give the current driver this kernel's hooks (after jpar.init() made a new one)."""
        hooks.apply_front_end()

    # ---------------------------------------------------------------- IPython events
    def _pre_run_cell(self, info: Any = None) -> None:
        self.tracker.start_cell()
        hooks.apply_front_end()

    def _post_run_cell(self, result: Any = None) -> None:
        self.router.drain(1.0)
        self.tracker.end_cell()
