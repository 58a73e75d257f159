"""The actor-process template: one process that has imported what an actor process needs and forks
a new actor process per request, so starting one costs a fork and a hello (~10-20 ms here), not
an interpreter start and its imports (~100-130 ms).

::

    starter --{"setup": ..., "log": path}\\n--> forker (fd 0)     forker --fork--> actor process: engine.run(setup)
    starter <--{"ready": pid}\\n, {"pid": N}\\n, {"exit": N, "code": C}\\n-- forker (reply pipe, fd 1 at start)

The starter (the head, or an engine starting actors the head placed on its host; see forked.py)
starts it with its first actor. It stays single-threaded and never
makes a ZeroMQ context, so a fork copies nothing half-made (each child makes its own). It reaps its
children and reports their exit codes, as the starter would for processes it started itself. It
dies with the starter (PR_SET_PDEATHSIG) and its children die with it (their ``parent_pid`` is the
forker's), so a lost head or engine leaves no actor behind, as with processes it starts itself.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

from .processes import _PR_SET_PDEATHSIG, _prctl


def _serve(reply: int, starter_pid: int) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *a: None)   # a handler of its own, so the wake-up fd hears of exits
    os.write(reply, (json.dumps({"ready": os.getpid()}) + "\n").encode())
    pending = b""
    while True:
        try:
            readable, _, _ = select.select([0, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            os.read(wake_r, 4096)
        _reap(reply)
        if 0 not in readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:      # the starter closed its end: it is stopping or gone
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            req = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.close(wake_r)
                os.close(wake_w)
                _child(req, reply)            # never returns
            os.write(reply, (json.dumps({"pid": pid}) + "\n").encode())


def _reap(reply: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        os.write(reply, (json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n").encode())


def _child(req: dict, reply: int) -> None:
    """In the new actor process: its own signals, log and stdin, then the actor; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.close(reply)
        log = os.open(req["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        setup = req["setup"]
        setup["parent_pid"] = os.getppid()    # this process dies with the forker, which dies with its starter
        from . import engine

        engine.run(setup)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    starter_pid = int(sys.argv[1])
    if not _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) or os.getppid() != starter_pid:
        return    # no way to die with the starter (not Linux), or it is already gone: it starts processes itself
    reply = os.dup(1)
    os.dup2(2, 1)                         # stray prints of imported code go to the log, not into the replies
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # what every actor process imports before it says hello, loaded once here
    import cloudpickle  # noqa: F401
    import psutil  # noqa: F401

    from . import actor_host, engine  # noqa: F401
    from ..store import object_store  # noqa: F401
    from ..wire import transport  # noqa: F401  (pyzmq: imported, no context made)

    _serve(reply, starter_pid)


if __name__ == "__main__":
    main()
