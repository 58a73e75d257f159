"""The wire protocol: typed messages, their frame layout, the version, and HMAC signing.

Every message is a dataclass below with a numeric ``CODE``. On the wire a message is
exactly three frames::

    [ signature, header, body ]

``header`` is 32 bytes, ``struct "<16sQd"``: the sender's session id (16 random bytes,
one per sending socket), its sequence number (1, 2, 3... per session) and the wall-clock
time it was sent. ``body`` is ``pickle((PROTOCOL_VERSION, CODE, fields...))`` where fields
holding records (NamedTuples, e.g. :class:`TaskSpec`) travel as plain tuples: pickling a
NamedTuple costs ten times a tuple, and a batch holds thousands of them. ``signature``
is HMAC-SHA256 over header and body with the per-cluster key. One message, the object
chunk (``ATTACH``), has a fourth frame, its raw bytes, signed with the rest (see :func:`encode`).

A receiver checks, cheapest first and before unpickling anything: three frames (four for a
chunk), a
32-byte signature and header, the signature, then (with a :class:`ReplayGuard`, one per
receiving socket) that the sequence number is higher than the last one seen from that
session and that the message is not older than the replay window, then the version, then
the code. A message failing any check raises :class:`~jpar.errors.ProtocolError`, which
every loop counts and drops (with one summary log line per interval), so a stray,
replayed or hostile frame never crashes a process and never runs anything twice.

Who sends what (D = driver or any client, H = head, E = engine)::

    D->H  Hello Goodbye Heartbeat RegisterFunction Submit PutObjects Release Cancel GetObjects Query Free
          CreateActor ActorLookup KillActor ReleaseActor ActorCallsDone (failures the caller decided)
          RemoveEngines AddEngines CancelClientTasks    (cluster operations: the sidebar, `jpar`)
    E->H  EngineHello TaskDone GiveBack Blocked Metrics Heartbeat ActorProcessExited
    A->H  ActorHello ActorReady ActorCallsDone       (A = an engine in actor mode: one actor)
          CancelTask                                 (back: the cancel is in, the call cannot start now)
    H->E  Define DriverInfo Dispatch CancelTask Heartbeat Shutdown
          StartActorProcess StopActorProcess         (actors on the engine's host, not the head's)
    H->A  ActorSetup CancelTask Shutdown
    H->D  Welcome Answer Objects TaskFailed ActorInfo ObjectsLost ObjectsRebuilding NodeLost
    D->A  Calls                                      (method calls go straight to the actor)
    *->*  FetchObject ObjectChunk                    (a reader pulls a stored object from its writer's node)
    E->D  Results Output                             (A->D too: method results)
    H->*  Events (PUB stream: task transitions, engine metrics, for dashboards)

The event stream is signed like every message and published under a topic frame that is
a secret derived from the key (:meth:`Signer.derive`): the head admits only subscriptions
to that topic (XPUB manual mode), so a peer without the key receives nothing and cannot
switch on per-task event generation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import os
import pickle
import struct
import time
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from ...errors import ProtocolError
from ...events import Event, OutputRecord

__all__ = ["PROTOCOL_VERSION", "Signer", "Session", "ReplayGuard", "encode", "decode", "MESSAGES"]

PROTOCOL_VERSION = 3   # 2: a signed header (session, sequence, time) in every message; replays refused
                       # 3: a TaskSpec names its call site (site), for the summary event stream

HEADER = struct.Struct("<16sQd")   # session id, sequence number, time sent (seconds since the epoch)
SIGNATURE_BYTES = 32
REPLAY_WINDOW_S = 300.0            # a message older than this is refused (also bounds clock skew between hosts)

# Result status codes carried in records.
OK = 0
ERROR = 1
LOCAL = 3    # in a Dispatch's deps: the value is being made on this engine, by the task ahead (chaining)


# ---------------------------------------------------------------- records
class TaskSpec(NamedTuple):
    """A task as submitted by a client."""

    task_id: int          # also the id of its first return object
    fn_id: int            # function (or actor method) definition shipped once
    name: str             # for display: the function's qualified name
    args: bytes           # pickled (args, kwargs); top-level refs are resolved on the engine
    deps: tuple           # object ids the task waits for (top-level ref arguments)
    num_returns: int
    resources: tuple      # ((name, amount), ...) e.g. (("CPU", 1.0),)
    max_retries: int
    retry_exceptions: Any  # False, True, or pickled tuple of exception types
    parent: int           # task id of the submitting task, 0 from a driver
    actor: int            # actor id for a method call / creation, 0 for a plain task
    placement: int        # run only on this engine id; -1 for anywhere
    site: int = 0         # the submitting process's number for the line that submitted it (0: none): dashboards count by it


class DispatchRecord(NamedTuple):
    """A task as handed to an engine: the spec plus the values of its dependencies."""

    task_id: int
    fn_id: int
    name: str
    args: bytes
    deps: tuple           # ((object_id, status, blob), ...) in spec order
    num_returns: int
    owner: int            # client number that receives the result
    attempt: int
    max_retries: int
    retry_exceptions: Any
    gpu_ids: tuple
    actor: int


class ObjectRecord(NamedTuple):
    object_id: int
    status: int           # OK or ERROR (the blob is then a pickled exception)
    blob: bytes


class DoneRecord(NamedTuple):
    task_id: int
    attempt: int
    status: int           # OK, ERROR, or RETRY (an exception retry_exceptions allows)
    objects: tuple        # ((object_id, status, blob), ...)
    duration: float       # seconds the task ran (sizes the engine's prefetch queue)
    fetch: float = 0.0    # seconds of it spent resolving ref arguments (the dashboard's transfer phase)


RETRY = 2


class ActorSpec(NamedTuple):
    """An actor as created by its owner: the class (shipped like a function) and its arguments."""

    actor_id: int
    fn_id: int            # the class definition, registered with RegisterFunction
    class_name: str
    args: bytes           # pickled (args, kwargs); top-level refs resolved by the creator
    deps: tuple           # ((object_id, status, blob), ...) values of the ref arguments
    resources: tuple      # ((name, amount), ...) reserved while the actor lives
    options: dict         # max_restarts, max_task_retries, max_concurrency, is_async, detached, methods
    name: str             # registry name ("" for none)


class CallRecord(NamedTuple):
    """One actor method call, caller -> actor process."""

    task_id: int          # also the id of its first return object
    method: str
    args: bytes
    deps: tuple           # ((object_id, status, blob), ...): resolved by the caller before sending
    num_returns: int
    attempt: int


class CallDoneRecord(NamedTuple):
    """A finished (or failed) actor call, reported to the head for objects and the event stream."""

    task_id: int
    attempt: int
    status: int
    objects: tuple        # ((object_id, status, blob), ...)
    start: float          # wall-clock times of the call on the actor
    end: float


# ---------------------------------------------------------------- messages
@dataclass(slots=True)
class Message:
    CODE: ClassVar[int] = 0
    RECORDS: ClassVar[dict[str, type]] = {}
    ATTACH: ClassVar[str] = ""    # a bytes field that travels as a frame of its own (see encode)


def _msg(code: int, records: dict[str, type] | None = None):
    def wrap(cls):
        cls.CODE = code
        cls.RECORDS = records or {}
        return cls

    return wrap


@_msg(1)
@dataclass(slots=True)
class Hello(Message):
    kind: str            # "driver" or "engine-client"
    pid: int
    host: str
    endpoint: str        # where this client's PULL socket listens
    owns_cluster: bool   # the head exits when this client goes away


@_msg(2)
@dataclass(slots=True)
class Goodbye(Message):
    stop_cluster: bool = False


@_msg(3)
@dataclass(slots=True)
class Heartbeat(Message):
    pass


@_msg(4)
@dataclass(slots=True)
class RegisterFunction(Message):
    fn_id: int
    name: str
    blob: bytes


@_msg(5, {"tasks": TaskSpec})
@dataclass(slots=True)
class Submit(Message):
    tasks: list


@_msg(6, {"objects": ObjectRecord})
@dataclass(slots=True)
class PutObjects(Message):
    objects: list


@_msg(7)
@dataclass(slots=True)
class Release(Message):
    ids: list


@_msg(8)
@dataclass(slots=True)
class Cancel(Message):
    task_id: int
    force: bool
    recursive: bool


@_msg(9)
@dataclass(slots=True)
class GetObjects(Message):
    req_id: int
    ids: list


@_msg(10)
@dataclass(slots=True)
class Query(Message):
    req_id: int
    what: str            # "resources", "available", "status", "wait_engines", "engines_gone"...
    arg: Any = None


@_msg(19, {"objects": ObjectRecord})
@dataclass(slots=True)
class Free(Message):
    """jpar.free: drop these objects' values now, though refs to them remain. Each record carries the
    error (a pickled ObjectFreedError) the object becomes for every later reader and task. Answered
    once the head has freed them (ids it does not know, or freed already, are skipped)."""
    req_id: int
    objects: list


@_msg(16)
@dataclass(slots=True)
class RemoveEngines(Message):
    """Drain engines (these ids, or else ``count`` of them) and stop each once its running task ends.
    Answered with the ids being removed, or with the ValueError/LookupError saying why nothing was."""
    req_id: int
    count: int
    engine_ids: list


@_msg(18)
@dataclass(slots=True)
class AddEngines(Message):
    """Start ``count`` more engines on the head's host. Answered once they have joined, with
    ``{"engine_ids", "pids", "resources", "node"}`` (``resources``: what they added, e.g. {"CPU": 1.0}),
    or with the ValueError/ResourceError saying why none was started."""
    req_id: int
    count: int


@_msg(17)
@dataclass(slots=True)
class CancelClientTasks(Message):
    """Cancel every unfinished task of one client (driver) by its number. Answered with how many,
    or with a LookupError for a client that is not connected."""
    req_id: int
    client_no: int
    force: bool


@_msg(20)
@dataclass(slots=True)
class EngineHello(Message):
    pid: int
    host: str
    node: str            # host group sharing resources (and, later, an object store)
    resources: dict      # what this host advertises; only the first engine of a node sets it


@_msg(21, {"results": DoneRecord})
@dataclass(slots=True)
class TaskDone(Message):
    results: list


@_msg(27)
@dataclass(slots=True)
class GiveBack(Message):
    """Engine to head, after the TaskDone of the task ahead: these chained tasks did not run here, as
    the argument each waited for on this engine was not made here (see scheduler_chaining)."""
    task_ids: list


@_msg(28)
@dataclass(slots=True)
class ActorProcessExited(Message):
    """Engine to head (control connection): an actor process it started for the head has exited."""
    actor_id: int
    incarnation: int
    returncode: int


@_msg(22)
@dataclass(slots=True)
class Blocked(Message):
    task_id: int
    blocked: bool


@_msg(23)
@dataclass(slots=True)
class Metrics(Message):
    cpu_percent: float
    rss: int
    shared: int
    task_id: int


@_msg(30)
@dataclass(slots=True)
class Define(Message):
    fn_id: int
    blob: bytes


@_msg(31)
@dataclass(slots=True)
class DriverInfo(Message):
    client_no: int
    endpoint: str


@_msg(32, {"tasks": DispatchRecord})
@dataclass(slots=True)
class Dispatch(Message):
    tasks: list


@_msg(33)
@dataclass(slots=True)
class CancelTask(Message):
    task_id: int
    force: bool


@_msg(37)
@dataclass(slots=True)
class Revoke(Message):
    """Head to an engine's control thread: give back these prefetched tasks if not started."""
    task_ids: list


