"""The processes an engine (or actor) process starts and answers for.

Processes its tasks start (subprocess, multiprocessing, os.fork()): the engine is their
subreaper, so even the ones whose parent exits (double forks, `cmd &`) stay its descendants;
it reaps them while idle and stops every descendant when it exits. A forked copy of the
engine never runs the engine: it exits when the task function returns in it, and dies with
the engine (PR_SET_PDEATHSIG).

Actor processes it starts for the head (:class:`ActorProcesses`): an actor placed on this
engine's node, which is not the head's, runs in a process this engine starts with its own setup
(head address, keys, node); the engine reports its exit to the head and takes it along when it
exits itself. :func:`reap_children` keeps those processes' exit codes for that report.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading

from ..wire import protocol as P

log = logging.getLogger("jpar.engine")

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_process_pid = 0      # the engine (or actor) process; another pid means a forked copy


def _prctl(option: int, arg: int) -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):   # not Linux: no prctl
        return False


def _after_fork_in_child() -> None:
    if _process_pid and os.getpid() != _process_pid:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def guard_process() -> None:
    """Make this process the keeper of what its tasks start (call once, at the engine's start)."""
    global _process_pid
    if not _process_pid:
        os.register_at_fork(after_in_child=_after_fork_in_child)
    _process_pid = os.getpid()
    become_subreaper()


def become_subreaper() -> bool:
    """Orphaned descendants of this process are re-parented to it, not to init (Linux 3.4+)."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def exit_if_forked(returned: bool) -> None:
    """In a copy of the engine forked by a task, the task function has returned: end that copy here."""
    if _process_pid and os.getpid() != _process_pid:
        os._exit(0 if returned else 1)


_reap_lock = threading.Lock()
_watched: set = set()            # pids of actor processes this engine started (their exits are reported)
_reaped: dict[int, int] = {}     # ... and the exit codes of those reap_children collected


def reap_children() -> None:
    """Collect exited child processes (call only while no task runs: a task may wait on its own)."""
    with _reap_lock:
        try:
            while True:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if not pid:
                    break
                if pid in _watched:
                    _reaped[pid] = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            pass


def stop_descendants(grace_s: float = 1.0) -> None:
    """Stop every process this one's tasks left behind: SIGTERM, then SIGKILL after ``grace_s``."""
    import psutil

    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    if not procs:
        return
    for p in procs:
        try:
            p.kill() if grace_s <= 0 else p.terminate()
        except psutil.Error:
            pass
    kill_survivors(procs, max(grace_s, 0.2), 1.0)


def kill_survivors(procs: list, wait_s: float, then_s: float) -> None:
    """Wait for ``procs`` (psutil processes) together for ``wait_s``, SIGKILL those still alive, and
    wait ``then_s`` more for them to go."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=wait_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=then_s)


TEMPLATE_READY_S = 10.0   # how long the first actor on this host waits for the actor template


class ActorProcesses:
    """The actor processes this engine started for the head (used by its control thread only)."""

    def __init__(self, setup: dict):
        self.setup = setup
        self.procs: dict[tuple, subprocess.Popen] = {}   # (actor id, incarnation) -> its process
        self.forker = None                               # this engine's actor-process template (forked.py)

    def start(self, actor: dict, ctl) -> None:
        """Start the process of ``actor`` (id, incarnation, GPU ids); it joins the head like the head's
        own actor processes, and dies with this engine (PR_SET_PDEATHSIG, set by its parent_pid).
        The first one starts an interpreter and this engine's template; once that is ready, later
        ones are forks of it (which die with it, and it with this engine)."""
        setup = {k: v for k, v in self.setup.items() if k != "status_fd"}
        setup.update(actor=dict(actor), parent_pid=os.getpid())
        rundir = setup.get("rundir") or ""
        logdir = rundir if rundir and os.path.isdir(rundir) else tempfile.gettempdir()
        key = (int(actor["id"]), int(actor["incarnation"]))
        log_path = os.path.join(logdir, f"actor-{key[0]:x}-{key[1]}.log")
        proc = self._fork(setup, log_path, logdir)
        if proc is not None:
            self.procs[key] = proc
            return
        try:
            # under the lock: reap_children must know the pid before the process can exit
            with open(log_path, "ab") as logf, _reap_lock:
                proc = subprocess.Popen([sys.executable, "-m", "jpar.runtime.engine.engine"], stdin=subprocess.PIPE,
                                        stdout=logf, stderr=logf)
                _watched.add(proc.pid)
            proc.stdin.write((json.dumps(setup) + "\n").encode())
            proc.stdin.close()
        except OSError as exc:
            log.error("could not start a process for actor %x: %s", key[0], exc)
            ctl.send(P.ActorProcessExited(key[0], key[1], -1))
            return
        self.procs[key] = proc

    def _fork(self, setup: dict, log_path: str, logdir: str):
        if not self.setup.get("actor_fork", True):
            return None
        from .forked import Forker

        if self.forker is None:
            try:
                self.forker = Forker(None, None, os.path.join(logdir, f"actor-template-{os.getpid()}.log"))
            except OSError as exc:
                log.warning("could not start an actor-process template (%s): actor processes start as interpreters",
                            exc)
                self.setup["actor_fork"] = False
                return None
            # the first actor waits for it (an interpreter started meanwhile would compete with its imports);
            # this thread only answers the head's control messages, which can wait that long
            if not self.forker.wait_ready(TEMPLATE_READY_S):
                log.warning("the actor-process template was not ready in %g s: actor processes start as interpreters",
                            TEMPLATE_READY_S)
                self.forker.close()
                self.setup["actor_fork"] = False
                return None
        return self.forker.spawn(setup, log_path)

    def stop(self, actor_id: int, incarnation: int) -> None:
        proc = self.procs.get((actor_id, incarnation))
        if proc is not None and proc.returncode is None:
            proc.kill()   # its exit is reported like any other

    def report_exits(self, ctl) -> None:
        """Tell the head about the processes that exited since the last call."""
        for key, proc in list(self.procs.items()):
            with _reap_lock:   # reap_children (main thread) may have collected it: its code is kept there
                rc = _reaped.pop(proc.pid, None)
                if rc is None:
                    rc = proc.poll()
                else:
                    proc.returncode = rc
                if rc is not None:
                    _watched.discard(proc.pid)
            if rc is not None:
                del self.procs[key]
                ctl.send(P.ActorProcessExited(key[0], key[1], rc))
