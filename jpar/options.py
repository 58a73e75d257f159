"""Task options: one keyword-only dataclass, validated in one place, Ray's names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["TaskOptions", "ActorOptions", "IGNORED_RAY_OPTIONS", "method_options"]

# Ray options that change nothing jpar computes: accepted (their values checked) and dropped, for
# tasks, actor classes and actor methods alike, so code written for Ray runs unchanged. Every other
# unknown option is an error. name -> (where Ray takes it, check of the value, why jpar can ignore it).
IGNORED_RAY_OPTIONS: dict[str, tuple[frozenset, Any, str]] = {
    "enable_task_events": (frozenset({"task", "actor", "method"}), lambda v: isinstance(v, bool),
                           "Ray's switch for recording calls in its state API; jpar's event stream is built only "
                           "while a dashboard watches, so there is nothing to switch off"),
    "max_calls": (frozenset({"task"}), lambda v: isinstance(v, int) and v >= 0,
                  "Ray restarts a worker after that many calls to reclaim leaked memory; jpar's engines are "
                  "long-lived and results do not depend on it"),
    "_metadata": (frozenset({"task", "actor"}), lambda v: v is None or isinstance(v, dict),
                  "annotations for Ray's own libraries"),
}


def _drop_ignored(changes: dict, where: str) -> dict:
    """``changes`` without the harmless Ray options valid ``where`` ("task", "actor", "method");
    a bad value for one of them is a ConfigError."""
    if not changes.keys() & IGNORED_RAY_OPTIONS.keys():
        return changes
    kept = {}
    for k, v in changes.items():
        entry = IGNORED_RAY_OPTIONS.get(k)
        if entry is None or where not in entry[0]:
            kept[k] = v
        elif not entry[1](v):
            raise ConfigError(f"Invalid value {v!r} for option {k!r} (accepted for Ray compatibility and ignored: "
                              f"{entry[2]}).")
    return kept


def _known_for(cls, where: str) -> list:
    return sorted({f.name for f in dataclasses.fields(cls)} |
                  {k for k, e in IGNORED_RAY_OPTIONS.items() if where in e[0]})


def method_options(num_returns: int | None = None, **options) -> int | None:
    """Validate actor-method options (``@jpar.method(...)``, ``handle.m.options(...)``): returns
    ``num_returns``; harmless Ray options are accepted and dropped, any other is a ConfigError."""
    unknown = sorted(_drop_ignored(options, "method"))
    if unknown:
        known = ["num_returns"] + [k for k, e in sorted(IGNORED_RAY_OPTIONS.items()) if "method" in e[0]]
        raise ConfigError(f"Unknown option(s) {unknown} for an actor method. Known: {known}.")
    if num_returns is not None and (not isinstance(num_returns, int) or isinstance(num_returns, bool)
                                    or num_returns < 1):
        raise ConfigError(f"num_returns must be an integer >= 1, got {num_returns!r}.")
    return num_returns


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """What ``@jpar.remote(...)`` and ``.options(...)`` accept for functions."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict | None = None
    num_returns: int = 1
    max_retries: int | None = None          # None: the config default (3) for engine crashes
    retry_exceptions: Any = False           # False, True, or a list/tuple of exception types
    name: str | None = None                 # shown in the dashboard and output prefixes
    placement: int = -1                     # jpar extension: run only on this engine id (-1: anywhere)

    def __post_init__(self):
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError("num_cpus and num_gpus must be >= 0.")
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ConfigError("num_gpus above 1 must be a whole number (fractions share one GPU).")
        if not isinstance(self.num_returns, int) or self.num_returns < 1:
            raise ConfigError(f"num_returns must be an integer >= 1, got {self.num_returns!r}.")
        if self.max_retries is not None and (not isinstance(self.max_retries, int) or self.max_retries < -1):
            raise ConfigError("max_retries must be an integer >= 0 (or -1 for unlimited).")
        for k, v in (self.resources or {}).items():
            if k in ("CPU", "GPU"):
                raise ConfigError(f"Use num_cpus/num_gpus instead of resources={{{k!r}: ...}}.")
            if not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"resources[{k!r}] must be a number >= 0, got {v!r}.")
        r = self.retry_exceptions
        if not isinstance(r, bool) and not (
            isinstance(r, (list, tuple)) and all(isinstance(t, type) and issubclass(t, BaseException) for t in r)
        ):
            raise ConfigError("retry_exceptions must be True, False, or a list of exception classes.")

    @classmethod
    def build(cls, base: "TaskOptions | None" = None, **changes) -> "TaskOptions":
        """Validated options; unknown names get a clear error listing the known ones (harmless Ray
        options, :data:`IGNORED_RAY_OPTIONS`, are accepted and dropped)."""
        changes = _drop_ignored(changes, "task")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"Unknown option(s) {unknown} for a remote function. Known: {_known_for(cls, 'task')}.")
        return dataclasses.replace(base, **changes) if base is not None else cls(**changes)

    def resource_tuple(self) -> tuple:
        res = [("CPU", float(self.num_cpus))]
        if self.num_gpus:
            res.append(("GPU", float(self.num_gpus)))
        for k, v in sorted((self.resources or {}).items()):
            res.append((k, float(v)))
        return tuple(res)