@_msg(38)
@dataclass(slots=True)
class StartActorProcess(Message):
    """Head to an engine's control thread on another host: start a process there for this actor
    (``actor``: its id, incarnation and GPU ids), as the head starts those of its own host."""
    actor: dict


@_msg(39)
@dataclass(slots=True)
class StopActorProcess(Message):
    """Head to the engine that started an actor's process: kill it (jpar.kill, or the actor ended)."""
    actor_id: int
    incarnation: int


@_msg(26)
@dataclass(slots=True)
class Revoked(Message):
    """Engine to head: these tasks were taken off its queue unstarted (the rest had started)."""
    task_ids: list


@_msg(34)
@dataclass(slots=True)
class Shutdown(Message):
    reason: str = ""
    cluster_over: bool = True   # False: only this engine leaves; its node's object store stays


@_msg(35)
@dataclass(slots=True)
class EngineWelcome(Message):
    engine_id: int
    heartbeat_s: float
    dead_after_s: float


@_msg(40)
@dataclass(slots=True)
class Welcome(Message):
    client_no: int
    cluster_id: str
    info: dict


@_msg(41)
@dataclass(slots=True)
class Answer(Message):
    req_id: int
    value: Any


@_msg(42, {"objects": ObjectRecord})
@dataclass(slots=True)
class Objects(Message):
    req_id: int
    objects: list


