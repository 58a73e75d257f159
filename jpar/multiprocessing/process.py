"""Process: the stdlib's ``multiprocessing.Process``, each one a process of its own on a cluster host.

::

    creator (notebook, script, task or another Process)        a cluster host
    Process.start()
      |  pickle the Process with cloudpickle (stdlib locks and
      |  queues refused, naming the jpar replacement)
      |  _Host.options(num_cpus=0).remote()  ----------------->  a fresh actor process (native: a warm
      |  host.info.remote()                  ----------------->    spare, so this is a message)
      |  host.run.remote(blob, parent)       ----------------->  _bootstrap(): current_process() is the
      v                                                          copy; run(); exit code as the stdlib
    join() / is_alive() / exitcode  <------ run's result ------  computes it; wait for its threads; end
    terminate(): SIGTERM to that process (same host), else        its own children
      jpar.kill(); kill(): jpar.kill()  (the head SIGKILLs it)

A Process is a jpar actor that reserves no CPU (``num_cpus=0`` unless given), so ``start()``
starts it at once however many are alive: eight processes meeting at a Barrier on two cores do
not wait for a free task slot. The actor runs the target on its main thread (signal handlers
work), prints an exception's traceback to its stderr (jpar routes it under the notebook cell that
called ``start()``), and ends when the Process ends. Its exit code is the stdlib's: 0, 1 after an
exception, ``sys.exit``'s code, ``-SIGTERM`` / ``-SIGKILL`` after ``terminate()`` / ``kill()``,
and ``-N`` or ``N`` when the process died of signal N or ``os._exit(N)``.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import sys
import threading
import weakref
from typing import Any

__all__ = ["Process", "current_process", "parent_process", "active_children"]

_counter = itertools.count(1)
_children: set = set()            # started here, not yet seen to end
_current: "Process | None" = None  # inside a Process: that Process
_parent: "_ParentProcess | None" = None
_atexit_registered = False
_host_class = None


class Process:
    """A process running ``target(*args, **kwargs)`` (or a subclass's ``run()``) on a cluster host.

    The stdlib's signature, plus two jpar keywords: ``num_cpus`` (CPUs reserved for the process's
    life; 0, the default, reserves none so that it starts at once) and ``resources`` (custom
    resources it needs, which pick the host).
    """

    def __init__(self, group: None = None, target: Any = None, name: str | None = None, args: Any = (),
                 kwargs: Any = None, *, daemon: bool | None = None, num_cpus: float = 0,
                 resources: dict | None = None):
        assert group is None, "group argument must be None for now"
        me = current_process()
        self._identity = tuple(me._identity) + (next(_counter),)
        self._config = dict(me._config)
        self._config["authkey"] = bytes(me._config["authkey"])
        self._parent_pid = os.getpid()
        self._parent_name = me.name
        self._popen: _Running | None = None
        self._closed = False
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._name = name or type(self).__name__ + "-" + ":".join(str(i) for i in self._identity)
        self._num_cpus = num_cpus
        self._resources = resources
        if daemon is not None:
            self.daemon = daemon

    def run(self) -> None:
        """What the process does; override it in a subclass, or pass ``target``."""
        if self._target:
            self._target(*self._args, **self._kwargs)

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process now, on the host the cluster's scheduler picks."""
        self._check_closed()
        assert self._popen is None, "cannot start a process twice"
        assert self._parent_pid == os.getpid(), "can only start a process object created by current process"
        assert not current_process()._config.get("daemon"), "daemonic processes are not allowed to have children"
        _reap()
        blob = _dumps_process(self)
        self._popen = _Running(self, blob)
        del self._target, self._args, self._kwargs   # as the stdlib: no cycle through the target
        _children.add(self)
        _register_atexit()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the process ends, or ``timeout`` seconds."""
        self._check_closed()
        assert self._parent_pid == os.getpid(), "can only join a child process"
        assert self._popen is not None, "can only join a started process"
        if self._popen.wait(timeout) is not None:
            _children.discard(self)

    def is_alive(self) -> bool:
        self._check_closed()
        if self is _current:
            return True
        assert self._parent_pid == os.getpid(), "can only test a child process"
        if self._popen is None:
            return False
        if self._popen.poll() is None:
            return True
        _children.discard(self)
        return False

    def terminate(self) -> None:
        """SIGTERM the process (its exit code becomes ``-SIGTERM`` unless it handles the signal)."""
        self._check_closed()
        if self._popen is not None:
            self._popen.terminate()

    def kill(self) -> None:
        """SIGKILL the process (exit code ``-SIGKILL``)."""
        self._check_closed()
        if self._popen is not None:
            self._popen.kill()

    def close(self) -> None:
        """Release what the Process holds; a ValueError while it still runs."""
        if self._popen is not None:
            if self._popen.poll() is None:
                raise ValueError("Cannot close a process while it is still running. "
                                 "You should first call join() or terminate().")
            self._popen.close()
            self._popen = None
            _children.discard(self)
        self._closed = True

    # -- attributes -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        assert isinstance(name, str), "name must be a string"
        self._name = name

    @property
    def daemon(self) -> bool:
        """Daemonic processes are terminated, not waited for, when their creator exits; they
        may not start processes themselves."""
        return self._config.get("daemon", False)

    @daemon.setter
    def daemon(self, daemonic: bool) -> None:
        assert self._popen is None, "process has already started"
        self._config["daemon"] = daemonic

    @property
    def authkey(self) -> bytes:
        return self._config["authkey"]

    @authkey.setter
    def authkey(self, authkey: bytes) -> None:
        self._config["authkey"] = bytes(authkey)

    @property
    def exitcode(self) -> int | None:
        """None while it runs; then 0, 1 after an exception, sys.exit's code, or -signal."""
        self._check_closed()
        if self._popen is None:
            return None
        return self._popen.poll()

    @property
    def pid(self) -> int | None:
        """The process id on its host (None before start())."""
        self._check_closed()
        if self is _current:
            return os.getpid()
        return self._popen.pid() if self._popen is not None else None

    ident = pid

    @property
    def host(self) -> str | None:
        """jpar: the name of the host the process runs on (None before start())."""
        self._check_closed()
        if self is _current:
            return socket.gethostname()
        return self._popen.host() if self._popen is not None else None

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes readable when the process ends
        (for ``multiprocessing.connection.wait``)."""
        self._check_closed()
        if self._popen is None:
            raise ValueError("process not started") from None
        return self._popen.sentinel()

    def _check_closed(self) -> None:
        if self._closed:
            raise ValueError("process object is closed")

    def __repr__(self) -> str:
        if self._closed:
            status = "closed"
        elif self is _current:
            status = "started"
        elif self._popen is None:
            status = "initial"
        else:
            code = self._popen.poll()
            status = "started" if code is None else "stopped"
        info = [type(self).__name__, f"name={self._name!r}"]
        if self._popen is not None and self._popen.known_pid is not None:
            info.append(f"pid={self._popen.known_pid}")
        info.append(f"parent={self._parent_pid}")
        info.append(status)
        if status == "stopped":
            code = self._popen.poll()
            info.append(f"exitcode={_signal_name(code)}")
        if self.daemon:
            info.append("daemon")
        return "<" + " ".join(info) + ">"


# ---------------------------------------------------------------------------------------------
# the creator's side of one started Process
# ---------------------------------------------------------------------------------------------

class _Running:
    """What the creator holds for a started Process: its actor, the refs of its calls, the outcome."""

    def __init__(self, process: Process, blob: bytes):
        options = {"num_cpus": process._num_cpus}
        if process._resources:
            options["resources"] = dict(process._resources)
        self.backend = _require_processes()
        self.handle = _remote_host_class().options(**options).remote()
        self.info_ref = self.handle.info.remote()
        me = current_process()
        self.run_ref = self.handle.run.remote(blob, (me.name, os.getpid(), socket.gethostname()))
        self.future = self.run_ref.future()
        self.exitcode: int | None = None
        self.forced: int | None = None       # -signal when the end was forced with jpar.kill()
        self.signalled: int | None = None    # -signal sent to the process itself
        self.known_pid: int | None = None
        self._host: str | None = None
        self._sentinel: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.future.add_done_callback(_when_done(self))

    def __reduce__(self):
        raise TypeError("A started jpar Process cannot be pickled: pass what it needs (queues, events, "
                        "values) to other processes instead.")

    def _info(self) -> None:
        if self.known_pid is None and self._host is None:
            import jpar

            if self.backend.closed:   # jpar.get would start a new cluster
                self._host = ""
                return
            try:
                self.known_pid, self._host = jpar.get(self.info_ref)
            except Exception:   # the process ended before it said who it is
                self._host = ""

    def pid(self) -> int | None:
        self._info()
        return self.known_pid

    def host(self) -> str | None:
        self._info()
        return self._host or None

    def poll(self) -> int | None:
        if self.exitcode is None:
            if self.future.done():
                self.exitcode = self._outcome()
                self._release_locks()
            elif self.backend.closed:   # the cluster stopped (jpar.shutdown()): it SIGKILLed every actor
                self.exitcode = self.forced if self.forced is not None else -signal.SIGKILL
                self.ended()
        return self.exitcode

    def _release_locks(self) -> None:
        """Locks and semaphores the ended process held are released, and their next acquirer warned
        (the state server's rule for owners that end; see jpar.multiprocessing.server)."""
        server = sys.modules.get(f"{__package__}.server")   # not imported: this process made no such object
        if server is None:
            return
        self._info()
        if self.known_pid is not None and self._host:
            try:
                server.release_owner(f"{self._host}:{self.known_pid}")
            except Exception:   # the cluster (or its state server) is gone: so are the locks
                pass

    def wait(self, timeout: float | None) -> int | None:
        """The exit code once the process ended, waiting up to ``timeout`` seconds (None: forever)."""
        import concurrent.futures
        import time

        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while self.poll() is None:
            left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            if left <= 0:
                return None
            # in slices: the cluster may stop under a waiting join(), and nothing resolves the future then
            concurrent.futures.wait([self.future], left)
        return self.exitcode

    def _outcome(self) -> int:
        from jpar.errors import ActorDiedError

        try:
            return int(self.future.result())
        except ActorDiedError as exc:
            if self.forced is not None:
                return self.forced
            parsed = _exitcode_from(str(exc))
            if parsed is not None:
                return parsed
            return self.signalled if self.signalled is not None else 1
        except BaseException:   # the cluster went away under it
            return self.forced if self.forced is not None else 1

    def signal(self, signum: int) -> None:
        """The signal to the process itself when it runs on this host (SIGTERM's handlers run; after
        a SIGKILL it runs no more code once this returns, as with the stdlib); for SIGKILL also, and
        elsewhere for any signal, jpar.kill() its actor, recording the signal as the exit code."""
        import jpar

        if self.poll() is not None:
            return
        self._info()
        if self.known_pid is not None and self._host == socket.gethostname() and self.poll() is None:
            if signum == signal.SIGKILL:
                self.forced = -signum        # first: the death it causes reads as this signal
            try:
                os.kill(self.known_pid, signum)
            except ProcessLookupError:
                return   # it ended on its own meanwhile
            if signum != signal.SIGKILL:
                self.signalled = -signum
                return
            # SIGKILLed here, as the stdlib does it: when kill() returns the process runs no more
            # code; the head is told as well (below), so it restarts nothing
        handle = self.handle
        if handle is not None and not self.backend.closed:
            self.forced = -signum
            try:
                jpar.kill(handle)
            except Exception:   # the cluster is gone: so is the process
                pass

    def terminate(self) -> None:   # the stdlib's Popen names: Process.terminate of the stdlib calls them
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def sentinel(self) -> int:
        with self._lock:
            if self._sentinel is None:
                r, w = os.pipe()
                self._sentinel = (r, w)
                if self.future.done():
                    self._close_writer()
            return self._sentinel[0]

    def _close_writer(self) -> None:
        if self._sentinel is not None and self._sentinel[1] >= 0:
            os.close(self._sentinel[1])
            self._sentinel = (self._sentinel[0], -1)

    def ended(self) -> None:
        """The run call finished (any way): let the actor go and wake sentinel waiters."""
        self.handle = None   # the owner's handle gone: the actor ends now that its calls are done
        with self._lock:
            self._close_writer()

    def close(self) -> None:
        with self._lock:
            self._close_writer()
            if self._sentinel is not None:
                os.close(self._sentinel[0])
                self._sentinel = None
        self.handle = None


def _when_done(running: _Running):
    ref = weakref.ref(running)

    def done(_future) -> None:
        r = ref()
        if r is not None:
            r.ended()

    return done


_WAIT_SLICE = 1.0   # seconds join() waits before checking that the cluster still runs
_CODE = re.compile(r"exited with code (-?\d+)")


def _exitcode_from(message: str) -> int | None:
    """The exit code an ActorDiedError's message reports, if it reports one."""
    m = _CODE.search(message)
    if m:
        return int(m.group(1))
    if "SIGKILL" in message or "jpar.kill()" in message:
        return -signal.SIGKILL
    return None


def _signal_name(code: int) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            pass
    return str(code)


def _reap() -> None:
    for p in list(_children):
        if p._popen is None or p._popen.poll() is not None:
            _children.discard(p)


def _register_atexit() -> None:
    """At interpreter exit, as the stdlib: terminate daemonic children, wait for the others
    (registered at the first start(), so it runs before jpar's own shutdown)."""
    global _atexit_registered
    if not _atexit_registered:
        import atexit

        atexit.register(_end_children)
        _atexit_registered = True


def _end_children() -> None:
    for p in active_children():
        if p.daemon:
            p.terminate()
    for p in active_children():
        p.join()


def _require_processes():
    """The current backend (a local cluster started if none, as Pool() does), which must run
    actors as processes."""
    from jpar.remote_function import first_use_backend

    backend = first_use_backend("Process.start()")
    backend.require("processes")
    return backend


# ---------------------------------------------------------------------------------------------
# pickling: cloudpickle, refusing the stdlib's process-local objects
# ---------------------------------------------------------------------------------------------

def _refusal(obj: Any, name: str):
    from .stdlib_check import StdlibObjectError

    t = type(obj)
    return StdlibObjectError(
        f"A jpar Process was given a {t.__module__}.{t.__name__} from the stdlib's multiprocessing, which "
        f"works only between a process and the children it forks on one machine. Use jpar.multiprocessing.{name} "
        f"instead (e.g. `import jpar.multiprocessing as multiprocessing`, then multiprocessing.{name}(...)): "
        "it works between processes on any host of the cluster.")


def _pickler_class():
    from jpar import pickling

    from .stdlib_check import jpar_name_for

    class RefusingPickler(pickling.Pickler):
        """cloudpickle, refusing the stdlib's process-local objects wherever they are nested."""

        def reducer_override(self, obj):
            name = jpar_name_for(obj)
            if name is not None:
                raise _refusal(obj, name)
            return super().reducer_override(obj)

    return RefusingPickler


def _dumps(value: Any) -> bytes:
    import io

    with io.BytesIO() as f:
        _pickler_class()(f, protocol=5).dump(value)
        return f.getvalue()


def _dumps_process(process: Process) -> bytes:
    """The Process as cloudpickle bytes; a SerializationError that names what could not be pickled."""
    from jpar.errors import SerializationError

    from .stdlib_check import StdlibObjectError

    try:
        return _dumps(process)
    except StdlibObjectError:
        raise
    except Exception as exc:
        raise SerializationError(
            f"The process {process.name!r} could not be started: {_culprit(process)} could not be pickled "
            f"({type(exc).__name__}: {exc}). A jpar Process is sent to its host with cloudpickle: pass "
            "picklable values (open files, sockets, threads' locks and generators are not), or create "
            "them inside the target.") from exc


def _culprit(process: Process) -> str:
    """Which part of the Process failed to pickle: its target, an argument, or an attribute."""
    parts = [("its target " + repr(process._target), process._target)]
    parts += [(f"argument {i} ({a!r:.60})", a) for i, a in enumerate(process._args)]
    parts += [(f"keyword argument {k!r}", v) for k, v in process._kwargs.items()]
    skip = {"_target", "_args", "_kwargs"}
    parts += [(f"the attribute {k!r} of {type(process).__name__}", v) for k, v in vars(process).items()
              if k not in skip]
    for what, value in parts:
        try:
            _dumps(value)
        except Exception:
            return what
    return f"the {type(process).__name__} object"


# ---------------------------------------------------------------------------------------------
# the process's side: the actor that runs it
# ---------------------------------------------------------------------------------------------

class ProcessActor:
    """The actor a Process runs in: one per Process, on a process of its own (its output is prefixed
    with ``ProcessActor.run``)."""

    def info(self) -> tuple:
        return os.getpid(), socket.gethostname()

    def run(self, blob: bytes, parent: tuple) -> int:
        return _bootstrap(blob, parent)


def _remote_host_class():
    global _host_class
    if _host_class is None:
        import jpar

        _host_class = jpar.remote(num_cpus=0)(ProcessActor)
    return _host_class


def _bootstrap(blob: bytes, parent: tuple) -> int:
    """Run the Process in this process and return its exit code, computed as the stdlib does."""
    global _current, _parent
    import pickle
    import traceback

    try:   # SIGTERM ends the process, as it ends the stdlib's children (Ray's workers catch it)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:   # not on the main thread: the backend runs actor methods elsewhere
        pass
    try:
        process = pickle.loads(blob)
    except BaseException:
        _write_stderr(f"Process could not be unpickled on {socket.gethostname()}:\n" + traceback.format_exc())
        return 1
    _current = process
    _parent = _ParentProcess(*parent)
    _adopt_in_stdlib(process)
    streams = sys.stdout, sys.stderr
    before = set(threading.enumerate())
    try:
        try:
            process.run()
            code = 0
        finally:
            _end_children()
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            _write_stderr(str(exc.code) + "\n")
            code = 1
    except BaseException:
        _write_stderr(f"Process {process.name}:\n" + traceback.format_exc())
        code = 1
    finally:
        _join_new_threads(before)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:   # closed or removed by the target
                pass
        sys.stdout, sys.stderr = streams
    return code


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:   # the target closed or removed stderr
        pass


def _join_new_threads(before: set) -> None:
    """A process ends once its non-daemon threads end (the interpreter waits for them at exit)."""
    me = threading.current_thread()
    while True:
        left = [t for t in threading.enumerate() if t not in before and t is not me and not t.daemon]
        if not left:
            return
        for t in left:
            t.join()


def _adopt_in_stdlib(process: Process) -> None:
    """Make the stdlib's current_process()/parent_process() answer for this Process too, so
    code that asks the stdlib (logging's processName, libraries) sees it."""
    import multiprocessing.process as mpp

    base = getattr(mpp, "_current_process", None)
    if base is not None:
        process._config = {**getattr(base, "_config", {}), **process._config}
    mpp._current_process = process
    mpp._parent_process = _parent


class _ParentProcess:
    """What ``parent_process()`` returns inside a Process: the creator's name and pid. Whether
    it is alive is known when it runs on this host; on another host it reads as alive."""

    def __init__(self, name: str, pid: int, host: str):
        self._name = name
        self._pid = pid
        self._host = host
        self._config = {}
        self._identity = ()

    name = property(lambda self: self._name)
    pid = property(lambda self: self._pid)
    ident = pid
    host = property(lambda self: self._host)
    daemon = property(lambda self: False)
    exitcode = property(lambda self: None)

    def is_alive(self) -> bool:
        if self._host != socket.gethostname():
            return True
        import psutil

        try:
            return psutil.Process(self._pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def join(self, timeout: float | None = None) -> None:
        """Wait until the parent ends (on this host), or ``timeout`` seconds."""
        if self._host != socket.gethostname():
            return
        import psutil

        try:
            psutil.Process(self._pid).wait(timeout)
        except (psutil.Error, psutil.TimeoutExpired):
            pass

    def __repr__(self) -> str:
        return f"<_ParentProcess name={self._name!r} parent={self._pid} host={self._host!r}>"


# ---------------------------------------------------------------------------------------------
# module functions
# ---------------------------------------------------------------------------------------------

def current_process():
    """Inside a jpar Process: that Process; elsewhere the stdlib's object for this process
    (named 'MainProcess' in a script or notebook)."""
    if _current is not None:
        return _current
    import multiprocessing

    return multiprocessing.current_process()


def parent_process():
    """Inside a jpar Process: its creator (name, pid, is_alive()); elsewhere the stdlib's answer."""
    if _current is not None:
        return _parent
    import multiprocessing

    return multiprocessing.parent_process()


def active_children() -> list:
    """The Processes started here that have not ended (ended ones are reaped)."""
    _reap()
    return list(_children)
