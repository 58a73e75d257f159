"""Chaos rounds: SIGKILL engines, actor processes and detached heads mid-workload, and count the outcomes.

Each round submits a mixed workload (tasks with ``max_retries``, ``put`` objects and tasks reading
them, calls to two actors with ``max_restarts``) and, while it runs, a killer thread SIGKILLs a few
processes chosen at random among the *children of this run's head* (found by pid with psutil, never
by name across the machine). Every ``get`` has a timeout. Each result is then judged against what the
API promises::

    correct        the value the function computes
    documented     an error the API promises for what was done to it: EngineCrashedError once the
                   round killed more engines than the task had retries, ActorDiedError for a call to
                   an actor without max_task_retries that was killed in the round, HeadDiedError
                   after the head was killed (detached-head rounds)
    wrong          a value that is not the right one (must be 0)
    undocumented   any other error (must be 0)
    hangs          a get that ran out of its timeout (must be 0)

Every ``--head-every``-th round runs on a detached head (``jpar start --head``) that is itself
SIGKILLed mid-round. After each cluster ends, the processes it had and its ``/dev/shm`` segments
must be gone (leaks, must be 0). The randomness is seeded (``--seed``, printed) so a run replays.

Usage::

    python -m tests.chaos.run [--rounds 100] [--seed N] [--head-every 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import gc
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import psutil

import jpar
import jpar.backends.native
from jpar.errors import ActorDiedError, EngineCrashedError, GetTimeoutError, HeadDiedError
from jpar.runtime.store.segments import cluster_tag

__all__ = ["ChaosReport", "run_chaos", "main"]

KINDS = ("task", "put", "put-arg task", "nested tasks", "actor (task retries)", "actor (no task retries)", "detached head")
OUTCOMES = ("correct", "documented", "wrong", "undocumented", "hangs")


# ---------------------------------------------------------------- the workload
@jpar.remote
def square(i: int, hold: float) -> int:
    time.sleep(hold)
    return i * i


@jpar.remote
def fan_sum(xs: list, retries: int, hold: float) -> int:
    """A parent that blocks in get() on children it submitted (nested tasks: the engine runs them on
    top of it, or the head elsewhere, taking back what it had queued there)."""
    return sum(jpar.get([square.options(max_retries=retries).remote(x, hold) for x in xs]))


@jpar.remote
def digest(blob: bytes, hold: float) -> str:
    time.sleep(hold)
    return hashlib.sha256(blob).hexdigest()


class _Calc:
    def __init__(self, k: int):
        self.k = k

    def f(self, x: int, hold: float) -> int:
        time.sleep(hold)
        return self.k * x + 1


# retried calls: every call must come back right, whatever is killed
Steady = jpar.remote(max_restarts=-1, max_task_retries=-1)(type("Steady", (_Calc,), {"__module__": __name__}))
# restarted, calls in flight not retried: a call may raise ActorDiedError, but only if the actor was killed
Fragile = jpar.remote(max_restarts=-1)(type("Fragile", (_Calc,), {"__module__": __name__}))


# ---------------------------------------------------------------- the counts
@dataclass
class ChaosReport:
    seed: int
    rounds: int = 0
    head_rounds: int = 0
    counts: dict = field(default_factory=lambda: {k: Counter() for k in KINDS})
    kills: Counter = field(default_factory=Counter)
    leaked_processes: int = 0
    leaked_shm: int = 0
    leaked_sockets: int = 0     # sockets garbage-collected unclosed (ResourceWarning) after a cluster ended
    problems: list = field(default_factory=list)    # one line per wrong value, undocumented error, hang, leak
    seconds: float = 0.0

    def total(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.counts.values())

    @property
    def ok(self) -> bool:
        return (not self.total("wrong") and not self.total("undocumented") and not self.total("hangs")
                and not self.leaked_processes and not self.leaked_shm and not self.leaked_sockets
                and self.total("correct") > 0)

    def table(self) -> str:
        w = max(len(k) for k in KINDS)
        lines = [f"chaos: seed {self.seed}, {self.rounds} rounds ({self.head_rounds} on a detached head), "
                 f"{self.seconds:.0f} s",
                 f"{'':<{w}} " + " ".join(f"{o:>12}" for o in OUTCOMES)]
        for k in KINDS:
            lines.append(f"{k:<{w}} " + " ".join(f"{self.counts[k][o]:>12}" for o in OUTCOMES))
        lines.append(f"{'total':<{w}} " + " ".join(f"{self.total(o):>12}" for o in OUTCOMES))
        lines.append("SIGKILLs: " + ", ".join(f"{k} {v}" for k, v in sorted(self.kills.items())) if self.kills
                     else "SIGKILLs: none")
        lines.append(f"leaked processes: {self.leaked_processes}   leaked /dev/shm entries: {self.leaked_shm}   "
                     f"unclosed sockets: {self.leaked_sockets}")
        lines += [f"  ! {p}" for p in self.problems[:50]]
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["counts"] = {k: dict(c) for k, c in self.counts.items()}
        d["kills"] = dict(self.kills)
        d["ok"] = self.ok
        return d


# ---------------------------------------------------------------- processes
def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _shm_of(key_hex: str) -> list[str]:
    prefix = f"jpar-{cluster_tag(bytes.fromhex(key_hex))}-"
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))
    except FileNotFoundError:
        return []


class Killer(threading.Thread):
    """SIGKILLs children of one head at the planned moments: ``plan`` = [(delay_s, "engine"|"actor"|"head")].

    Victims are direct children of the head process whose pid the head reports as an engine or an
    actor (``jpar.hooks.status()``); the head itself only when planned. What was killed is in ``done``."""

    def __init__(self, head_pid: int, plan: list, rng: random.Random, seen: set):
        super().__init__(daemon=True, name="chaos-killer")
        self.head_pid, self.plan, self.seen = head_pid, plan, seen
        self.rng = random.Random(rng.randrange(2**32))   # its own stream: the round's draws do not depend on it
        self.done: list[tuple[str, str]] = []     # (kind, actor class or "")
        self.stop = threading.Event()

    def run(self) -> None:
        for delay, kind in self.plan:
            if self.stop.wait(delay):    # the round may end first: then the rest of the plan is dropped
                return
            try:
                self._kill_one(kind)
            except Exception as exc:   # noqa: BLE001  (a failed kill is reported, it does not end the round)
                self.done.append(("failed", f"{kind}: {exc!r}"))

    def _kill_one(self, kind: str) -> None:
        if kind == "head":
            self.seen.update(p.pid for p in _descendants(self.head_pid))
            os.kill(self.head_pid, signal.SIGKILL)
            self.done.append(("head", ""))
            return
        st = jpar.hooks.status(timeout=10)
        children = {p.pid for p in psutil.Process(self.head_pid).children()}
        self.seen.update(children)
        if kind == "engine":
            pool = [(e["pid"], "") for e in st["engines"] if e["pid"] in children]
        else:
            pool = [(a["pid"], a["class"]) for a in st.get("actors", ())
                    if a["pid"] in children and a["state"] == "alive"]
        if not pool:
            return
        pid, cls = self.rng.choice(sorted(pool))
        os.kill(pid, signal.SIGKILL)
        self.done.append((kind, cls))


# ---------------------------------------------------------------- one round
class Round:
    """One round's workload: what was submitted, what each ref must give, and the judging."""

    def __init__(self, rng: random.Random, actors: dict, light: bool = False):
        self.rng = rng
        self.items: list[tuple[str, object, object, int]] = []   # (kind, ref, expected, max_retries)
        n_tasks = rng.randint(4, 10) if light else rng.randint(10, 30)
        for i in range(n_tasks):
            retries = rng.randint(1, 3)
            x = rng.randint(0, 10**6)
            self.items.append(("task", square.options(max_retries=retries).remote(x, rng.uniform(0, 0.08)),
                               x * x, retries))
        for _ in range(rng.randint(1, 2) if light else rng.randint(2, 5)):
            blob = rng.randbytes(rng.choice((100, 5_000, 150_000, 400_000)))
            ref = jpar.put(blob)
            self.items.append(("put", ref, blob, 0))
            retries = rng.randint(1, 3)
            self.items.append(("put-arg task", digest.options(max_retries=retries).remote(ref, rng.uniform(0, 0.05)),
                               hashlib.sha256(blob).hexdigest(), retries))
        for _ in range(rng.randint(1, 2) if light else rng.randint(2, 4)):
            xs = [rng.randint(0, 1000) for _ in range(rng.randint(2, 5))]
            retries = rng.randint(1, 3)
            self.items.append(("nested tasks", fan_sum.options(max_retries=retries).remote(
                xs, retries, rng.uniform(0, 0.03)), sum(x * x for x in xs), retries))
        for cls_name, handle in actors.items():
            kind = "actor (task retries)" if cls_name == "Steady" else "actor (no task retries)"
            for _ in range(rng.randint(2, 5) if light else rng.randint(5, 15)):
                x = rng.randint(0, 10**6)
                self.items.append((kind, handle.f.remote(x, rng.uniform(0, 0.03)), 3 * x + 1, 0))

    def collect(self, timeout: float) -> list:
        """(kind, outcome-or-exception, expected, retries) for every item; each get has ``timeout``."""
        out = []
        for kind, ref, expected, retries in self.items:
            try:
                got = jpar.get(ref, timeout=timeout)
            except Exception as exc:   # noqa: BLE001  (judged below)
                got = exc
            out.append((kind, got, expected, retries))
        return out