@_msg(43, {"objects": ObjectRecord})
@dataclass(slots=True)
class TaskFailed(Message):
    objects: list        # error blobs for the returns of failed/cancelled tasks


@_msg(50, {"objects": ObjectRecord})
@dataclass(slots=True)
class Results(Message):
    objects: list
    engine: int          # the engine that produced them (-1: an actor process)


@_msg(51, {"chunks": OutputRecord})
@dataclass(slots=True)
class Output(Message):
    chunks: list


@_msg(60, {"events": Event})
@dataclass(slots=True)
class Events(Message):
    events: list


@_msg(11)
@dataclass(slots=True)
class CreateActor(Message):
    req_id: int          # 0: no answer wanted; else the head answers with the actor id (or an error)
    spec: Any            # ActorSpec
    get_if_exists: bool


@_msg(12)
@dataclass(slots=True)
class ActorLookup(Message):
    actor_id: int        # subscribe: the head sends ActorInfo now and on every state change


@_msg(13)
@dataclass(slots=True)
class KillActor(Message):
    actor_id: int
    no_restart: bool


@_msg(14)
@dataclass(slots=True)
class ReleaseActor(Message):
    actor_id: int        # the owner's last handle is gone: end the actor once its calls finished


@_msg(15, {"records": CallDoneRecord})
@dataclass(slots=True)
class ActorCallsDone(Message):
    actor_id: int
    records: list


