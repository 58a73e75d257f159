"""Run a random sample of one module's mutants against whole test files, the mutant on in every process.

mutmut maps each mutant to the tests that reach it by recording calls inside the test process; code
that runs in the head and engine processes (most of jpar/engine.py, part of the driver's work) is
never seen there, so mutmut reports such mutants as having no tests. Here each sampled mutant is
switched on through ``MUTANT_UNDER_TEST``, which every process of a cluster inherits (the head and
engines import jpar from the same mutated copy), and the given tests run whole: a failing run kills
the mutant. jpar.runtime.engine.engine runs as ``python -m jpar.runtime.engine.engine``, so in engine processes its functions belong
to ``__main__``: ``--as-main`` switches its mutants on there. Not collected by pytest (no ``test_`` prefix); ``make mutants MUTANT_SAMPLE=N`` runs it.

Usage, from the directory where ``mutmut run`` made ``mutants/``::

    python tests/mutation_sample.py --module jpar.runtime.engine.engine --sample 20 --seed 1 -- tests/test_core.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

DEF = re.compile(r"^\s*(?:async\s+)?def\s+(x\S+?__mutmut_\d+)\(", re.M)


def mutant_names(module: str, root: Path) -> list[str]:
    path = root / (module.replace(".", "/") + ".py")
    return sorted(f"{module}.{name}" for name in DEF.findall(path.read_text()))


def run_one(name: str, tests: list[str], root: Path, timeout: float, as_main: bool = False) -> tuple[str, float]:
    if as_main and name:   # its processes run it as `python -m`: there its functions' module is __main__
        name = "__main__." + name.rpartition(".")[2]
    env = dict(os.environ, MUTANT_UNDER_TEST=name, PYTHONPATH=str(root))
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=root,
                           env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0
    status = {0: "survived", 1: "killed"}.get(r.returncode, f"error (rc {r.returncode})")
    return status, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--module", required=True, help="e.g. jpar.runtime.engine.engine")
    p.add_argument("--sample", type=int, default=20, help="mutants to run (default 20; 0: all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (a mutant past it is killed)")
    p.add_argument("--root", default="mutants", help="mutmut's mutated copy (default ./mutants)")
    p.add_argument("--json", help="append the results to this JSON-lines file")
    p.add_argument("--names", help="run these mutants (a file, one name a line) instead of a sample")
    p.add_argument("--as-main", action="store_true",
                   help="the module runs as `python -m MODULE` (jpar.runtime.engine.engine does, in engines and actor processes): "
                        "switch the mutant on where its module is __main__")
    p.add_argument("tests", nargs="+", help="test files or node ids (relative to the root)")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    names = mutant_names(args.module, root)
    if args.names:
        with open(args.names) as f:
            chosen = [n.strip() for n in f if n.strip().startswith(args.module + ".")]
    elif args.sample:
        chosen = sorted(random.Random(args.seed).sample(names, min(args.sample, len(names))))
    else:
        chosen = names
    print(f"{args.module}: {len(names)} mutants, running {len(chosen)} (seed {args.seed}) against {args.tests}",
          flush=True)
    base, secs = run_one("", args.tests, root, args.timeout)
    if base != "survived":
        print(f"the tests do not pass unmutated ({base}); nothing measured", flush=True)
        return 2
    counts: Counter = Counter()
    rows = []
    for name in chosen:
        status, secs = run_one(name, args.tests, root, max(args.timeout, 1.0), args.as_main)
        counts[status.split(" ")[0]] += 1
        rows.append({"mutant": name, "status": status, "seconds": round(secs, 1)})
        print(f"  {status:<10} {secs:6.1f}s  {name}", flush=True)
    killed = counts["killed"] + counts["timeout"]
    print(f"{args.module}: killed {counts['killed']}, timeout {counts['timeout']}, survived {counts['survived']}, "
          f"errors {counts['error']}: score {killed}/{len(chosen)} = {100 * killed / max(1, len(chosen)):.0f} %")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"module": args.module, "seed": args.seed, "tests": args.tests, "sampled": len(chosen),
                                "total": len(names), "counts": dict(counts), "mutants": rows}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