def judge(report: ChaosReport, results: list, killed: list, round_no: int) -> None:
    engine_kills = sum(1 for k, _ in killed if k == "engine")
    fragile_killed = any(k == "actor" and cls == "Fragile" for k, cls in killed)
    head_killed = any(k == "head" for k, _ in killed)
    for kind, got, expected, retries in results:
        c = report.counts[kind]
        if not isinstance(got, BaseException):
            if got == expected:
                c["correct"] += 1
            else:
                c["wrong"] += 1
                report.problems.append(f"round {round_no}: {kind} gave {str(got)[:60]!r}, expected "
                                       f"{str(expected)[:60]!r}")
            continue
        if isinstance(got, GetTimeoutError):
            c["hangs"] += 1
            report.problems.append(f"round {round_no}: {kind}: get timed out ({got})")
        elif head_killed and isinstance(got, HeadDiedError):
            c["documented"] += 1
        elif (kind in ("task", "put-arg task", "nested tasks") and isinstance(got, EngineCrashedError)
              and engine_kills > retries):
            c["documented"] += 1
        elif kind == "actor (no task retries)" and isinstance(got, ActorDiedError) and fragile_killed:
            c["documented"] += 1
        else:
            c["undocumented"] += 1
            report.problems.append(f"round {round_no}: {kind}: {type(got).__name__}: {str(got)[:160]} "
                                   f"(kills this round: {killed})")