@_msg(24)
@dataclass(slots=True)
class ActorHello(Message):
    actor_id: int
    incarnation: int
    pid: int
    host: str


@_msg(25)
@dataclass(slots=True)
class ActorReady(Message):
    actor_id: int
    incarnation: int
    status: int          # OK, or ERROR when __init__ raised (blob is the error)
    endpoints: list      # where the actor takes Calls
    blob: bytes


@_msg(36)
@dataclass(slots=True)
class ActorSetup(Message):
    spec: Any            # ActorSpec
    incarnation: int
    class_blob: bytes


@_msg(45, {"objects": ObjectRecord})
@dataclass(slots=True)
class ObjectsLost(Message):
    """Head to an owner: these values lived only on a node that left the cluster; each record's error
    replaces the value the owner held (a location it can no longer pull from)."""
    objects: list


@_msg(46)
@dataclass(slots=True)
class ObjectsRebuilding(Message):
    """Head to an owner: these values lived only on ``node``, which left the cluster, and their tasks
    run again (lineage): the owner forgets the locations it held there and waits for new results."""
    object_ids: list
    node: str


@_msg(47, {"lost": ObjectRecord})
@dataclass(slots=True)
class NodeLost(Message):
    """Head to every client (after the owners' ObjectsLost / ObjectsRebuilding): ``node`` left the
    cluster with these values. A reader that is not their owner and holds a location there drops it:
    a lost one's record replaces it, a rebuilt one is asked for again; a pull from the node gives up."""
    node: str
    lost: list           # ObjectRecords (errors) of values that cannot be rebuilt
    rebuilding: list     # object ids whose tasks run again


@_msg(44)
@dataclass(slots=True)
class ActorInfo(Message):
    actor_id: int
    state: str           # "pending", "alive", "restarting", "dead"
    incarnation: int
    endpoints: list
    host: str
    detail: bytes        # dead: the pickled error calls should raise


@_msg(52, {"calls": CallRecord})
@dataclass(slots=True)
class Calls(Message):
    caller: int          # client number of the caller
    endpoint: str        # the caller's PULL socket: results go there
    calls: list


@_msg(70)
@dataclass(slots=True)
class FetchObject(Message):
    """A reader on another node asks a writer's object server for part of a segment."""
    req_id: int
    name: str            # segment name (from the object's location record)
    offset: int
    length: int


@_msg(71)
@dataclass(slots=True)
class ObjectChunk(Message):
    ATTACH: ClassVar[str] = "data"   # megabytes: a frame of its own, never pickled, received without a copy
    req_id: int
    offset: int
    total: int           # segment size; -1 when the segment is gone (data is then the reason)
    data: bytes


