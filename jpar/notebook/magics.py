"""The magics: ``%jpar`` (init, status, shutdown, dashboard) and ``%%remote`` (a cell on engines).

``%%remote`` submits :func:`jpar.notebook.engine_ns.run_cell` pinned to each target
engine with ``.options(placement=...)``; the engines keep one namespace per kernel, so
names defined in one ``%%remote`` cell are there in the next. Built on the public API
and :mod:`jpar.hooks` only.
"""

from __future__ import annotations

import ast
import re
import sys
import threading
import time
import traceback
import uuid
from typing import Any

import jpar
from jpar import hooks
from jpar.errors import import_optional

_ipython = import_optional("IPython", "The jpar magics (%load_ext jpar)")
from IPython.core.error import UsageError  # noqa: E402  (IPython is there: checked just above)
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class  # noqa: E402
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring  # noqa: E402

from . import engine_ns
from .reprs import PerEngine, StatusTable

__all__ = ["JparMagics", "RemoteCell", "RemoteCellError"]


def _pins_cluster(value: Any, depth: int = 0) -> bool:
    """Whether an output keeps cluster memory alive: a ref, a shallow container of refs, or a
    value whose buffer is a read-only view on a store segment (an mmap)."""
    if isinstance(value, jpar.ObjectRef):
        return True
    if depth == 0 and isinstance(value, (list, tuple, set, frozenset)):
        return any(_pins_cluster(v, 1) for v in list(value)[:1000])
    if depth == 0 and isinstance(value, dict):
        return any(_pins_cluster(v, 1) for v in list(value.values())[:1000])
    import mmap

    base = value
    for _ in range(8):  # numpy views chain through .base; memoryviews through .obj
        nxt = getattr(base, "base", None)
        if nxt is None and isinstance(base, memoryview):
            nxt = base.obj
        if nxt is None or nxt is base:
            break
        base = nxt
        if isinstance(base, mmap.mmap):
            return True
    return isinstance(base, mmap.mmap)


class RemoteCellError(jpar.TaskError):
    """A ``%%remote`` cell raised on several engines; ``errors`` maps engine id to each error."""

    def __init__(self, cell: str, errors: dict):
        first = next(iter(errors.values()))
        jpar.TaskError.__init__(self, cell, getattr(first, "remote_traceback", ""), getattr(first, "cause", first))
        self.errors = errors

    def __str__(self) -> str:
        kinds = sorted({type(getattr(e, "cause", e) or e).__name__ for e in self.errors.values()})
        return f"{self.function_name} failed on engines {sorted(self.errors)}: {', '.join(kinds)}"

    def __reduce__(self):
        return (RemoteCellError, (self.function_name, self.errors))

    def _render_traceback_(self) -> list[str]:
        out = []
        for eid, err in sorted(self.errors.items()):
            out.extend(_engine_traceback(eid, err))
        return out


