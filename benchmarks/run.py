#!/usr/bin/env python
"""jpar's benchmark driver: jpar beside its peers on the shared harness's workloads, in one run.

    python benchmarks/run.py --quick                                  # smoke test, ~5 min
    python benchmarks/run.py --systems jpar,mp_pool,ray --workloads latency,throughput
    python benchmarks/run.py                                          # everything installed
    python benchmarks/run.py --render benchmarks/results/<tag>/results.json   # re-print

The shared harness (../shared/bench: bench.py, adapters.py, workloads.py, tasks.py) is
imported, never copied or edited. At run time this script:

    1. puts ../shared/bench on sys.path and imports bench, adapters, workloads;
    2. registers JparAdapter (jpar_adapter.py) in adapters.ADAPTERS and bench.ALL_SYSTEMS,
       and the extra workloads (extra_workloads.py) in the workload registries;
    3. replaces bench.spawn, so each (system, workload) child process is this script again
       (it registers the same things, then calls the shared bench.run_child) and runs in the
       results directory instead of the read-only shared one;
    4. calls the shared bench.main_parent with an absolute results directory as the tag,
       so results.json, results.md and logs/ land in benchmarks/results/<tag>/;
    5. adds summary.md / summary.json: each target as PASS/MISS and jpar-vs-peer ratios
       (report.py), and prints the summary.

    parent (run.py) --spawn--> child (run.py --child jpar:latency) --jpar.init--> head, engines
                    --spawn--> child (run.py --child ray:latency)  --ray.init---> raylet, ...
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_SHARED = os.path.normpath(os.path.join(REPO, "..", "shared", "bench"))
RESULTS = os.path.join(HERE, "results")
# the peers, in the order they are shown; ray_nice0 only when asked for by name
PEERS = ["serial", "mp_pool", "cf_process", "loky", "mpire", "ipyparallel", "dask", "ray"]
OWN_FILES = ("run.py", "jpar_adapter.py", "extra_workloads.py", "report.py")


def load_shared(shared):
    """Import the shared harness from `shared` and register jpar into it (parent and child)."""
    if not os.path.isfile(os.path.join(shared, "bench.py")):
        sys.exit(f"run.py: no shared harness at {shared}. Check out ../shared/bench beside the "
                 f"repo, or pass --shared DIR.")
    for d in (HERE, shared):  # shared first on sys.path, then this directory
        if d in sys.path:
            sys.path.remove(d)
        sys.path.insert(0, d)
    import bench
    import adapters
    import extra_workloads
    from jpar_adapter import JparAdapter, JparDaskAdapter, JparRayAdapter
    for i, adapter in enumerate((JparAdapter, JparDaskAdapter, JparRayAdapter)):
        adapters.ADAPTERS[adapter.name] = adapter
        if adapter.name not in bench.ALL_SYSTEMS:
            bench.ALL_SYSTEMS.insert(i, adapter.name)
    extra_workloads.register(bench)
    return bench


def child_env_setup():
    """Environment every child (and its engines/workers) inherits: import paths and writable
    scratch directories (the shared harness defaults them into its read-only directory)."""
    paths = [HERE, REPO]  # jpar_adapter's helpers by reference; jpar itself, installed or not
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    os.environ["IPYTHONDIR"] = os.path.join(HERE, ".ipython")  # private ipyparallel profile
    uid = os.getuid() if hasattr(os, "getuid") else "u"
    # short: Ray puts unix sockets under it (path limit 107 bytes)
    os.environ["PEERBENCH_RAY_TMP"] = os.path.join(tempfile.gettempdir(), f"jpar-bench-ray-{uid}")


def make_spawn(bench, shared):
    def spawn(args_list, logpath, timeout):
        """bench.spawn, but the child is this script and runs in results/<tag>/."""
        import psutil
        cwd = os.path.dirname(os.path.dirname(logpath))  # results/<tag>/logs/x.log
        t0 = time.perf_counter()
        with open(logpath, "a") as logf:
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--shared", shared]
                                 + args_list, cwd=cwd, env=bench.child_env(), stdout=logf,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            try:
                p.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    procs = psutil.Process(p.pid).children(recursive=True) + [psutil.Process(p.pid)]
                except psutil.Error:
                    procs = []
                for q in procs:  # only our own child and its descendants, by pid
                    try:
                        q.kill()
                    except psutil.Error:
                        pass
                p.wait()
        return p.returncode, timed_out, time.perf_counter() - t0
    return spawn


def available(names):
    """The systems whose libraries import here (find_spec only: nothing is imported)."""
    import adapters
    out = []
    for s in names:
        cls = adapters.ADAPTERS.get(s)
        if cls is None:
            continue
        if all(importlib.util.find_spec(m.split(".")[0]) is not None for m in cls.libs):
            out.append(s)
    return out


def write_summary(R, outdir):
    import report
    text, verdicts = report.render_summary(R)
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump({"tag": R["tag"], "targets": verdicts}, f, indent=1)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--systems", default=None,
                    help="comma-separated (default: jpar and every installed peer: "
                         + ",".join(PEERS) + ")")
    ap.add_argument("--workloads", default=None, help="comma-separated (default: all, incl. putget)")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--tag", default=None, help="results/<tag>/ (default: timestamp)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="per child process, seconds (default 1500, quick 300)")
    ap.add_argument("--shared", default=DEFAULT_SHARED, help="the shared harness directory")
    ap.add_argument("--render", metavar="RESULTS_JSON", help="re-print a run's summary and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--cfg-json", help=argparse.SUPPRESS)
    a = ap.parse_args()
    shared = os.path.abspath(a.shared)
    bench = load_shared(shared)

    if a.child:
        s, w = a.child.split(":")
        bench.run_child(s, w, json.loads(a.cfg_json), a.child_out)
        return
    if a.render:
        with open(a.render) as f:
            R = json.load(f)
        sys.stdout.write(write_summary(R, os.path.dirname(os.path.abspath(a.render))))
        return

    systems = a.systems.split(",") if a.systems else available(["jpar"] + PEERS)
    unknown = [s for s in systems if s not in bench.ALL_SYSTEMS]
    if unknown:
        sys.exit(f"run.py: unknown system(s) {unknown}; choose from {bench.ALL_SYSTEMS}")
    workloads = a.workloads or ",".join(bench.ALL_WORKLOADS)
    bad = [w for w in workloads.split(",") if w not in bench.ALL_WORKLOADS]
    if bad:
        sys.exit(f"run.py: unknown workload(s) {bad}; choose from {bench.ALL_WORKLOADS}")
    tag = a.tag or datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if a.quick else "")
    outdir = os.path.join(RESULTS, tag)
    os.makedirs(os.path.join(outdir, "code"), exist_ok=True)
    for fn in OWN_FILES:
        shutil.copy(os.path.join(HERE, fn), os.path.join(outdir, "code", fn))

    child_env_setup()
    bench.spawn = make_spawn(bench, shared)
    timeout = a.timeout or (300 if a.quick else 1500)
    print(f"systems: {','.join(systems)}\nresults: {outdir}", flush=True)
    # bench puts results in os.path.join(<shared>, "results", tag): an absolute tag wins the join
    bench.main_parent(argparse.Namespace(systems=",".join(systems), workloads=workloads,
                                         quick=a.quick, tag=outdir, timeout=timeout))

    path = os.path.join(outdir, "results.json")
    with open(path) as f:
        R = json.load(f)
    R["tag"] = tag
    R["jpar_bench"] = {"shared": shared, "systems": systems}
    with open(path, "w") as f:
        json.dump(R, f, indent=1)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(bench.render_md(R))
    text = write_summary(R, outdir)
    print("\n" + text)
    print(f"wrote {os.path.join(outdir, 'summary.md')}")


if __name__ == "__main__":
    main()
