"""A starter's handle on an actor-process template (``jpar.runtime.engine.forker``): start it, ask
it for a process, and keep what a Popen gives (pid, poll, kill) for the processes it forked, fed
by its exit reports. The starter is the head (actors on its host) or an engine (actors the head
places on that engine's host); each has a template of its own, which dies with it.

A starter holds its first actors back until its template says it is ready (an interpreter started
meanwhile would compete with the template's imports); if the template dies or is late, or a
request fails, actor processes start as before (an interpreter each). A request blocks the caller
only for the fork (a few ms); exits are read whenever the caller polls a process.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time

log = logging.getLogger("jpar.actors")

REPLY_TIMEOUT_S = 5.0


class ForkedProcess:
    """An actor process forked by the template: what the head uses of a ``subprocess.Popen``."""

    def __init__(self, forker: "Forker", pid: int):
        self.forker, self.pid = forker, pid
        self.returncode = None
        try:
            self._pidfd = os.pidfd_open(pid)   # a kill can never reach a later process given the same pid
        except (OSError, AttributeError):
            self._pidfd = None

    def poll(self):
        if self.returncode is None:
            self.forker.collect()
            code = self.forker.exits.pop(self.pid, None)
            if code is None and not self.forker.alive():
                code = self._gone_code()
            if code is not None:
                self._set(code)
        return self.returncode

    def _gone_code(self):
        """The template died, so it reports no exit any more: this process dies with it
        (PR_SET_PDEATHSIG) and, the starter being a subreaper, becomes the starter's child to reap."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            return os.waitstatus_to_exitcode(status) if pid else None
        except ChildProcessError:
            pass                       # not ours (reaped already, or no subreaper): watch it go
        if self._pidfd is not None:
            if not select.select([self._pidfd], [], [], 0)[0]:
                return None
        else:
            try:
                os.kill(self.pid, 0)
                return None
            except ProcessLookupError:
                pass
        return -signal.SIGKILL

    def _set(self, code: int) -> None:
        self.returncode = code
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def kill(self) -> None:
        if self.returncode is not None:
            return
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Forker:
    """The template process and its reply stream (used by the head's main thread only)."""

    def __init__(self, env: dict | None, cwd: str | None, log_path: str):
        with open(log_path, "ab") as logf:
            self.proc = subprocess.Popen([sys.executable, "-m", "jpar.runtime.engine.forker", str(os.getpid())],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                                         env=env, cwd=cwd)
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._buf = b""
        self.ready = False
        self.exits: dict[int, int] = {}      # pid -> exit code, reported and not yet polled
        self._pids: list[int] = []           # fork replies not yet taken

    def reply_fd(self) -> int:
        """The pipe its replies come on (readable: a reply, or its exit)."""
        return self._out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def collect(self, timeout: float = 0.0) -> None:
        """Read the replies that arrived (waiting up to ``timeout`` for the first)."""
        if self.proc.stdout.closed or timeout > 0 and not select.select([self._out], [], [], timeout)[0]:
            return
        while True:
            try:
                chunk = os.read(self._out, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buf += chunk
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            msg = json.loads(line)
            if "exit" in msg:
                self.exits[msg["exit"]] = msg["code"]
            elif "pid" in msg:
                self._pids.append(msg["pid"])
            elif "ready" in msg:
                self.ready = True

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the template to say it is ready (False: it died or is late)."""
        deadline = time.monotonic() + timeout
        while not self.ready and self.alive():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.collect(min(left, 0.5))
        return self.ready

    def spawn(self, setup: dict, log_path: str) -> ForkedProcess | None:
        """A new actor process running ``setup``, or None when the template cannot make one now."""
        if not self.ready:
            self.collect()
        if not self.ready:
            return None
        if not self.alive():
            log.warning("the actor-process template exited with %s; actor processes start as interpreters now",
                        self.proc.returncode)
            self.ready = False
            return None
        try:
            self.proc.stdin.write((json.dumps({"setup": setup, "log": log_path}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.ready = False
            return None
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while not self._pids:
            left = deadline - time.monotonic()
            if left <= 0 or not self.alive():
                log.warning("the actor-process template did not answer; actor processes start as interpreters now")
                self.ready = False
                self.close()
                return None
            self.collect(left)
        return ForkedProcess(self, self._pids.pop(0))

    def close(self) -> None:
        """Stop the template (its children die with it: kill them first to keep their exit codes)."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