def _in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (a front end that shows widgets)."""
    ip = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _engine_traceback(engine_id: int, err: BaseException) -> list[str]:
    tb = getattr(err, "remote_traceback", None) or f"{type(err).__name__}: {err}"
    where = engine_id if engine_id >= 0 else "?"
    return [f"[engine {where}] {tb.rstrip()}"]


def _short(exc: BaseException, text: str) -> BaseException:
    """Show ``exc`` in IPython as one line instead of a traceback through the magic."""
    exc._render_traceback_ = lambda: [text]
    return exc


class RemoteCell:
    """The handle of a ``%%remote`` cell: one task per engine. ``get()`` waits and returns the values."""

    def __init__(self, number: int, refs: dict, pull: tuple, shell: Any, engine_ids: dict | None = None):
        self.number = number
        self.name = f"remote-cell-{number}"
        self.refs = refs                    # target (engine id, or "any") -> ObjectRef
        self.pull = pull
        self._shell = shell
        self._engine_of_pid = engine_ids
        self._values: dict | None = None

    def ready(self) -> bool:
        ready, _ = jpar.wait(list(self.refs.values()), num_returns=len(self.refs), timeout=0)
        return len(ready) == len(self.refs)

    def cancel(self) -> None:
        for ref in self.refs.values():
            jpar.cancel(ref)

    def wait(self, timeout: float | None = None) -> bool:
        refs = list(self.refs.values())
        ready, _ = jpar.wait(refs, num_returns=len(refs), timeout=timeout)
        return len(ready) == len(refs)

    def get(self, timeout: float | None = None) -> Any:
        """Wait for every engine, set pulled names in the notebook, and return the values: the value
        itself for one engine, else a :class:`PerEngine` dict (None when no engine had a value)."""
        if self._values is None:
            if not self.wait(timeout):
                pending = [t for t, r in self.refs.items() if not jpar.wait([r], timeout=0)[0]]
                raise _short(jpar.GetTimeoutError(
                    f"{self.name} did not finish within {timeout} s on engines {pending}."),
                    f"GetTimeoutError: {self.name} did not finish within {timeout} s on engines {pending}; it keeps "
                    "running. Call .get() again, or .cancel() it.")
            results, errors = {}, {}
            for target, ref in self.refs.items():
                try:
                    results[target] = jpar.get(ref)
                except jpar.TaskError as err:
                    errors[target] = err
            if self._engine_of_pid is None and "any" in {*results, *errors}:
                self._engine_of_pid = {e["pid"]: e["id"] for e in hooks.engines()}
            errors = {self._engine_id(t, None): e for t, e in errors.items()}
            if errors:
                if len(errors) == 1:
                    eid, err = next(iter(errors.items()))
                    lines = _engine_traceback(eid, err)
                    err._render_traceback_ = lambda: lines
                    raise err
                raise RemoteCellError(self.name, errors)
            self._values = {self._engine_id(t, r): r for t, r in results.items()}
            missing = sorted({(eid, n) for eid, r in self._values.items() for n in r.get("missing", ())})
            if missing:
                raise _short(NameError(f"--pull: not defined on the engines: {missing}"),
                             f"NameError: --pull: {', '.join(f'{n} (engine {e})' for e, n in missing)} not defined. "
                             "Assign them in a %%remote cell first.")
            self._set_pulled()
        values = {eid: engine_ns.unportable(r["value"]) for eid, r in self._values.items() if r["value"] is not None}
        if len(self.refs) == 1:
            return next(iter(values.values()), None)
        return PerEngine(values) if values else None

    def _engine_id(self, target, result) -> int:
        if target != "any":
            return target
        pid = result["pid"] if result is not None else None
        if pid is None:
            return -1
        return (self._engine_of_pid or {}).get(pid, -1)

    def _set_pulled(self) -> None:
        if not self.pull or self._shell is None:
            return
        ns = self._shell.user_ns
        for name in self.pull:
            per = {eid: engine_ns.unportable(r["pulled"][name]) for eid, r in self._values.items()}
            ns[name] = next(iter(per.values())) if len(self.refs) == 1 else PerEngine(per)

    def _text(self, done: int | None) -> str:
        n = len(self.refs)
        state = "cluster closed" if done is None else "done" if done >= n else f"{done}/{n} done"
        targets = ", ".join(str(t) for t in self.refs)
        return f"<RemoteCell {self.name} on engines [{targets}]: {state}>"

    def _done(self) -> int | None:
        """How many engines have finished (None: the cluster is gone)."""
        try:
            return len(hooks.task_ids_done([r.id for r in self.refs.values()]))
        except jpar.JparError:
            return None

    def __repr__(self) -> str:
        return self._text(self._done())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        """In a notebook, an unfinished cell's handle is a live line (a widget a thread updates
        until every engine is done), not a snapshot that keeps saying "0/2 done"; text elsewhere."""
        done = self._done()
        text = self._text(done)
        if done is None or done >= len(self.refs) or not _in_kernel():
            return {"text/plain": text}
        try:
            label = import_optional("ipywidgets", "a live %%remote --noblock handle").Label(value=text)
        except jpar.JparError:
            return {"text/plain": text}
        threading.Thread(target=self._follow, args=(label, text), name=f"jpar-{self.name}", daemon=True).start()
        bundle = dict(label._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = text
        return bundle

    def _follow(self, label: Any, shown: str, interval: float = 0.25) -> None:
        """Keep ``label`` saying how many engines are done, until all are (or the cluster goes)."""
        while True:
            done = self._done()
            text = self._text(done)
            if text != shown:
                try:
                    label.value = shown = text
                except Exception:   # the widget was closed (kernel shutting down): nothing to show
                    return
            if done is None or done >= len(self.refs):
                return
            time.sleep(interval)    # polled like the progress bars: the driver has no per-ref callback


@magics_class
class JparMagics(Magics):
    """``%jpar`` and ``%%remote``; one instance per kernel (``%load_ext jpar``)."""

    def __init__(self, shell: Any, layer: Any = None):
        super().__init__(shell)
        self.layer = layer
        # this kernel's namespaces on the engines: kept across %unload_ext / %load_ext
        self.namespace_key = getattr(shell, "_jpar_namespace_key", None) or uuid.uuid4().hex[:16]
        shell._jpar_namespace_key = self.namespace_key
        self.cell_count = 0
        self._runner = None

    # ---------------------------------------------------------------- %jpar
    @magic_arguments()
    @argument("command", choices=["init", "status", "shutdown", "dashboard", "free"], help="what to do")
    @argument("num_engines", nargs="?", type=int, default=None,
              help="init: how many engines to start (default: one per core)")
    @argument("--address", default=None, help="init: connect to a running cluster (tcp://host:port, "
                                               "a connection file, or 'auto') instead of starting one")
    @line_magic
    def jpar(self, line: str):
        """Control the jpar cluster of this notebook.

        Examples::

            %jpar init          # start a local cluster, one engine per core
            %jpar init 4        # ... with 4 engines
            %jpar status        # engines, load, memory and tasks as a table
            %jpar shutdown      # stop the cluster this kernel started
            %jpar free          # drop refs and store-backed values from Out[] so their memory is freed
        """
        args = parse_argstring(self.jpar, line)
        if args.command == "init":
            ctx = jpar.init(args.address, num_engines=args.num_engines)
            if self.layer is not None:
                self.layer.attach()
            return ctx
        if args.command == "status":
            if not jpar.is_initialized():
                raise UsageError("No jpar cluster: run %jpar init (or jpar.init()) first.")
            return StatusTable(hooks.status())
        if args.command == "free":
            return self._free_outputs()
        if args.command == "shutdown":
            was = jpar.is_initialized()
            jpar.shutdown()
            print("jpar cluster stopped." if was else "No jpar cluster was running.")
            return None
        return jpar.dashboard()

    def _free_outputs(self) -> None:
        """IPython's output history (``Out[]``, ``_``, ``__``, ``___``) keeps every displayed value
        alive. Drop the entries that keep cluster memory alive: ObjectRefs (and lists, tuples and
        dicts of them) and values that are views on the object store's shared memory."""
        shell = self.shell
        out = shell.user_ns.get("Out", {})
        dropped = [n for n, v in list(out.items()) if _pins_cluster(v)]
        values = [out.pop(n) for n in dropped]
        ids = {id(v) for v in values}
        # the display hook pushes _, __, ___ and _12 into user_ns *and* into user_ns_hidden
        for ns in (shell.user_ns, getattr(shell, "user_ns_hidden", {})):
            for key in [k for k in ns if re.fullmatch(r"_{1,3}|_\d+", k) and id(ns[k]) in ids]:
                if key.strip("_"):
                    del ns[key]          # _12: the history's alias of Out[12]
                else:
                    ns[key] = ""         # _, __, ___
        for name in ("_", "__", "___"):   # the display hook keeps its own copies of these
            if id(getattr(shell.displayhook, name, None)) in ids:
                setattr(shell.displayhook, name, "")
        last = getattr(shell, "last_execution_result", None)
        if last is not None and id(getattr(last, "result", None)) in ids:
            last.result = None
        del values
        import gc

        gc.collect()
        if jpar.is_initialized():
            hooks.release_now()
        print(f"jpar: dropped {len(dropped)} output(s) from Out[] that held cluster memory"
              + (f" (Out[{', '.join(map(str, dropped))}])" if dropped else ""))

    # ---------------------------------------------------------------- %%remote
    @magic_arguments()
    @argument("--targets", "-t", default="all",
              help="where to run: 'all' engines (default), engine ids like '0,2' or '0-3', or 'any' "
                   "(one free engine)")
    @argument("--block", dest="block", action="store_true", default=True,
              help="wait for the engines and show their values (default)")
    @argument("--noblock", dest="block", action="store_false",
              help="return at once; the output still arrives under this cell, get the values with -o NAME")
    @argument("-o", "--out", default=None, metavar="NAME",
              help="keep the cell's handle (a RemoteCell: .get(), .ready(), .cancel()) in the variable NAME")
    @argument("--push", default="", metavar="A,B", help="send these notebook variables to the engines first")
    @argument("--pull", default="", metavar="C,D",
              help="bring these engine variables back into the notebook (a value for one engine, "
                   "{engine id: value} for several)")
    @argument("--timeout", type=float, default=None, metavar="SECONDS",
              help="with --block: give up waiting after this long and cancel the cell on the engines")
    @cell_magic
    def remote(self, line: str, cell: str):
        """Run the cell on engines, each in a namespace of its own that persists between %%remote cells.

        Each engine's stdout and stderr appear under this cell, labelled ``[engine N]``, while the
        engines run it; the value of the last expression is shown per engine. An exception shows
        the engine's traceback with the cell's lines. Jupyter's interrupt cancels the cell on the
        engines.

        Examples::

            %%remote
            import os
            x = os.getpid()            # every engine gets its own x
            x

            %%remote --targets 0 --push data --pull total
            total = sum(data)          # data comes from the notebook, total goes back to it

            %%remote --targets any --noblock -o job
            import time; time.sleep(10); print("done")
            # later: job.get()

            %%remote --timeout 5
            long_running()             # cancelled on the engines after 5 s
        """
        args = parse_argstring(self.remote, line)
        if not jpar.is_initialized():
            raise UsageError("%%remote needs a cluster: run %jpar init (or jpar.init()) first.")
        if self.layer is not None:
            self.layer.attach()
        try:
            ast.parse(cell, filename=f"<remote-cell-{self.cell_count + 1}>")
        except SyntaxError as exc:   # shown here, before anything is sent (IPython would add its own frames)
            raise UsageError("the %%remote cell does not compile:\n"
                             + "".join(traceback.format_exception_only(exc)).rstrip()) from None
        push = self._push(args.push)
        pull = tuple(n for n in (s.strip() for s in args.pull.split(",")) if n)
        for n in pull:
            if not n.isidentifier():
                raise UsageError(f"--pull {n!r}: not a variable name.")
        targets = self._targets(args.targets)
        self.cell_count += 1
        number = self.cell_count
        name = f"remote-cell-{number}"
        filename = f"<{name}>"
        if self._runner is None:
            self._runner = jpar.remote(engine_ns.run_cell)
        refs = {}
        for t in targets:
            opts = {"name": name, "max_retries": 0}
            if t != "any":
                opts["placement"] = t
            refs[t] = self._runner.options(**opts).remote(self.namespace_key, cell, filename, push, pull)
        handle = RemoteCell(number, refs, pull, self.shell)
        if args.out:
            self.shell.user_ns[args.out] = handle
        if not args.block:
            return None if args.out else handle
        try:
            if args.timeout is not None and not handle.wait(args.timeout):
                handle.cancel()
                raise _short(jpar.GetTimeoutError(f"{name} timed out after {args.timeout} s"),
                             f"GetTimeoutError: {name} did not finish within {args.timeout} s; cancelled it on "
                             f"engines [{', '.join(str(t) for t in targets)}].")
            return handle.get()
        finally:
            if self.layer is not None:
                self.layer.router.drain()   # the engines' output before the cell's result

    def _push(self, spec: str) -> dict:
        push = {}
        for n in (s.strip() for s in spec.split(",")):
            if not n:
                continue
            if n not in self.shell.user_ns:
                raise UsageError(f"--push {n}: no variable {n!r} in the notebook.")
            push[n] = self.shell.user_ns[n]
        return push

    def _targets(self, spec: str) -> list:
        spec = spec.strip()
        if spec == "any":
            return ["any"]
        live = [e["id"] for e in hooks.engines()]
        if spec == "all":
            if not live:
                raise UsageError("The cluster has no live engines.")
            return live
        ids: list[int] = []
        try:
            for part in spec.split(","):
                part = part.strip()
                if "-" in part:
                    lo, hi = (int(x) for x in part.split("-", 1))
                    ids.extend(range(lo, hi + 1))
                elif part:
                    ids.append(int(part))
        except ValueError:
            raise UsageError(f"--targets {spec!r}: use 'all', 'any', or engine ids like '0,2' or '0-3'.") from None
        unknown = [i for i in ids if i not in live]
        if unknown or not ids:
            raise UsageError(f"--targets {spec!r}: no engine {unknown or spec}; live engines are {live}.")
        return list(dict.fromkeys(ids))