def _plan(rng: random.Random, with_actors: bool, head: bool, light: bool = False) -> list:
    kinds = ["engine", "engine", "actor"] if with_actors else ["engine"]
    plan = [(rng.uniform(0.02, 0.3 if light else 0.5), rng.choice(kinds)) for _ in range(rng.randint(1 if light else 0, 3))]
    if head:
        plan = plan[:1] + [(rng.uniform(0.05, 0.6), "head")]
    return plan


# ---------------------------------------------------------------- clusters
class LocalCluster:
    """``jpar.init(num_engines=N)`` with the two actors; closed with a leak check."""

    def __init__(self, num_engines: int, report: ChaosReport, timeout: float):
        self.report = report
        self.ctx = jpar.init(num_engines=num_engines)
        d = jpar.backends.native.current_driver()
        self.head_pid = d.conn["pid"]
        self.key = d.conn["key"]
        self.seen: set[int] = {self.head_pid}
        self.actors = {"Steady": Steady.remote(3), "Fragile": Fragile.remote(3)}
        jpar.get([a.f.remote(0, 0) for a in self.actors.values()], timeout=timeout)   # both up
        self.seen.update(p.pid for p in _descendants(self.head_pid))

    def close(self) -> None:
        self.seen.update(p.pid for p in _descendants(self.head_pid))
        procs = _alive(self.seen)
        jpar.shutdown()
        check_gone(self.report, procs, self.key, "local cluster")


def _alive(pids) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return out


