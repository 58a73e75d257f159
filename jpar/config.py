"""Every tunable of jpar in one place: its default, its ``JPAR_*`` variable and its doc.

This is the only module that reads ``os.environ`` for settings. Each field of
:class:`Config` names its environment variable in its metadata; ``Config.from_env()``
builds a config from the environment, and ``docs/`` renders the table from
:data:`SETTINGS`, so the docs cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

__all__ = ["Config", "SETTINGS", "runtime_dir", "key_dir"]


def _setting(default, env: str, doc: str):
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Config:
    """Cluster and client settings; frozen so one value is shared safely across threads."""

    backend: str = _setting("native", "JPAR_BACKEND", "Which engine init() runs the work on when it names none: native (jpar's own runtime), dask (a Dask distributed cluster) or ray (a Ray cluster).")
    num_engines: int = _setting(0, "JPAR_NUM_ENGINES", "Engines started by init() on this host; 0 means one per core.")
    num_cpus: float = _setting(0.0, "JPAR_NUM_CPUS", "CPUs a host advertises, a fixed count; with no num_engines it is also how many engines start (rounded up). 0 means one CPU per engine, so the host's CPUs grow and shrink with its engines.")
    auto_init: bool = _setting(True, "JPAR_AUTO_INIT", "Start a local cluster (as jpar.init() would) on the first put/get/wait/cancel/kill/get_actor or .remote() call when none is running, as Ray does; 0 makes those calls raise NotInitializedError instead.")
    num_gpus: float = _setting(-1.0, "JPAR_NUM_GPUS", "GPUs a host advertises; -1 means count CUDA_VISIBLE_DEVICES.")
    bind_host: str = _setting("127.0.0.1", "JPAR_BIND_HOST", "Interface TCP sockets bind to. With the default (loopback), a client of a head on another host (driver, engine, sidebar) binds the local address that routes to that head instead; set it to choose another. 0.0.0.0 (or ::) binds every interface, and the addresses given to other processes then name this host's address that routes to them (else its main IPv4 address), never 0.0.0.0.")
    head_port: int = _setting(0, "JPAR_HEAD_PORT", "TCP port of the head; 0 picks a free port.")
    heartbeat_s: float = _setting(1.0, "JPAR_HEARTBEAT_S", "Seconds between heartbeats among head, engines and drivers.")
    dead_after_s: float = _setting(10.0, "JPAR_DEAD_AFTER_S", "A peer silent this long is declared dead.")
    rejoin_s: float = _setting(300.0, "JPAR_REJOIN_S", "How long an engine of another host (started by `jpar start --address`, its head's address off loopback) keeps trying to join its head again after losing it (a cut link, a head restarting): it restarts as a new engine in the same process and joins once the head answers; the head had declared it dead and moved its work, so nothing runs twice. 0 makes it exit at once.")
    start_timeout_s: float = _setting(30.0, "JPAR_START_TIMEOUT_S", "How long init() waits for the head and engines.")
    prefetch: int = _setting(64, "JPAR_PREFETCH", "Most tasks queued on an engine beyond the running one (hides dispatch latency).")
    spin_s: float = _setting(0.0, "JPAR_SPIN_S", "Seconds a head or engine keeps polling after a message before it sleeps; 0 on small machines (on 2 cores spinning slowed round trips 10-40%), try 0.0002 where cores outnumber busy processes.")
    chain: bool = _setting(True, "JPAR_CHAIN", "Send a task whose last missing argument is being made on an engine to that engine at once, behind its producer, so it starts there without a round trip to the head (a chain of dependent tasks then costs one engine-side step per link); 0 keeps such tasks waiting at the head until the argument is ready.")
    prefetch_s: float = _setting(0.002, "JPAR_PREFETCH_S", "Seconds of work an engine keeps queued: short tasks queue deep, long ones one at a time.")
    actor_spares: int = _setting(1, "JPAR_ACTOR_SPARES", "Actor processes the head keeps started and idle once the cluster has started its first actor, each taken by the next actor (or jpar.multiprocessing.Process) that starts, so that start is a message, not an interpreter start; 0 starts every actor process on demand.")
    actor_fork: bool = _setting(True, "JPAR_ACTOR_FORK", "Start actor processes (and spares) as forks of a template process that has imported what they need, started with the cluster's first actor (a few ms each instead of an interpreter start); 0 starts each as a new interpreter. Linux only: elsewhere they always start as interpreters.")
    max_retries: int = _setting(3, "JPAR_MAX_RETRIES", "Default retries of a task whose engine died under it.")
    metrics_interval_s: float = _setting(1.0, "JPAR_METRICS_INTERVAL_S", "Seconds between engine CPU/memory samples while idle; while a task runs, at most 0.25 (four a second).")
    log_level: str = _setting("WARNING", "JPAR_LOG_LEVEL", "Log level of head and engine processes.")
    runtime_dir: str = _setting("", "JPAR_RUNTIME_DIR", "Where connection files and sockets live; empty means a per-user default.")
    cluster_key: str = _setting("", "JPAR_CLUSTER_KEY", "Hex key of a remote cluster whose connection file is not on this machine.")
    key_dir: str = _setting("", "JPAR_KEY_DIR", "Directory of the CurveZMQ keys that secure every connection off loopback (`jpar keys` makes them; mode 0700, files 0600, refused if wider); empty means ~/.jpar/keys. Every public key (*.key) in it is admitted.")
    insecure: bool = _setting(False, "JPAR_INSECURE", "Let sockets bound or connected off loopback run in plaintext, without CURVE encryption and client keys (messages stay HMAC-signed). Only for a network you trust; a head started so logs a warning.")
    ssh_options: str = _setting("", "JPAR_SSH_OPTIONS", "Extra options for the OpenSSH client that `jpar up --ssh` and init(ssh=[...]) run (split as a shell would), e.g. \"-i ~/.ssh/cluster -p 2222\" or \"-F CONFIG\"; ssh always runs with BatchMode=yes (it never prompts) and otherwise follows your ~/.ssh/config.")
    ssh_python: str = _setting("", "JPAR_SSH_PYTHON", "The Python that runs the engines on hosts reached over ssh (it must import jpar); empty means the same path as this process's Python.")
    ssh_remote_dir: str = _setting("~/.jpar/ssh", "JPAR_SSH_REMOTE_DIR", "Where on hosts reached over ssh each cluster keeps its key files (a 0700 directory per cluster, named by its id, removed by `jpar down`); ~ is that host's home.")
    ssh_connect_timeout_s: float = _setting(15.0, "JPAR_SSH_CONNECT_TIMEOUT_S", "Seconds ssh waits to connect to a host before it is reported unreachable.")
    object_store_threshold: int = _setting(100 * 1024, "JPAR_OBJECT_STORE_THRESHOLD", "Values whose pickle is at least this many bytes go to the host's shared-memory object store; smaller ones travel inline in messages.")
    object_store_bytes: int = _setting(0, "JPAR_OBJECT_STORE_BYTES", "Capacity of each node's object store in bytes; 0 means 30% of RAM, bounded by the size of /dev/shm.")
    object_store_dir: str = _setting("", "JPAR_OBJECT_STORE_DIR", "Directory of the shared-memory segments; empty means /dev/shm (or the temp dir when there is none).")
    object_spill_dir: str = _setting("", "JPAR_OBJECT_SPILL_DIR", "Where objects spill when the store is full; empty means a per-user directory under the temp dir.")

    @classmethod
    def from_env(cls, **overrides) -> "Config":
        """Defaults, then ``JPAR_*`` variables, then explicit keyword overrides (None is ignored)."""
        values = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(f.metadata["env"])
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


def _parse(f: dataclasses.Field, raw: str):
    kind = type(f.default)
    if kind is bool:
        flag = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                "off": False}.get(raw.strip().lower())
        if flag is not None:
            return flag
        from .errors import ConfigError

        raise ConfigError(f"{f.metadata['env']}={raw!r} is not a valid bool. Set it to 1 or 0 (true/false), "
                          f"or unset it to use the default {f.default!r}.")
    try:
        return kind(raw)
    except ValueError:
        from .errors import ConfigError

        raise ConfigError(
            f"{f.metadata['env']}={raw!r} is not a valid {kind.__name__}. "
            f"Set it to a {kind.__name__} or unset it to use the default {f.default!r}."
        ) from None


SETTINGS = tuple(
    (f.name, f.metadata["env"], f.default, f.metadata["doc"]) for f in dataclasses.fields(Config)
)


def runtime_dir(config: Config) -> str:
    """The directory holding connection files (mode 0700), created on first use."""
    path = config.runtime_dir or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".local", "share"),
        "jpar",
    )
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def key_dir(config: Config) -> str:
    """The directory of this host's CURVE keys (not created here: see jpar.runtime.wire.keys)."""
    return os.path.abspath(os.path.expanduser(config.key_dir or os.path.join("~", ".jpar", "keys")))


def environ_snapshot() -> dict[str, str]:
    """A copy of the environment for child processes (engines inherit the driver's)."""
    return dict(os.environ)


def visible_gpus() -> list[str]:
    """GPU ids named by CUDA_VISIBLE_DEVICES (empty when unset: no GPUs assumed)."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [g for g in (s.strip() for s in raw.split(",")) if g and g != "-1"]