MESSAGES: dict[int, type[Message]] = {
    cls.CODE: cls
    for cls in (
        Hello, Goodbye, Heartbeat, RegisterFunction, Submit, PutObjects, Release, Cancel, GetObjects, Query, Free,
        RemoveEngines, AddEngines, CancelClientTasks,
        EngineHello, TaskDone, GiveBack, Blocked, Metrics, Define, DriverInfo, Dispatch, CancelTask, Revoke, Revoked,
        Shutdown, StartActorProcess, StopActorProcess, ActorProcessExited,
        EngineWelcome, Welcome, Answer, Objects, TaskFailed, Results, Output, Events,
        CreateActor, ActorLookup, KillActor, ReleaseActor, ActorCallsDone, ActorHello, ActorReady, ActorSetup,
        ActorInfo, Calls, FetchObject, ObjectChunk, ObjectsLost, ObjectsRebuilding, NodeLost,
    )
}
_FIELDS = {code: tuple(f.name for f in dataclasses.fields(cls)) for code, cls in MESSAGES.items()}


# ---------------------------------------------------------------- framing and signing
class Signer:
    """HMAC-SHA256 over every frame of a message with the cluster key."""

    __slots__ = ("_key", "_base")

    def __init__(self, key: bytes):
        if not key:
            raise ProtocolError("An empty cluster key cannot sign messages; pass the key from the connection file.")
        self._key = key
        self._base = hmac.new(key, digestmod=hashlib.sha256)   # copied per message: no key schedule each time

    def sign(self, frames) -> bytes:
        h = self._base.copy()
        for f in frames:
            h.update(f)
        return h.digest()

    def verify(self, signature: bytes, frames) -> bool:
        return hmac.compare_digest(signature, self.sign(frames))

    def derive(self, label: bytes) -> bytes:
        """A 16-byte secret for ``label`` that only holders of the key can compute (e.g. the event topic)."""
        return hmac.new(self._key, b"jpar-derive:" + label, hashlib.sha256).digest()[:16]


class Session:
    """One sender's identity on the wire: a random session id and a strictly increasing sequence."""

    __slots__ = ("id", "_seq")

    def __init__(self):
        self.id = os.urandom(16)
        self._seq = itertools.count(1)   # next() on a count is atomic: safe from several threads

    def header(self) -> bytes:
        return HEADER.pack(self.id, next(self._seq), time.time())


class ReplayGuard:
    """What one receiving socket has seen: the last sequence number of each sender session.

    A message whose sequence number is not above the last one seen from its session is a
    duplicate or a replay; a message sent more than ``window_s`` ago is refused too, so a
    session idle for twice the window can be forgotten safely (its old messages are stale
    by then): the table holds only recently active, signed (so legitimate) sessions.
    """

    __slots__ = ("window_s", "_last", "_next_sweep", "refused")

    def __init__(self, window_s: float = REPLAY_WINDOW_S):
        self.window_s = window_s
        self._last: dict[bytes, list] = {}     # session -> [last sequence, local time last seen]
        self._next_sweep = time.time() + window_s
        self.refused = 0

    def check(self, session: bytes, seq: int, sent: float) -> None:
        now = time.time()
        if not sent >= now - self.window_s:    # also refuses NaN
            self.refused += 1
            raise ProtocolError(f"stale message: sent {now - sent:.0f} s ago, more than the {self.window_s:.0f} s "
                                "replay window (a replay, or this host's clock differs from the sender's)")
        entry = self._last.get(session)
        if entry is None:
            self._last[session] = [seq, now]
        elif seq <= entry[0]:
            self.refused += 1
            raise ProtocolError(f"replayed or duplicate message (sequence {seq}, already at {entry[0]})")
        else:
            entry[0] = seq
            entry[1] = now
        if now >= self._next_sweep:
            self._next_sweep = now + self.window_s
            old = now - 2 * self.window_s
            for s in [s for s, e in self._last.items() if e[1] < old]:
                del self._last[s]

    def __len__(self) -> int:
        return len(self._last)


_BODY_LEN = struct.Struct("<Q")


