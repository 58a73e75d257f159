"""Stored objects across nodes: a writer's object server and a reader's chunked, pipelined pull.

::

    reader (another node)                               writer process (driver or engine)
      fetch(location) --FetchObject(name, off, len)-->   ObjectServer thread: ROUTER on tcp
                      <--ObjectChunk(off, total, data)--   maps the segment (shared lock) and slices it
      (up to _WINDOW requests in flight; the chunks land in one private buffer: one copy)

A chunk's bytes travel as a frame of their own (the message's attachment, see protocol.encode): the
server hands ZeroMQ a slice of the mapped segment, the reader takes the frame without a copy, so the
only passes over the data in Python are the HMAC on each side and the reader's copy into its buffer.

Messages go through the cluster's signed transport like every other message: a request
replayed from another socket is refused, and junk sent to the server is dropped in bounded
slices (see :mod:`jpar.runtime.wire.transport`). The value
the reader gets lives in its private memory, not in its node's store, so it needs no
freeing. A location names the writer's server, so the object is reachable from another
node while its writer process lives (objects stay readable on their own node regardless).
"""

from __future__ import annotations

import itertools
import mmap
import threading
import time

from ..wire import protocol as P
from ..wire import transport
from ...errors import ObjectLostError

__all__ = ["ObjectServer", "fetch", "node_lost"]

CHUNK = 4 << 20
_WINDOW = 4
_TIMEOUT_S = 30.0
_SLICE_S = 0.25           # a pull waiting for chunks looks this often whether its node was lost
_req = itertools.count(1)
_lost: dict[str, int] = {}   # node -> how often this process heard that the node left the cluster


def node_lost(node: str) -> None:
    """This process heard from the head that ``node`` left: pulls from it under way give up now
    (ObjectLostError) instead of waiting out their timeout for a server that is gone."""
    _lost[node] = _lost.get(node, 0) + 1


class ObjectServer:
    """Serves this process's node's segments to readers on other nodes (one daemon thread)."""

    def __init__(self, store, bind_host: str, peer: str = ""):
        self.store = store
        self.signer = P.Signer(store.key)
        self.channel, bound = transport.bind_router([f"tcp://{bind_host}:0"], self.signer)
        self.endpoint = transport.advertised_endpoint(bound[0], peer)   # a wildcard bind names a real address
        self._stop = False
        self._open: dict[str, tuple] = {}      # name -> (view, last use): a transfer maps once
        self._thread = threading.Thread(target=self._run, name="jpar-object-server", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ch = self.channel
        try:
            while not self._stop:
                if not ch.sock.poll(200):
                    self._expire()
                    continue
                # bounded per turn: a flood of junk is read and dropped in slices, never starving _expire
                ch.drain_from(self._serve)
                ch.tick_drop_log()
        except Exception:  # socket closed at shutdown
            pass
        finally:
            self._open.clear()
            ch.close()

    def _serve(self, identity: bytes, msg: P.Message) -> None:
        if type(msg) is P.FetchObject:
            self.channel.send_to(identity, self._chunk(msg))

    def _chunk(self, msg: P.FetchObject) -> P.ObjectChunk:
        entry = self._open.get(msg.name)
        try:
            view = entry[0] if entry is not None else self.store.map(msg.name)
        except ObjectLostError as exc:
            return P.ObjectChunk(msg.req_id, msg.offset, -1, str(exc).encode())
        self._open[msg.name] = (view, time.monotonic())
        end = min(msg.offset + msg.length, len(view))
        return P.ObjectChunk(msg.req_id, msg.offset, len(view), view[msg.offset:end])   # no copy: ZeroMQ sends it

    def _expire(self) -> None:
        now = time.monotonic()
        for name in [n for n, (_, t) in self._open.items() if now - t > 2.0]:
            del self._open[name]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2.0)


class Pulled(mmap.mmap):
    """The private memory a pulled object lands in: anonymous pages, faulted in as chunks arrive (a
    bytearray zero-fills all of it first, 0.5 s a GiB here). Its own type, so a value read from it is
    told apart from one mapped from a store segment (an ``mmap``)."""


def fetch(loc, key: bytes) -> "Pulled | bytearray":
    """The whole segment at ``loc`` pulled from its writer's server, in pipelined chunks."""
    if not loc.endpoint:
        raise ObjectLostError(f"Object segment {loc.name} lives on node {loc.node!r} and has no server to pull it "
                              "from. Run the task on that node, or get() it there.")
    ch = transport.connect_dealer(loc.endpoint, P.Signer(key))
    ch.zero_copy = True
    try:
        buf = Pulled(-1, loc.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) if loc.size else bytearray()
        offsets = list(range(0, loc.size, CHUNK))
        pending: dict[int, int] = {}
        got = 0
        lost_before = _lost.get(loc.node, 0)
        waited = 0.0
        while got < loc.size:
            while offsets and len(pending) < _WINDOW:
                off = offsets.pop(0)
                req = next(_req)
                pending[req] = off
                ch.send(P.FetchObject(req, loc.name, off, CHUNK))
            msg = ch.recv(timeout_ms=int(_SLICE_S * 1000))
            if msg is None:
                waited += _SLICE_S
                if _lost.get(loc.node, 0) != lost_before:
                    raise ObjectLostError(f"Object segment {loc.name} could not be pulled: its node {loc.node!r} left "
                                          "the cluster meanwhile.")
                if waited < _TIMEOUT_S:
                    continue
                raise ObjectLostError(f"Object segment {loc.name} could not be pulled from node {loc.node!r} "
                                      f"({loc.endpoint}): no answer in {_TIMEOUT_S:.0f} s. Its writer process may "
                                      "have exited; recompute the object or keep its writer alive.")
            waited = 0.0
            if type(msg) is not P.ObjectChunk or msg.req_id not in pending:
                continue
            del pending[msg.req_id]
            if msg.total < 0:
                raise ObjectLostError(bytes(msg.data).decode(errors="replace"))
            buf[msg.offset:msg.offset + len(msg.data)] = msg.data
            got += len(msg.data)
        return buf
    finally:
        ch.close()
