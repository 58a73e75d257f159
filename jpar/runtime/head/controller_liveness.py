"""The head's liveness duties: which connection belongs to which peer, and when a peer is gone.

Mixed into :class:`jpar.runtime.head.controller.Head`. A peer is gone when libzmq drops one of its
connections to the head's ROUTER (closed, or its ZMTP heartbeats stopped: see
:class:`~jpar.runtime.wire.transport.Monitor`), when a local engine's process exits or is stopped,
or, for a peer whose connection could not be tracked, after ``dead_after_s`` of silence.

Each engine keeps a third connection to the head, its *liveness connection* (identity
``<engine>/live``): it sends one message, so the head learns its file descriptor, and then only
ZMTP PINGs, answered and sent by libzmq's I/O threads without the GIL. The head's ROUTER sends no
pings of its own (see :func:`~jpar.runtime.wire.transport.bind_router`); it drops a connection
only through the TTL its peer's pings carry, and libzmq arms that timer on a PING and cancels it
on any later message. On the work and control connections data follows pings all the time (task
results, metrics), so when a link is cut right after such a message no timer runs and the head
would wait for TCP to give up (many minutes). The liveness connection carries no data, so its
timer always runs from the last ping: a lost host is declared dead at most the TTL
(``dead_after_s - heartbeat_s``) after the link went, 9 s with the defaults. The timer starts with
the first ping, ``heartbeat_s`` after the connection is made: an engine lost before then is found
by its silence (``dead_after_s``), as is any engine whose liveness connection is not tracked.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

__all__ = ["Liveness", "LIVE_SUFFIX", "exit_text"]

log = logging.getLogger("jpar.head")

LIVE_SUFFIX = b"/live"   # an engine's liveness connection: its identity plus this


def _is_engine(peer) -> bool:
    return hasattr(peer, "fds")   # EngineInfo tracks several connections, a Client one


class Liveness:
    """Connection tracking, dropped connections, exited and silent peers (mixed into Head)."""

    def _live_message(self, identity: bytes) -> bool:
        """A message on an engine's liveness connection: note the connection (whose drop means the
        engine is gone). False if ``identity`` is no engine's liveness connection."""
        eng = self.engines.get(identity[: -len(LIVE_SUFFIX)]) if identity.endswith(LIVE_SUFFIX) else None
        if eng is None:
            return False
        self._track_fd(eng)
        eng.live_since = time.monotonic()
        return True

    def _ttl_running(self, eng) -> bool:
        """Whether the head's TTL timer on ``eng``'s liveness connection was running when the engine
        was last heard from: libzmq arms it on the first ping, sent ``heartbeat_s`` after the
        connection is made, so a link cut before then leaves no timer (only silence finds that
        engine). Heard from twice that long after the connection was tracked, the ping had come."""
        return bool(eng.live_since) and eng.last - eng.live_since > 2 * self.config.heartbeat_s

    def _track_fd(self, peer) -> None:
        """Note the connection the current message came on: when it drops, the peer is gone."""
        fd = self.router.last_fd()
        if fd < 0:
            return
        self._connections_lost()   # a drop noticed before this fd was reused belongs to the old peer
        self.fd_owner[fd] = peer
        if _is_engine(peer):
            peer.fds.add(fd)
        else:
            peer.fd = fd

    def _connections_lost(self) -> None:
        """Peers whose connection libzmq dropped: closed, or no answer to its ZMTP heartbeats (answered
        by the peer's I/O thread, so a task holding the GIL does not count as silence)."""
        for fd in self.monitor.disconnected():
            peer = self.fd_owner.pop(fd, None)
            if peer is not None and not _is_engine(peer):
                if self.clients.get(peer.identity) is peer:
                    self._client_gone(peer, "its connection was lost")
            elif peer is not None and self.engines_by_id.get(peer.id) is peer:
                self.incidents += 1
                why = f"lost its connection to the head (no heartbeat answer from node {peer.node!r}, or closed)"
                if peer.proc is not None:
                    try:   # a dying engine's connection closes just before it exits: say how it ended
                        peer.proc.wait(timeout=0.5)
                        why = exit_text(peer.proc.returncode)
                    except subprocess.TimeoutExpired:
                        peer.proc.kill()   # stopped or hung beyond the heartbeat: it will not come back
                        why += "; killed"
                log.warning("engine %d (pid %d, node %r) is gone: %s", peer.id, peer.pid, peer.node, why)
                self._engine_gone(peer, why)

    def _forget_fds(self, peer) -> None:
        for fd in (peer.fds if _is_engine(peer) else [peer.fd]):
            if self.fd_owner.get(fd) is peer:
                del self.fd_owner[fd]

    def _check_liveness(self, now: float) -> None:
        if self.owner_pid and os.getppid() != self.owner_pid:
            self._request_stop("the process that started the cluster is gone")
            return
        for pid, proc in list(self.children.items()):
            if proc.poll() is not None:
                del self.children[pid]
                extra = pid in self.extra_pids
                self.extra_pids.discard(pid)
                if self.retired.pop(pid, None) is not None:
                    continue   # removed on request: reaped, not replaced
                eng = next((e for e in self.engines_by_id.values() if e.pid == pid), None)
                if proc.returncode == 4:   # a forced cancel ended it: expected
                    log.info("engine pid %d exited with %s", pid, proc.returncode)
                else:
                    self.incidents += 1
                    log.warning("engine pid %d exited with %s", pid, proc.returncode)
                if eng is not None:
                    self._engine_gone(eng, exit_text(proc.returncode))
                elif extra:
                    self._apply(self.sched.spawn_failed(self.sched.head_node))
                if not self.stopping and not extra:
                    self._spawn_engine()
            elif now > self.retired.get(pid, now):
                log.warning("removed engine pid %d did not exit; killing it", pid)
                proc.kill()   # reaped at the next check
        self._check_actor_procs()
        self._connections_lost()
        # Silence alone proves nothing while the connection stands (a task may hold the GIL): it
        # counts only for a peer whose connection could not be tracked, a local engine the OS says
        # is stopped or gone, or an engine on another host whose liveness connection is not known
        # to have had its first ping (see _ttl_running).
        dead_after = self.config.dead_after_s
        for eng in [e for e in self.engines_by_id.values() if now - e.last > dead_after]:
            if eng.fds and (self._ttl_running(eng) if eng.proc is None else not _stopped(eng.proc)):
                continue
            self.incidents += 1
            if eng.proc is not None:
                eng.proc.kill()
            self._engine_gone(eng, f"silent for {now - eng.last:.1f} s")
        for client in [c for c in self.clients.values() if now - c.last > dead_after and c.fd < 0]:
            self._client_gone(client, f"silent for {now - client.last:.1f} s")


def exit_text(returncode: int | None) -> str:
    """How a process ended, for error messages: "exited with code 3", "killed by signal 9 (SIGKILL)"."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            name = ""
        return f"killed by signal {-returncode}{name}"
    return f"exited with code {returncode}"


def _stopped(proc) -> bool:
    """Whether a local engine's process is stopped (SIGSTOP), a zombie or gone (True when there is none)."""
    if proc is None:
        return True
    import psutil

    try:
        return psutil.Process(proc.pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return True