def encode(msg: Message, signer: Signer, session: Session | None = None) -> list:
    """A message as frames ``[signature, header, body]`` (a one-off session when none is given).

    A message class with ``ATTACH`` (an object chunk) sends that bytes-like field as a fourth frame,
    ``[signature, header, body, attachment]``, instead of inside the pickled body: megabytes are then
    neither copied into a pickle nor out of one, and a receiver can take the frame without a copy. The
    signature covers it too, with the body's length, so frames cannot be re-split between the two."""
    code = msg.CODE
    values = [getattr(msg, name) for name in _FIELDS[code]]
    if msg.RECORDS:
        for i, name in enumerate(_FIELDS[code]):
            if name in msg.RECORDS:
                values[i] = [tuple(r) for r in values[i]]
    attachment = None
    if msg.ATTACH:
        i = _FIELDS[code].index(msg.ATTACH)
        attachment, values[i] = values[i], b""
    body = pickle.dumps((PROTOCOL_VERSION, code, values), protocol=5)
    header = (session or Session()).header()
    if attachment is None:
        return [signer.sign((header, body)), header, body]
    return [signer.sign((header, body, _BODY_LEN.pack(len(body)), attachment)), header, body, attachment]


def decode(frames, signer: Signer, guard: ReplayGuard | None = None) -> Message:
    """Frames back to a message; raises ProtocolError for anything not signed, not ours, replayed or broken.

    The cheap checks come first (frame count and sizes), then the signature, then the replay
    guard: nothing is unpickled from a sender that does not hold the key."""
    if len(frames) not in (3, 4):
        raise ProtocolError(f"expected [signature, header, body(, attachment)], got {len(frames)} frame(s)")
    signature, header, body = frames[:3]
    attachment = frames[3] if len(frames) == 4 else None
    if len(signature) != SIGNATURE_BYTES or len(header) != HEADER.size:
        raise ProtocolError("bad or missing signature: malformed signature or header frame")
    header, body = bytes(header), bytes(body)
    if attachment is not None:
        attachment = attachment if isinstance(attachment, (bytes, memoryview)) else memoryview(attachment)
    signed = (header, body) if attachment is None else (header, body, _BODY_LEN.pack(len(body)), attachment)
    if not signer.verify(bytes(signature), signed):
        raise ProtocolError("bad or missing signature: the sender does not hold this cluster's key")
    if guard is not None:
        guard.check(*HEADER.unpack(header))
    try:
        version, code, values = pickle.loads(body)
    except Exception as exc:  # signed but unreadable: a bug in a peer, still never fatal
        raise ProtocolError(f"signed message could not be decoded: {exc!r}") from None
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version} received, this process speaks {PROTOCOL_VERSION}: "
            "run the same jpar version on every host"
        )
    cls = MESSAGES.get(code) if type(code) is int else None
    if cls is None or not isinstance(values, list) or len(values) != len(_FIELDS[code]):
        raise ProtocolError(f"unknown message code {code!r} or wrong field count")
    if (attachment is not None) != bool(cls.ATTACH):
        raise ProtocolError(f"{cls.__name__} {'needs' if cls.ATTACH else 'takes no'} attachment frame")
    if attachment is not None:
        values[_FIELDS[code].index(cls.ATTACH)] = attachment
    if cls.RECORDS:
        for i, name in enumerate(_FIELDS[code]):
            rec = cls.RECORDS.get(name)
            if rec is not None:
                try:
                    values[i] = [rec._make(t) for t in values[i]]
                except TypeError as exc:
                    raise ProtocolError(f"malformed {rec.__name__} in {cls.__name__}: {exc}") from None
    try:
        return cls(*values)
    except TypeError as exc:
        raise ProtocolError(f"malformed {cls.__name__}: {exc}") from None


def describe() -> list[tuple[int, str, tuple[str, ...]]]:
    """(code, name, fields) of every message: the docs' protocol table is generated from this."""
    return [(code, cls.__name__, _FIELDS[code]) for code, cls in sorted(MESSAGES.items())]


__all__ += [cls.__name__ for cls in MESSAGES.values()] + [
    "TaskSpec", "DispatchRecord", "ObjectRecord", "DoneRecord", "OutputRecord", "Event", "OK", "ERROR", "RETRY",
    "ActorSpec", "CallRecord", "CallDoneRecord",
    "describe", "HEADER",
]
