"""How stored objects lie in shared memory: the segment layout, location records, segment names,
store settings, statistics records, and sweeping a cluster's segments away.

A segment is ``[header | entries | pickle body | out-of-band buffers...]``, each part 64-byte
aligned, so a reader maps it once and hands numpy views of the buffers to ``pickle.loads``. A
*location record* (``LOCATION_MAGIC`` + node, segment name, size) travels in messages instead of
the bytes. Names carry the cluster and node tags, so every process can find (and sweep) a
cluster's segments by prefix alone.
"""

from __future__ import annotations
import hashlib
import mmap
import os
import pickle
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, NamedTuple
from ...errors import ObjectLostError

import logging

log = logging.getLogger("jpar.object_store")


LOCATION_MAGIC = b"\x00JPL"              # location records start with this; pickles start with b"\x80"
_SEG_MAGIC = b"JPARSEG1"
_HDR = struct.Struct("<8sQQ")            # magic, body length, number of out-of-band buffers
_ENT = struct.Struct("<QQ")              # offset, length of each part (body first)
_ALIGN = 64
POOL_MIN = 1 << 20                       # smaller freed segments are unlinked, not pooled
POOL_IDLE_S = 30.0                       # pooled segments unused this long are unlinked
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})


class Location(NamedTuple):
    """Where a stored value lives; this (pickled behind LOCATION_MAGIC) is all that travels."""

    tag: str          # cluster tag (from the cluster key)
    node: str         # node whose namespace holds it
    name: str         # segment name
    size: int         # bytes of the segment
    host: str         # host name of that node
    endpoint: str     # the writer's object server (other nodes pull from it)


def is_location(blob) -> bool:
    return blob[:4] == LOCATION_MAGIC


def decode_location(blob: bytes) -> Location:
    return Location._make(pickle.loads(blob[4:]))


def cluster_tag(key: bytes) -> str:
    return hashlib.blake2b(key, digest_size=5).hexdigest()


def _node_tag(node: str) -> str:
    return hashlib.blake2b(node.encode(), digest_size=3).hexdigest()


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def default_shm_dir() -> str:
    d = "/dev/shm"
    return d if os.path.isdir(d) and os.access(d, os.W_OK) else tempfile.gettempdir()


def default_spill_dir(create: bool = True) -> str:
    """This user's spill directory under the temp dir, made mode 0700 and checked (see :func:`private_dir`)."""
    path = os.path.join(tempfile.gettempdir(), f"jpar-spill-{os.getuid()}")
    if create:
        private_dir(path)
    return path


