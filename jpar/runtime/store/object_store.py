"""The per-host object store: large values in shared memory, written once, mapped read-only.

::

    writer (driver put, engine result)                 readers on the same node
      prepare(value): pickle 5, out-of-band buffers      load(location): open, flock(SH), check inode,
      write(): a recycled or fresh segment, one copy       mmap read-only, pickle.loads(buffers=views)
           |                                                (numpy arrays come back as read-only views)
           +--> location record (~100 bytes) --> messages, the head's table, results tables
    head (HeadStores): FreeObjects -> free(): nobody maps it -> recycle into the pool, or unlink
                                               somebody maps it -> rename "dead"; recycled once unmapped
    readers on another node: object_transfer.fetch(location) pulls it in chunks from the writer

A segment is a file in ``/dev/shm`` named ``jpar-<cluster tag>-<node tag>-<kind>-...`` (kind
``o`` object, ``p`` pool, ``d`` dead, ``t`` being restored), so every node has its own namespace
and a cluster's segments can be swept by name: by the head at shutdown, by the owning driver
when the head dies, by engines whose head is gone. A reader holds a shared ``flock`` for as long
as its mapping lives (``mmap`` keeps a dup of the descriptor), so a segment is recycled, spilled
or overwritten only when nobody maps it: that is what "pinned" means here. Fresh tmpfs pages fault
slowly, so freed segments go to a small pool and the next large write reuses them, pre-faulted.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import pickle
import secrets
import threading
import time
from typing import Any

from ..wire import serialization
from ...errors import ObjectLostError, ObjectStoreFullError
from .segments import cluster_tag, decode_location, default_capacity, default_shm_dir, default_spill_dir, _fill, is_location, Location, LOCATION_MAGIC, _node_tag, ObjectInfo, _PLAIN, POOL_IDLE_S, POOL_MIN, Prepared, _segment_size, store_settings, StoreStatistics, _sweep, sweep_cluster, _unlink, _unpickle, _View

__all__ = ["ObjectStore", "HeadStores", "Location", "StoreStatistics", "ObjectInfo", "is_location",
           "decode_location", "load", "attach", "sweep_cluster", "cluster_tag", "store_settings"]

log = logging.getLogger("jpar.object_store")
_MADV_POPULATE_WRITE = 23                 # Linux >= 5.14; Python 3.11's mmap has no name for it
_warned_small_shm = False                # warn once per process about a small /dev/shm


# ---------------------------------------------------------------- the store
class ObjectStore:
    """One process's handle on one node's namespace: write, map, free, spill, account."""

    def __init__(self, key: bytes, node: str, *, threshold: int = 100 * 1024, capacity: int = 0,
                 shm_dir: str = "", spill_dir: str = "", cache_bytes: int = 0, bind_host: str = "127.0.0.1",
                 host: str = "", peer: str = ""):
        import socket

        self.key = key
        self.tag = cluster_tag(key)
        self.node = node
        self.host = host or socket.gethostname()
        self.threshold = int(threshold)
        self.dir = shm_dir or default_shm_dir()
        self.spill_root = os.path.join(spill_dir or default_spill_dir(), f"jpar-{self.tag}")
        self.capacity = int(capacity) or default_capacity(self.dir)
        self.pool_limit = self.capacity // 4
        self.prefix = f"jpar-{self.tag}-{_node_tag(node)}-"
        self.bind_host = bind_host
        self.peer = peer    # the head this process joined: the object server is advertised on the route to it
        self.cache_bytes = cache_bytes
        self._cache: dict[str, tuple] = {}          # name -> (mmap, inode, size): engines keep mappings warm
        self._cached = 0
        self._lock = threading.RLock()
        self._server = None
        self._wmaps: dict[int, mmap.mmap] = {}   # inode -> writable mapping of a segment this process wrote
        self._check_small_shm()

    def _prune_wmaps(self) -> None:
        """Unmap written segments that were unlinked (a kept mapping would keep their memory)."""
        live = set()
        for d in (self.dir, self.spill_root):
            try:
                with os.scandir(d) as it:
                    live.update(e.inode() for e in it if e.name.startswith(self.prefix))
            except FileNotFoundError:
                pass
        for ino in [i for i in self._wmaps if i not in live]:
            self._wmaps.pop(ino).close()

    def _check_small_shm(self) -> None:
        global _warned_small_shm
        try:
            st = os.statvfs(self.dir)
            fs = st.f_blocks * st.f_frsize
        except OSError:
            return
        if fs < (1 << 30) and not _warned_small_shm:
            _warned_small_shm = True
            log.warning("%s holds only %d MiB: the object store's capacity is %d MiB and larger objects spill to "
                        "%s. Give the container more shared memory (docker run --shm-size=2g) or set "
                        "JPAR_OBJECT_STORE_DIR.", self.dir, fs >> 20, self.capacity >> 20, self.spill_root)

    # ------------------------------------------------------------ writing
    def prepare(self, value: Any) -> Prepared:
        """Pickle with out-of-band buffers; small values come back inline (no segment)."""
        t = type(value)
        if t in _PLAIN:
            body = pickle.dumps(value, protocol=5)
            if len(body) < self.threshold:
                return Prepared(body, body, [], 0)
            return Prepared(None, body, [], _segment_size(len(body), []))
        if t is memoryview:
            value = _View(value)
        bufs: list = []
        threshold = self.threshold

        def oob(pb: pickle.PickleBuffer) -> bool:
            try:
                raw = pb.raw()
            except BufferError:      # not contiguous: pickled in band
                return True
            if raw.nbytes < threshold:
                return True
            bufs.append(raw)
            return False

        body = serialization.cloud_dumps(value, buffer_callback=oob)   # notebook definitions by value
        if not bufs and len(body) < threshold:
            return Prepared(body, body, [], 0)
        return Prepared(None, body, bufs, _segment_size(len(body), [b.nbytes for b in bufs]))

    def dumps(self, value: Any, object_id: int) -> bytes:
        """A value as an inline pickle or, when large, as the location of its new segment."""
        p = self.prepare(value)
        return p.inline if p.inline is not None else self.write(object_id, p)

    def write(self, object_id: int, p: Prepared) -> bytes:
        """Copy a prepared value into a segment once; returns the location record."""
        name = f"{self.prefix}o-{object_id:x}-{secrets.token_hex(3)}"
        endpoint = self.server_endpoint()
        if self._wmaps:
            self._prune_wmaps()
        fd, path = self._allocate(name, p.size)
        try:
            ino = os.fstat(fd).st_ino
            m = self._wmaps.pop(ino, None)        # this process wrote this (now recycled) segment before:
            if m is None or len(m) < p.size:      # its pages are still mapped here, no faults at all
                m = mmap.mmap(fd, p.size, flags=mmap.MAP_SHARED)
                _populate_for_write(m)
            try:
                _fill(m, p)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)    # the mapping kept below must not pin the segment
                if p.size >= POOL_MIN and sum(len(w) for w in self._wmaps.values()) + len(m) <= self.pool_limit:
                    self._wmaps[ino] = m
                else:
                    m.close()
            final = os.path.join(self.dir, name)
            if path == self._writing(final):
                os.rename(path, final)
                path = final
        except BaseException:
            _unlink(path)
            raise
        finally:
            os.close(fd)
        return LOCATION_MAGIC + pickle.dumps((self.tag, self.node, name, p.size, self.host, endpoint), protocol=5)

    def _writing(self, path: str) -> str:
        """Where a fresh segment is written before it takes its name: a "t" (temporary) entry, which
        the store's figures do not count, so a scan never lists an object that is still being
        written (it showed as 0 bytes while its file was made and filled)."""
        head, name = os.path.split(path)
        kind = len(self.prefix)
        return os.path.join(head, name[:kind] + "t" + name[kind + 1:])

    def _allocate(self, name: str, size: int) -> tuple[int, str]:
        """A file of ``size`` bytes at ``name`` with an exclusive lock: a pooled one if any fits."""
        path = os.path.join(self.dir, name)
        if size >= POOL_MIN:
            for pname, psize, _ in sorted(self._entries("p"), key=lambda e: e[1]):
                if not size <= psize <= size + max(size // 2, 16 << 20):
                    continue
                try:
                    os.rename(os.path.join(self.dir, pname), path)
                except FileNotFoundError:
                    continue                     # another writer took it
                fd = os.open(path, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.ftruncate(fd, size)
                    return fd, path
                except OSError:                  # a stale reader still maps it: leave it be
                    os.close(fd)
                    _unlink(path)
        if size > self.capacity:
            return self._allocate_on_disk(name, size)
        self._make_room(size)
        path = self._writing(path)          # renamed to ``name`` once written (see write)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        for attempt in (0, 1):
            try:
                os.posix_fallocate(fd, 0, size)   # ENOSPC here, never SIGBUS on a later write
                return fd, path
            except OSError as exc:
                os.ftruncate(fd, 0)
                if exc.errno not in (errno.ENOSPC, errno.ENOMEM) or attempt:
                    os.close(fd)
                    _unlink(path)
                    if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                        raise self._full_error(size, f"{self.dir} itself is out of space") from None
                    raise
                self._make_room(size, everything=True)
        raise AssertionError("unreachable")

    def _allocate_on_disk(self, name: str, size: int) -> tuple[int, str]:
        """An object larger than the whole store: written straight to the spill directory."""
        log.warning("an object of %d MiB is larger than the object store (%d MiB): it is kept on disk in %s. "
                    "Raise JPAR_OBJECT_STORE_BYTES (or the size of %s) to keep it in memory.",
                    size >> 20, self.capacity >> 20, self.spill_root, self.dir)
        os.makedirs(self.spill_root, mode=0o700, exist_ok=True)
        path = os.path.join(self.spill_root, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            os.close(fd)
            _unlink(path)
            raise self._full_error(size, f"the spill directory is out of space too ({exc})") from None
        return fd, path

    # ------------------------------------------------------------ capacity and spilling
    def _entries(self, kinds: str = "opdt"):
        """(name, size, mtime) of this namespace's segments of the given kinds."""
        out = []
        n = len(self.prefix)
        try:
            with os.scandir(self.dir) as it:
                for e in it:
                    if e.name.startswith(self.prefix) and e.name[n:n + 1] in kinds:
                        try:
                            st = e.stat()
                        except FileNotFoundError:
                            continue
                        out.append((e.name, st.st_size, st.st_mtime))
        except FileNotFoundError:
            pass
        return out

    def used_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _make_room(self, size: int, everything: bool = False) -> None:
        """Evict pooled segments, then spill least recently used unpinned objects, until ``size`` fits."""
        entries = self._entries()
        used = sum(e[1] for e in entries)
        if used + size <= self.capacity and not everything:
            return
        kind = len(self.prefix)
        for name, dsize, _ in [e for e in entries if e[0][kind] == "d"]:   # freed and no longer mapped
            if self._unlink_unmapped(name):
                used -= dsize
        for name, psize, _ in sorted((e for e in entries if e[0][kind] == "p"), key=lambda e: e[2]):
            _unlink(os.path.join(self.dir, name))
            used -= psize
            if used + size <= self.capacity and not everything:
                return
        for name, osize, _ in sorted((e for e in entries if e[0][kind] == "o"), key=lambda e: e[2]):
            if self._spill(name):
                used -= osize
                if used + size <= self.capacity and not everything:
                    return
        if used + size > self.capacity:
            raise self._full_error(size, f"{used >> 20} MiB are mapped by processes: get() results still alive, "
                                         "running tasks, engines' caches")

    def _unlink_unmapped(self, name: str) -> bool:
        path = os.path.join(self.dir, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _unlink(path)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    def _full_error(self, size: int, why: str) -> ObjectStoreFullError:
        return ObjectStoreFullError(
            f"The object store of node {self.node!r} cannot take an object of {size / 2**20:.1f} MiB: capacity "
            f"{self.capacity / 2**20:.1f} MiB, {self.used_bytes() / 2**20:.1f} MiB in use and nothing more can be "
            f"spilled ({why}). Drop references to results you no longer need (del the arrays and refs, "
            "or clear IPython's Out[] with %reset -f out), or raise JPAR_OBJECT_STORE_BYTES.")

    def _spill(self, name: str) -> bool:
        """Move one unpinned object to the spill directory; False when some process maps it."""
        path = os.path.join(self.dir, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            os.makedirs(self.spill_root, mode=0o700, exist_ok=True)
            tmp = os.path.join(self.spill_root, name + ".part")
            with open(tmp, "wb") as out:
                size = os.fstat(fd).st_size
                off = 0
                while off < size:
                    off += os.sendfile(out.fileno(), fd, off, min(size - off, 64 << 20))
            os.rename(tmp, os.path.join(self.spill_root, name))
            _unlink(path)
            kept = self._wmaps.pop(os.fstat(fd).st_ino, None)
            if kept is not None:
                kept.close()
            log.info("spilled %s (%d bytes) to %s", name, size, self.spill_root)
            return True
        finally:
            os.close(fd)

    def _restore(self, name: str) -> bool:
        """Bring a spilled object back into shared memory if it fits; False leaves it on disk."""
        spath = os.path.join(self.spill_root, name)
        try:
            size = os.stat(spath).st_size
            if size > self.capacity:
                return False
            self._make_room(size)
        except (FileNotFoundError, ObjectStoreFullError):
            return False
        tmp = os.path.join(self.dir, f"{self.prefix}t-{secrets.token_hex(4)}")
        try:
            with open(spath, "rb") as src, open(tmp, "xb") as dst:
                os.posix_fallocate(dst.fileno(), 0, size)
                off = 0
                while off < size:
                    off += os.sendfile(dst.fileno(), src.fileno(), off, min(size - off, 64 << 20))
            try:
                os.link(tmp, os.path.join(self.dir, name))
            except FileExistsError:
                pass                              # restored by someone else meanwhile
            _unlink(spath)
            return True
        except OSError:
            return False
        finally:
            _unlink(tmp)

    # ------------------------------------------------------------ reading
    def load(self, loc: Location) -> Any:
        """The value at ``loc``: mapped read-only with no copy on this node, pulled from another."""
        if loc.node != self.node or loc.tag != self.tag:
            from .transfer import fetch

            data = fetch(loc, self.key)
            return _unpickle(memoryview(data).toreadonly())
        return _unpickle(self.map(loc.name))

    def map(self, name: str) -> memoryview:
        """A read-only view of a segment; the mapping (and its shared lock) lives as long as the view."""
        if self.cache_bytes:
            with self._lock:
                hit = self._cache.get(name)
                if hit is not None:
                    try:
                        if os.stat(os.path.join(self.dir, name)).st_ino == hit[1]:
                            return hit[0]
                    except FileNotFoundError:
                        pass
                    self._forget(name)
        for _ in range(4):
            opened = self._open_locked(os.path.join(self.dir, name))
            if opened is None:
                spath = os.path.join(self.spill_root, name)
                if not os.path.exists(spath):
                    break
                if self._restore(name):
                    continue
                opened = self._open_locked(spath)
                if opened is None:
                    continue
            fd, st = opened
            try:
                m = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)                       # the lock lives on in mmap's own dup of fd
            try:
                os.utime(os.path.join(self.dir, name))   # LRU order for spilling
            except OSError:
                pass
            view = memoryview(m)
            if self.cache_bytes and st.st_size <= self.cache_bytes:
                self._remember(name, view, st.st_ino, st.st_size)
            return view
        raise ObjectLostError(f"Object segment {name} is gone: the object was freed (no ref held it) or its node's "
                              "store was cleaned up. Keep the ObjectRef alive while you use the value.")

    def _open_locked(self, path: str):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        st = os.fstat(fd)
        try:
            if os.stat(path).st_ino == st.st_ino:
                return fd, st
        except FileNotFoundError:
            pass
        os.close(fd)                               # freed, spilled or recycled while we opened it
        return None

    def _remember(self, name: str, view: memoryview, ino: int, size: int) -> None:
        with self._lock:
            self._cache[name] = (view, ino, size)
            self._cached += size
            while self._cached > self.cache_bytes and len(self._cache) > 1:
                self._forget(next(iter(self._cache)))

    def _forget(self, name: str) -> None:
        entry = self._cache.pop(name, None)
        if entry is not None:
            self._cached -= entry[2]

    def uncache(self, blobs) -> None:
        """Drop the cached mappings of these values (location records; others are skipped): the
        segment is unmapped once the caller's views of it are gone, so freeing it recycles it."""
        with self._lock:
            for blob in blobs:
                if is_location(blob):
                    self._forget(decode_location(blob).name)

    def trim_cache(self) -> None:
        """Drop cached mappings of segments that were freed, so their memory can be reused."""
        if not self._cache:
            return
        with self._lock:
            for name, (_, ino, _) in list(self._cache.items()):
                try:
                    if os.stat(os.path.join(self.dir, name)).st_ino == ino:
                        continue
                except FileNotFoundError:
                    pass
                self._forget(name)

    # ------------------------------------------------------------ freeing
    def free(self, name: str) -> None:
        """Free one object: recycle its segment if nobody maps it, else park it as dead until they stop."""
        path = os.path.join(self.dir, name)
        with self._lock:
            self._forget(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        if fd is not None:
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self._recycle(path, os.fstat(fd).st_size)
                except BlockingIOError:
                    kind = len(self.prefix)
                    os.rename(path, os.path.join(self.dir, name[:kind] + "d" + name[kind + 1:]))
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        _unlink(os.path.join(self.spill_root, name))

    def _recycle(self, path: str, size: int) -> None:
        """Keep a freed, unmapped segment in the pool (its pages stay faulted in) or unlink it."""
        if size >= POOL_MIN:
            pooled = self._entries("p")
            total = sum(e[1] for e in pooled)
            for pname, psize, _ in sorted(pooled, key=lambda e: e[2]):
                if total + size <= self.pool_limit:
                    break
                _unlink(os.path.join(self.dir, pname))
                total -= psize
            if total + size <= self.pool_limit:
                os.rename(path, os.path.join(self.dir, f"{self.prefix}p-{secrets.token_hex(4)}"))
                return
        _unlink(path)

    def sweep(self) -> None:
        """Recycle dead segments nobody maps any more; unlink pooled ones idle too long (head, periodically)."""
        now = time.time()
        kind = len(self.prefix)
        for name, size, mtime in self._entries("dp"):
            path = os.path.join(self.dir, name)
            if name[kind] == "p":
                if now - mtime > POOL_IDLE_S:
                    _unlink(path)
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._recycle(path, size)
            except (BlockingIOError, FileNotFoundError):
                pass
            finally:
                os.close(fd)

    # ------------------------------------------------------------ accounting
    def statistics(self, refcounts: dict | None = None) -> StoreStatistics:
        """What this node's store holds now; ``refcounts`` (object id -> refs: anything with ``get``)
        comes from the head."""
        kind = len(self.prefix)
        used = pooled = held = spilled = 0
        objects = []
        for name, size, _ in self._entries():
            k = name[kind]
            if k == "p":
                pooled += size
            elif k == "d":
                held += size
            elif k == "o":
                used += size
                objects.append(self._info(name, size, refcounts, False))
        try:
            with os.scandir(self.spill_root) as it:
                for e in it:
                    if e.name.startswith(self.prefix) and not e.name.endswith(".part"):
                        size = e.stat().st_size
                        spilled += size
                        objects.append(self._info(e.name, size, refcounts, True))
        except FileNotFoundError:
            pass
        return StoreStatistics(self.node, used, self.capacity, spilled, pooled, held, len(objects), tuple(objects))

    def _info(self, name: str, size: int, refcounts, spilled: bool) -> ObjectInfo:
        oid = int(name[len(self.prefix) + 2:].split("-")[0], 16)
        pinned = False
        if not spilled:
            try:
                fd = os.open(os.path.join(self.dir, name), os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pinned = True
                finally:
                    os.close(fd)
            except FileNotFoundError:
                pass
        refs = refcounts.get(oid, 0) if refcounts is not None else -1
        return ObjectInfo(oid, size, oid >> 40, refs, pinned, spilled)

    # ------------------------------------------------------------ other nodes, life cycle
    def server_endpoint(self) -> str:
        """Where other nodes pull this process's objects from (the server starts on first use)."""
        if self._server is None:
            with self._lock:
                if self._server is None:
                    from .transfer import ObjectServer

                    self._server = ObjectServer(self, self.bind_host, self.peer)
        return self._server.endpoint

    def sweep_node(self) -> None:
        """Remove every segment of this node's namespace (the cluster is gone)."""
        _sweep(self.dir, self.prefix)
        _sweep(self.spill_root, self.prefix)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            self._cache.clear()
            self._cached = 0
        for m in self._wmaps.values():
            m.close()
        self._wmaps.clear()
        if _registry.get(self.tag) is self:
            del _registry[self.tag]


# ---------------------------------------------------------------- per-process registry
_registry: dict[str, ObjectStore] = {}


def attach(key: bytes, node: str | None, settings: dict, cache_bytes: int = 0) -> ObjectStore:
    """This process's store for a cluster (made on first use, shared by its driver and engine);
    ``node`` None means whatever node this process already joined, else this host's name."""
    import socket

    tag = cluster_tag(key)
    store = _registry.get(tag)
    if store is None or (node is not None and store.node != node):
        store = ObjectStore(key, node or socket.gethostname(), threshold=settings.get("threshold", 100 * 1024),
                            capacity=settings.get("capacity", 0), shm_dir=settings.get("shm_dir", ""),
                            spill_dir=settings.get("spill_dir", ""), cache_bytes=cache_bytes,
                            bind_host=settings.get("bind_host", "127.0.0.1"), peer=settings.get("peer", ""))
        _registry[tag] = store
    elif cache_bytes > store.cache_bytes:
        store.cache_bytes = cache_bytes
    return store


def load(blob: bytes) -> Any:
    """The value behind a location record (serialization.load_result calls this)."""
    loc = decode_location(blob)
    store = _registry.get(loc.tag)
    if store is None:
        raise ObjectLostError(f"This process is not connected to the cluster that stores object segment {loc.name}. "
                              "Call jpar.init(address=...) for that cluster first.")
    return store.load(loc)


# ---------------------------------------------------------------- the head's view
class HeadStores:
    """The head's side: which segments hold which object ids, freeing them, sweeping, statistics."""

    def __init__(self, key: bytes, settings: dict):
        import socket

        self.key = key
        self.settings = settings
        self.host = socket.gethostname()
        self.stores: dict[str, ObjectStore] = {}       # node -> store (nodes on this host)
        self.locations: dict[int, list] = {}           # object id -> [Location, ...]
        self.makers: dict[int, str] = {}               # object id -> what made it ("task f", "a put()")
        self.next_sweep = 0.0

    def note(self, records, live: dict) -> list:
        """Remember segments named in (object_id, status, blob) records; free those already dead.
        Returns the ids given a segment (none for values that travel inline: most of them)."""
        noted = []
        for oid, _, blob in records:
            if blob[:4] == LOCATION_MAGIC:
                self.locations.setdefault(oid, []).append(decode_location(blob))
                if oid in live:
                    noted.append(oid)
                else:
                    self.free((oid,))
        return noted

    def made_by(self, object_ids, maker: str) -> None:
        """What made these stored objects ("the result of task f", "a put() of ..."), for error messages."""
        for oid in object_ids:
            if oid in self.locations:
                self.makers[oid] = maker

    def forget_node(self, node: str) -> list:
        """[(object id, what made it)] of the objects whose every stored copy is on ``node``, forgotten
        here: that node is out of reach (its segments, if on this host, go with the cluster's sweep)."""
        lost = [oid for oid, locs in self.locations.items() if locs and all(loc.node == node for loc in locs)]
        for oid in lost:
            del self.locations[oid]
        return [(oid, self.makers.pop(oid, "")) for oid in lost]

    def free(self, object_ids) -> None:
        for oid in object_ids:
            self.makers.pop(oid, None)
            for loc in self.locations.pop(oid, ()):
                store = self._store(loc)
                if store is not None:
                    store.free(loc.name)

    def _store(self, loc: Location) -> ObjectStore | None:
        if loc.host != self.host:
            return None                                 # another host's namespace: swept by its engines
        store = self.stores.get(loc.node)
        if store is None:
            s = self.settings
            store = self.stores[loc.node] = ObjectStore(
                self.key, loc.node, threshold=s.get("threshold", 0), capacity=s.get("capacity", 0),
                shm_dir=s.get("shm_dir", ""), spill_dir=s.get("spill_dir", ""))
        return store

    def tick(self, now: float) -> None:
        if now >= self.next_sweep and self.stores:
            self.next_sweep = now + 0.5
            for store in self.stores.values():
                store.sweep()

    def statistics(self, refcounts: dict, nodes=()) -> dict:
        """node -> StoreStatistics for every node on this host that holds (or may hold) objects."""
        s = self.settings
        for node in nodes:
            if node not in self.stores:
                self.stores[node] = ObjectStore(self.key, node, threshold=s.get("threshold", 0),
                                                capacity=s.get("capacity", 0), shm_dir=s.get("shm_dir", ""),
                                                spill_dir=s.get("spill_dir", ""))
        return {node: store.statistics(refcounts) for node, store in self.stores.items()}

    def close(self) -> None:
        sweep_cluster(self.key, self.settings.get("shm_dir", ""), self.settings.get("spill_dir", ""))


def _populate_for_write(m: mmap.mmap) -> None:
    """Fault a fresh segment's pages in writable, in one call: much faster than the page faults a
    copy into fresh tmpfs pages takes one by one (measured 2-3x for 1 GB here). Older kernels say
    EINVAL: then the copy faults them as before."""
    try:
        m.madvise(_MADV_POPULATE_WRITE)
    except (OSError, ValueError, AttributeError):
        pass