@dataclass(frozen=True, kw_only=True)
class ActorOptions:
    """What ``@jpar.remote(...)`` and ``.options(...)`` accept for classes (Ray's actor options)."""

    num_cpus: float = 0.0                   # reserved for the actor's whole life; 0 (Ray's default) blocks no task
    num_gpus: float = 0.0
    resources: dict | None = None
    name: str | None = None                 # registry name: jpar.get_actor(name) finds it
    namespace: str | None = None            # accepted for Ray compatibility; one namespace per cluster
    get_if_exists: bool = False             # with name=: return the existing actor instead of failing
    lifetime: str | None = None             # None: ends with its owner (named: lives until killed); "detached"
    max_restarts: int = 0                   # -1: restart forever
    max_task_retries: int = 0               # retries of a call whose actor died under it (-1: forever)
    max_concurrency: int | None = None      # None: 1 (threaded actors), 1000 (async actors)
    max_pending_calls: int = -1             # accepted for Ray compatibility

    def __post_init__(self):
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError("num_cpus and num_gpus must be >= 0.")
        for k, v in (self.resources or {}).items():
            if k in ("CPU", "GPU"):
                raise ConfigError(f"Use num_cpus/num_gpus instead of resources={{{k!r}: ...}}.")
            if not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"resources[{k!r}] must be a number >= 0, got {v!r}.")
        for knob in ("max_restarts", "max_task_retries"):
            v = getattr(self, knob)
            if not isinstance(v, int) or v < -1:
                raise ConfigError(f"{knob} must be an integer >= 0 (or -1 for unlimited), got {v!r}.")
        if self.max_concurrency is not None and (not isinstance(self.max_concurrency, int) or self.max_concurrency < 1):
            raise ConfigError(f"max_concurrency must be an integer >= 1, got {self.max_concurrency!r}.")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ConfigError(f"An actor's name must be a non-empty string, got {self.name!r}.")
        if self.get_if_exists and not self.name:
            raise ConfigError("get_if_exists=True needs a name=; pass .options(name=..., get_if_exists=True).")
        if self.lifetime not in (None, "detached", "non_detached"):
            raise ConfigError(f"lifetime must be None, 'detached' or 'non_detached', got {self.lifetime!r}.")

    @classmethod
    def build(cls, base: "ActorOptions | None" = None, **changes) -> "ActorOptions":
        changes = _drop_ignored(changes, "actor")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"Unknown option(s) {unknown} for an actor class. Known: {_known_for(cls, 'actor')}.")
        return dataclasses.replace(base, **changes) if base is not None else cls(**changes)

    def resource_tuple(self) -> tuple:
        res = []
        if self.num_cpus:
            res.append(("CPU", float(self.num_cpus)))
        if self.num_gpus:
            res.append(("GPU", float(self.num_gpus)))
        for k, v in sorted((self.resources or {}).items()):
            if v:
                res.append((k, float(v)))
        return tuple(res)

    @property
    def detached(self) -> bool:
        """Named actors outlive their owner's handles (Ray's named actors across drivers)."""
        return self.lifetime == "detached" or (self.name is not None and self.lifetime != "non_detached")