def private_dir(path: str) -> str:
    """Make ``path`` a directory only this user can use, or refuse it.

    Its name is predictable (another user can create it first), so it is created with mode
    0700 without following a link, and an existing one must be a real directory owned by this
    user that no one else can write to; one that others could only read (an older jpar made it
    0755) is tightened to 0700."""
    import stat

    from ...errors import ConfigError

    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    fix = "Remove it, or set JPAR_OBJECT_SPILL_DIR to a directory of your own."
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"The spill directory {path} is not a directory (a link or a file): refusing it. {fix}")
    if st.st_uid != os.getuid():
        raise ConfigError(f"The spill directory {path} belongs to another user (uid {st.st_uid}), who could read or "
                          f"replace your spilled objects: refusing it. {fix}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(f"The spill directory {path} is writable by others (mode {mode:o}): refusing it. {fix}")
    if mode & 0o077:
        os.chmod(path, 0o700)
    return path


def default_capacity(shm_dir: str) -> int:
    """30% of RAM, bounded by 90% of the file system holding the segments (/dev/shm)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        st = os.statvfs(shm_dir)
        fs = st.f_blocks * st.f_frsize
    except OSError:
        fs = ram
    return int(min(0.3 * ram, 0.9 * fs))


def store_settings(config) -> dict:
    """The store's settings from a :class:`~jpar.config.Config` (sent to engines in their setup)."""
    return {"threshold": config.object_store_threshold, "capacity": config.object_store_bytes,
            "shm_dir": config.object_store_dir, "spill_dir": config.object_spill_dir, "bind_host": config.bind_host}


class _View:
    """A top-level memoryview value: stored out of band, comes back as a read-only memoryview."""

    __slots__ = ("mv",)

    def __init__(self, mv: memoryview):
        self.mv = mv

    def __reduce_ex__(self, protocol):
        mv = self.mv if self.mv.c_contiguous else memoryview(self.mv.tobytes())
        return (_as_view, (pickle.PickleBuffer(mv.cast("B") if mv.ndim != 1 or mv.format != "B" else mv),
                           mv.format, mv.shape))


def _as_view(buf, fmt: str, shape: tuple) -> memoryview:
    mv = memoryview(buf).toreadonly()
    return mv.cast("B").cast(fmt, shape) if (fmt, shape) != ("B", (mv.nbytes,)) else mv


class Prepared(NamedTuple):
    inline: bytes | None      # the pickle itself when the value is small
    body: bytes
    buffers: list             # out-of-band buffers (1-D byte memoryviews)
    size: int                 # segment size when stored


@dataclass(frozen=True)
class ObjectInfo:
    object_id: int
    size: int
    owner: int                # client number that created the ref (object id >> 40)
    refcount: int             # -1 when unknown (only the head knows the references)
    pinned: bool              # some process maps it now: it cannot be spilled or recycled
    spilled: bool             # on disk in the spill directory


@dataclass(frozen=True)
class StoreStatistics:
    node: str
    bytes_used: int           # object bytes in shared memory
    capacity: int
    spilled_bytes: int        # object bytes spilled to disk
    pooled_bytes: int         # freed segments kept pre-faulted for reuse
    held_bytes: int           # freed objects still mapped by some process (a get() result kept alive)
    object_count: int
    objects: tuple            # ObjectInfo per object



def _segment_size(body_len: int, buf_lens: list) -> int:
    off = _align(_HDR.size + _ENT.size * (1 + len(buf_lens)))
    off += _align(body_len)
    for n in buf_lens:
        off += _align(n)
    return max(off, _ALIGN)


def _fill(m: mmap.mmap, p: Prepared) -> None:
    mv = memoryview(m)
    try:
        parts = [memoryview(p.body)] + list(p.buffers)
        _HDR.pack_into(m, 0, _SEG_MAGIC, len(p.body), len(p.buffers))
        off = _align(_HDR.size + _ENT.size * len(parts))
        for i, part in enumerate(parts):
            n = part.nbytes
            _ENT.pack_into(m, _HDR.size + _ENT.size * i, off, n)
            part = part.cast("B") if part.format != "B" else part
            if n >= PARALLEL_COPY_MIN and _copy_threads() > 1 and "numpy" in sys.modules:
                _parallel_copy(mv[off:off + n], part)
            else:
                mv[off:off + n] = part
            off += _align(n)
    finally:
        mv.release()


# One thread copies ~12 GB/s here, two ~20 GB/s: a large buffer is copied in chunks by several
# threads (numpy's copy releases the GIL), as Ray's store copies large objects.
PARALLEL_COPY_MIN = 64 << 20
_copier: tuple[int, Any] | None = None   # (pid, ThreadPoolExecutor): a forked child makes its own


def _copy_threads() -> int:
    return min(4, os.cpu_count() or 1)


def _parallel_copy(dst: memoryview, src: memoryview) -> None:
    """``dst[:] = src`` by ``_copy_threads()`` threads, each copying one page-aligned chunk."""
    global _copier
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    k = _copy_threads()
    if _copier is None or _copier[0] != os.getpid():
        _copier = (os.getpid(), ThreadPoolExecutor(k - 1, thread_name_prefix="jpar-copy"))
    n = src.nbytes
    step = (-(-n // k) + 4095) & ~4095

    def one(lo: int) -> None:
        hi = min(n, lo + step)
        np.copyto(np.frombuffer(dst[lo:hi], np.uint8), np.frombuffer(src[lo:hi], np.uint8))

    futures = [_copier[1].submit(one, lo) for lo in range(step, n, step)]
    try:
        one(0)
    finally:
        for f in futures:
            f.result()


def _unpickle(view: memoryview) -> Any:
    magic, body_len, nbuf = _HDR.unpack_from(view, 0)
    if magic != _SEG_MAGIC:
        raise ObjectLostError("A shared-memory segment does not hold a jpar object (overwritten or corrupt).")
    parts = []
    for i in range(1 + nbuf):
        off, n = _ENT.unpack_from(view, _HDR.size + _ENT.size * i)
        parts.append(view[off:off + n])
    return pickle.loads(parts[0], buffers=parts[1:])


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _sweep(directory: str, prefix: str) -> None:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix):
            _unlink(os.path.join(directory, name))


def sweep_cluster(key: bytes, shm_dir: str = "", spill_dir: str = "") -> None:
    """Remove every segment and spill file of a cluster on this host (all its nodes)."""
    tag = cluster_tag(key)
    _sweep(shm_dir or default_shm_dir(), f"jpar-{tag}-")
    shutil.rmtree(os.path.join(spill_dir or default_spill_dir(create=False), f"jpar-{tag}"), ignore_errors=True)
