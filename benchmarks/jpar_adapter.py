"""jpar's adapter for the shared peer harness (../shared/bench/adapters.py's surface).

The workloads only talk to an adapter: submit/result/gather/map/put/free and the actor
calls. This one maps them onto jpar's public API, the way ``RayAdapter`` maps them onto
Ray's, so the two rows of every table are measured the same way:

    submit(fn, *args)   jpar.remote(fn).remote(*args)   (one RemoteFunction per fn, cached)
    result / gather     jpar.get(ref) / jpar.get([refs])
    map(fn, seq)        jpar.multiprocessing.Pool(2).map when jpar has it (the seed's drop-in,
                        created before timing like Ray's Pool), otherwise tasks over
                        4 * workers chunks
    put / free          jpar.put(obj) / drop the ref (jpar frees what no ref holds)
    actors              jpar.remote(cls).remote(), handle.method.remote(), jpar.kill(handle)

Capabilities are probed, not assumed: jpar is being written while this harness runs,
so a feature that is not there yet ('put', 'actors', the Pool) turns its rows into
"n/a" instead of failures. Real errors from features that exist still fail loudly.

Imported only after the shared harness is on ``sys.path`` (``run.py`` does that).
"""
from __future__ import annotations

import math
import os
import subprocess

from adapters import NWORKERS, Adapter  # the shared harness's base class

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def map_chunk(fn, chunk):
    """Engine side of the task-based map: one task runs fn over a slice of the input."""
    return [fn(x) for x in chunk]