def check_gone(report: ChaosReport, procs: list, key: str, what: str, timeout: float = 20.0) -> None:
    """Count the processes of ``procs`` still alive ``timeout`` s later (psutil waits on their exits),
    then kill those by pid; and count the cluster's /dev/shm segments left."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    if alive:
        report.leaked_processes += len(alive)
        report.problems.append(f"{what}: processes left behind: {[(p.pid, p.cmdline()[-2:]) for p in alive]}")
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
    shm = _shm_of(key)
    if shm:
        report.leaked_shm += len(shm)
        report.problems.append(f"{what}: /dev/shm entries left behind: {shm[:5]}")
        for name in shm:
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except OSError:
                pass


def check_sockets(report: ChaosReport, what: str) -> None:
    """Collect garbage now and count the sockets jpar left unclosed (each warns as it is collected)."""
    caught = []
    old = sys.unraisablehook
    sys.unraisablehook = caught.append
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)   # an unclosed socket's __del__ then reports
            gc.collect()
    finally:
        sys.unraisablehook = old
    unclosed = [u for u in caught if isinstance(u.exc_value, ResourceWarning)]
    if unclosed:
        report.leaked_sockets += len(unclosed)
        report.problems.append(f"{what}: {len(unclosed)} socket(s) left unclosed: {str(unclosed[0].exc_value)[:80]}")
    for u in caught:
        if not isinstance(u.exc_value, ResourceWarning):
            old(u)


def head_round(report: ChaosReport, rng: random.Random, round_no: int, timeout: float, light: bool) -> None:
    """A detached head (``jpar start --head``) with one actor, SIGKILLed mid-workload."""
    out = subprocess.run([sys.executable, "-m", "jpar.cli", "start", "--head", "-n", "2"], capture_output=True,
                         text=True, timeout=120)
    if "jpar head started" not in out.stdout:
        raise RuntimeError(f"jpar start --head failed: {out.stdout}\n{out.stderr}")
    head_pid = int(out.stdout.split("(pid ")[1].split(")")[0])
    address = out.stdout.split(" at ")[1].split()[0]
    seen = {head_pid}
    key = ""
    try:
        jpar.init(address=address, dead_after_s=4.0)
        key = jpar.backends.native.current_driver().conn["key"]
        actors = {"Steady": Steady.remote(3)}
        jpar.get(actors["Steady"].f.remote(0, 0), timeout=timeout)
        seen.update(p.pid for p in _descendants(head_pid))
        work = Round(rng, actors, light)
        killer = Killer(head_pid, _plan(rng, True, head=True, light=light), rng, seen)
        killer.start()
        results = work.collect(timeout)
        killer.join(timeout=30)
        if not any(k == "head" for k, _ in killer.done):   # the workload finished first: kill it now
            killer.plan = [(0, "head")]
            killer.run()
        report.kills.update(k for k, _ in killer.done)
        judge(report, results, killer.done, round_no)
        # once the head is gone, new work must fail with HeadDiedError too (at submit or at get), not hang
        try:
            got = jpar.get(square.remote(7, 0), timeout=timeout)
        except Exception as exc:   # noqa: BLE001  (judged)
            got = exc
        judge(report, [("detached head", got, 49, 0)], killer.done, round_no)
    finally:
        seen.update(p.pid for p in _descendants(head_pid))
        procs = _alive(seen)
        jpar.shutdown()
        if key:
            check_gone(report, procs, key, f"round {round_no} (detached head)")
    report.head_rounds += 1


def run_chaos(rounds: int, seed: int | None = None, head_every: int = 10, num_engines: int = 2,
              timeout: float = 60.0, light: bool = False, log=print) -> ChaosReport:
    """Run ``rounds`` rounds (every ``head_every``-th on a detached head; 0: none) and return the counts."""
    seed = random.randrange(2**32) if seed is None else seed
    log(f"chaos: seed {seed} (replay with --seed {seed})")
    rng = random.Random(seed)
    report = ChaosReport(seed)
    t0 = time.monotonic()
    runtime = tempfile.mkdtemp(prefix="jpar-chaos-")
    saved = os.environ.get("JPAR_RUNTIME_DIR")
    os.environ["JPAR_RUNTIME_DIR"] = runtime     # this run's clusters only: `jpar start --head` writes here
    cluster = None
    previous: list = []
    try:
        for n in range(1, rounds + 1):
            if head_every and n % head_every == 0:
                if cluster is not None:
                    cluster.close()
                    cluster = None
                    check_sockets(report, "local cluster")
                head_round(report, rng, n, timeout, light)
                check_sockets(report, f"round {n} (detached head)")
            else:
                if cluster is None:
                    cluster = LocalCluster(num_engines, report, timeout)
                    previous = []
                work = Round(rng, cluster.actors, light)
                killer = Killer(cluster.head_pid, _plan(rng, True, head=False, light=light), rng, cluster.seen)
                killer.start()
                results = work.collect(timeout)
                killer.join(timeout=60)   # kills planned after the workload ended still happen: the next
                #                           round then starts on respawning engines and restarting actors,
                #                           so the previous round's kills count as this round's too
                report.kills.update(k for k, _ in killer.done)
                judge(report, results, previous + killer.done, n)
                previous = killer.done
                del work, results, killer
            report.rounds = n
            if n % 10 == 0 or n == rounds:
                log(f"  round {n}/{rounds}: correct {report.total('correct')}, documented "
                    f"{report.total('documented')}, bad {report.total('wrong') + report.total('undocumented')}, "
                    f"hangs {report.total('hangs')}, kills {dict(report.kills)}")
    finally:
        if cluster is not None:
            cluster.close()
            cluster = None
            check_sockets(report, "local cluster")
        elif jpar.is_initialized():
            jpar.shutdown()
        if saved is None:
            os.environ.pop("JPAR_RUNTIME_DIR", None)
        else:
            os.environ["JPAR_RUNTIME_DIR"] = saved
        shutil.rmtree(runtime, ignore_errors=True)
        report.seconds = time.monotonic() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=100, help="rounds to run (default 100)")
    p.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    p.add_argument("--head-every", type=int, default=10,
                   help="every Nth round runs on a detached head that is SIGKILLed (default 10; 0: never)")
    p.add_argument("--engines", type=int, default=2, help="engines per cluster (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="timeout of each get, in seconds (default 60)")
    p.add_argument("--json", help="also write the counts to this file as JSON")
    args = p.parse_args(argv)
    faulthandler.dump_traceback_later(args.rounds * 120 + 300, exit=True)   # a hung runner still ends
    report = run_chaos(args.rounds, args.seed, args.head_every, args.engines, args.timeout)
    print(report.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=1)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