class JparAdapter(Adapter):
    name = "jpar"
    libs = ("jpar",)
    description = ("jpar.init(num_engines=2); tasks = jpar.remote(fn).remote(), result/gather = "
                   "jpar.get; map = jpar.multiprocessing.Pool(2).map when present (else tasks over "
                   "4*workers chunks); alt maps: chunked tasks, and (pi only) one task per item; "
                   "put = jpar.put; actors = jpar.remote(cls).remote(); ObjectRefs as args form "
                   "the DAG.")
    ALL_CAPS = frozenset({"submit", "map", "put", "actors", "future_args"})

    def __init__(self, nworkers=NWORKERS):
        super().__init__(nworkers)
        self._caps = None
        self._missing = {}  # capability -> why it is missing
        self._rf = {}
        self.pool = None
        self.jpar = None

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        import jpar
        self.jpar = jpar
        jpar.init(num_engines=self.n)

    def shutdown(self):
        try:
            if self.pool is not None:
                self._close_pool()
        finally:
            self.jpar.shutdown()

    def prepare(self, workload):
        if workload in ("map", "pi", "pi_worker", "pi_paired") and self._pool_class() is not None:
            self.pool = self._pool_class()(processes=self.n)

    def unprepare(self, workload):
        if self.pool is not None:
            self._close_pool()

    def _close_pool(self):
        pool, self.pool = self.pool, None
        pool.terminate()
        join = getattr(pool, "join", None)
        if join is not None:
            join()

    # ------------------------------------------------------------------ capabilities
    @property
    def caps(self):
        """Probed on first use (after start(), never inside a timed section)."""
        if self._caps is None:
            self._caps = self._probe()
        return self._caps

    def _probe(self):
        caps = set(self.ALL_CAPS)
        j = self.jpar
        if not callable(getattr(j, "put", None)):
            caps.discard("put")
            self._missing["put"] = "jpar.put is missing"
        if not callable(getattr(j, "kill", None)):
            caps.discard("actors")
            self._missing["actors"] = "jpar.kill is missing"
        else:
            import tasks
            try:
                cls = j.remote(tasks.Counter)
                if not callable(getattr(cls, "remote", None)):
                    raise TypeError("jpar.remote(cls) has no .remote()")
            except (TypeError, NotImplementedError, AttributeError) as e:
                caps.discard("actors")
                self._missing["actors"] = f"jpar.remote(<class>) failed: {e!r}"[:200]
        if self._pool_class() is None:
            self._missing["pool"] = "jpar.multiprocessing.Pool is missing: map uses chunked tasks"
        return frozenset(caps)

    @staticmethod
    def _pool_class():
        try:
            from jpar.multiprocessing import Pool
        except ImportError:
            return None
        return Pool

    # ------------------------------------------------------------------ tasks
    def _remote(self, fn):
        r = self._rf.get(fn)
        if r is None:
            r = self._rf[fn] = self.jpar.remote(fn)
        return r

    def submit(self, fn, *args):
        return self._remote(fn).remote(*args)

    def result(self, h):
        return self.jpar.get(h)

    def gather(self, hs):
        return self.jpar.get(list(hs))

    def map(self, fn, seq):
        if self.pool is not None:
            return self.pool.map(fn, seq)
        return self._chunked_tasks_map(fn, seq)

    def _chunked_tasks_map(self, fn, seq):
        seq = list(seq)
        cs = max(1, math.ceil(len(seq) / (4 * self.n)))
        rf = self._remote(map_chunk)
        parts = self.jpar.get([rf.remote(fn, seq[i:i + cs]) for i in range(0, len(seq), cs)])
        return [y for part in parts for y in part]

    def alt_maps(self, workload):
        alts = {}
        if self.pool is not None:  # otherwise the chunked map already is the default
            alts["tasks, chunks of n/(4w)"] = self._chunked_tasks_map
        if workload == "pi":  # 100k one-item tasks is the throughput workload's job
            def tasks_map(fn, seq):
                rf = self._remote(fn)
                return self.jpar.get([rf.remote(x) for x in seq])
            alts["tasks (1 per item)"] = tasks_map
        return alts

    # ------------------------------------------------------------------ objects
    def put(self, obj):
        return self.jpar.put(obj)

    def free(self, ref):
        del ref  # jpar frees an object once no ObjectRef to it is alive

    # ------------------------------------------------------------------ actors
    def actor_new(self, cls):
        a = self.jpar.remote(cls).remote()
        self.jpar.get(a.get.remote())  # wait until constructed
        return a

    def actor_call(self, actor, method, *args):
        return getattr(actor, method).remote(*args)

    def actor_free(self, actor):
        self.jpar.kill(actor)

    # ------------------------------------------------------------------ info
    def versions(self):
        caps = self.caps  # probes, which fills self._missing
        out = {"jpar": getattr(self.jpar, "__version__", None),
               "default_map": "jpar.multiprocessing.Pool.map" if self._pool_class()
               else "chunked tasks",
               "caps": sorted(caps), "missing": dict(self._missing)}
        try:
            out["git"] = subprocess.run(
                ["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                text=True, timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            out["git"] = None
        return out


class JparDaskAdapter(JparAdapter):
    """jpar's API on Dask: the same rows as the raw ``dask`` adapter, through jpar's dask backend,
    on a LocalCluster made exactly as that adapter makes its own (so the ratio is jpar's overhead)."""

    name = "jpar_dask"
    libs = ("jpar", "distributed")
    description = ("jpar.init(backend='dask', address=Client(LocalCluster(n_workers=2, threads_per_worker=1, "
                   "processes=True, host='127.0.0.1'))); otherwise as the jpar row: tasks, get, the Pool "
                   "drop-in for map, put, actors.")

    def start(self):
        import jpar
        from distributed import Client, LocalCluster

        self.jpar = jpar
        self.cluster = LocalCluster(n_workers=self.n, threads_per_worker=1, processes=True,
                                    host="127.0.0.1", dashboard_address=None)
        self.client = Client(self.cluster)
        jpar.init(backend="dask", address=self.client)

    def shutdown(self):
        try:
            super().shutdown()
        finally:
            self.client.close()
            self.cluster.close()

    def versions(self):
        import dask
        import distributed

        return {**super().versions(), "dask": dask.__version__, "distributed": distributed.__version__}


class JparRayAdapter(JparAdapter):
    """jpar's API on Ray: the same rows as the raw ``ray`` adapter, through jpar's ray backend, on a
    local Ray started exactly as that adapter starts its own."""

    name = "jpar_ray"
    libs = ("jpar", "ray")
    description = ("ray.init(address='local', num_cpus=2, include_dashboard=False) then "
                   "jpar.init(backend='ray'); otherwise as the jpar row.")

    def start(self):
        import tempfile

        import jpar
        import ray

        self.jpar = jpar
        temp_dir = os.environ.get("PEERBENCH_RAY_TMP", os.path.join(tempfile.gettempdir(), "peerbench-ray"))
        os.makedirs(temp_dir, exist_ok=True)
        ray.init(address="local", num_cpus=self.n, include_dashboard=False, _temp_dir=temp_dir,
                 logging_level="ERROR", log_to_driver=False)
        jpar.init(backend="ray")

    def shutdown(self):
        import ray

        try:
            super().shutdown()
        finally:
            ray.shutdown()

    def versions(self):
        import ray

        return {**super().versions(), "ray": ray.__version__}
