"""Run a seeded random sample of one module's mutants against a focused set of tests, the mutant on in every process.

mutmut maps each mutant to the tests that reach it by recording calls inside the test process; code
that runs in the head and engine processes (most of jpar/runtime/engine/engine.py, part of the driver's work) is
never seen there, so mutmut reports such mutants as having no tests. Here each sampled mutant is
switched on through ``MUTANT_UNDER_TEST``, which every process of a cluster inherits (the head and
engines import jpar from the same mutated copy), and the given tests run with ``-x``: a failing run
kills the mutant. jpar.runtime.engine.engine runs as ``python -m jpar.runtime.engine.engine``, so in engine processes its functions
belong to ``__main__``: a ``sitecustomize`` written into the mutated copy switches the mutant on under
that name in a process whose ``__main__`` is the mutated module, and under its own name everywhere
else (the head and actor hosts import helpers from jpar.runtime.engine.engine).

Each mutant gets a wall-clock limit (``--timeout``; by default three times the clean run plus a
minute): a run past it is stopped with its whole process tree and counted as killed by timeout,
reported apart from the failures. A mutant that only changes a logging call's arguments or a
``__repr__`` is not run: it is listed as equivalent with the reason, and so is any mutant named in
``--equivalent FILE`` (``NAME  reason`` a line, kept by hand after reading the diff). The score is
killed (failures + timeouts) over the sample less those equivalents.

Not collected by pytest (no ``test_`` prefix); ``make mutants MUTANT_SAMPLE=N`` runs it.

Usage, from a copy of the tree (the Makefile's build/mutation)::

    python tests/mutation_sample.py --generate                  # only makes ./mutants (no test pass)
    python tests/mutation_sample.py --module jpar.runtime.engine.engine --sample 40 --seed 1 --json sampled.jsonl \\
        tests/test_core.py tests/test_mutation_killers.py
    python tests/mutation_sample.py --summary sampled.jsonl     # the latest score per module and seed
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import psutil

DEF = re.compile(r"^\s*(?:async\s+)?def\s+(x\S+?__mutmut_\d+)\(", re.M)
LOG_CALL = re.compile(r"^(log|logger|_log|LOG)\.(debug|info|warning|warn|error|exception|critical|log)$")

# Imported by every Python process whose path starts with the mutated copy (PYTHONPATH): a mutant of
# module M is on under "__main__.<name>" in a process run as `python -m M`, under "M.<name>" elsewhere.
SITECUSTOMIZE = '''\
import os
import sys

_name = os.environ.get("MUTANT_UNDER_TEST", "")
if _name.count(".") > 1 and _name.rpartition(".")[2].startswith("x"):
    import mutmut.mutation.trampoline as _t

    _module, _, _short = _name.rpartition(".")
    _orig = _t.get_mutant_under_test

    def get_mutant_under_test():
        name = _orig()
        if name == _name:
            spec = getattr(sys.modules.get("__main__"), "__spec__", None)
            if spec is not None and spec.name == _module:
                return "__main__." + _short
        return name

    _t.get_mutant_under_test = get_mutant_under_test
'''


def generate(root: Path) -> None:
    """Make ``root`` (mutmut's ``mutants/``) from the tree in the working directory, as ``mutmut run`` does
    before its test passes, without running any test."""
    from mutmut.__main__ import (copy_also_copy_files, copy_src_dir, create_mutants, set_mutant_under_test,
                                 setup_source_paths)
    if root.resolve() != Path("mutants").resolve():
        raise SystemExit("--generate makes ./mutants: run it from the copy of the tree, with the default --root")
    set_mutant_under_test("mutant_generation")
    root.mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    print(create_mutants(2), flush=True)


def mutant_names(module: str, root: Path) -> list[str]:
    path = root / (module.replace(".", "/") + ".py")
    return sorted(f"{module}.{name}" for name in DEF.findall(path.read_text()))


def diff_of(name: str, module: str, root: Path) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    return get_diff_for_mutant(name, path=root / (module.replace(".", "/") + ".py"))


def _functions(name: str, module: str, root: Path) -> tuple[str, str]:
    """The source of the function a mutant changes, unmutated and mutated."""
    import libcst as cst
    from mutmut.mutation.diff_apply import read_functions_from_index, read_mutants_module, read_mutant_function, \
        read_original_function
    path = root / (module.replace(".", "/") + ".py")
    fns = read_functions_from_index(name, path)
    if fns is None:
        mod = read_mutants_module(path)
        fns = (read_original_function(mod, name), read_mutant_function(mod, name))
    return tuple(cst.Module([f]).code for f in fns)


def equivalent_by_rule(name: str, module: str, root: Path) -> str | None:
    """Why the mutant cannot change what a user sees (only a log message or a repr changes), or None."""
    if "__repr__" in name.rpartition(".")[2]:
        return "in __repr__ (only the text of a repr changes)"
    orig, mutated = _functions(name, module, root)
    changed = set()
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, orig.splitlines(), mutated.splitlines()).get_opcodes():
        if tag != "equal":
            changed.update(range(i1 + 1, max(i2, i1 + 1) + 1))
    try:
        tree = ast.parse(textwrap.dedent(orig))
    except SyntaxError:
        return None
    spans = [(n.lineno, n.end_lineno) for n in ast.walk(tree)
             if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
             and LOG_CALL.match(ast.unparse(n.value.func))]
    if changed and all(any(a <= c <= b for a, b in spans) for c in changed):
        return "only a logging call's arguments change (logging swallows formatting errors)"
    return None


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    for k in kids:
        try:
            k.kill()
        except psutil.Error:
            pass
    proc.wait()


def _sweep(name: str) -> int:
    """Kill processes this run left behind (their environment names the mutant): a mutant can break shutdown."""
    n = 0
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("MUTANT_UNDER_TEST") == name:
                p.kill()
                n += 1
        except psutil.Error:
            pass
    return n


def run_one(name: str, tests: list[str], root: Path, timeout: float) -> tuple[str, float, str]:
    """Run the tests with mutant ``name`` on (none: ""); returns the status, the seconds taken and what
    failed first (pytest's FAILED/ERROR line, or the tail of its output when it broke off)."""
    env = dict(os.environ, MUTANT_UNDER_TEST=name or "", PYTHONPATH=str(root))
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *tests],
                                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            status = "timeout"
        else:
            # 1: a test failed; 2, 3: the run broke off (an import or a fixture failed under the mutant)
            status = {0: "survived", 1: "killed", 2: "killed", 3: "killed"}.get(rc, f"error (rc {rc})")
        log.seek(0)
        out = log.read()
    if name:
        _sweep(name)
    first = next((ln.strip() for ln in out.splitlines() if re.match(r"(FAILED|ERROR) \S+\.py", ln)), "")
    if not first and status != "survived":
        first = " | ".join(out.strip().splitlines()[-3:])
    return status, time.monotonic() - t0, first[:300]


def load_equivalents(path: str | None) -> dict[str, str]:
    out = {}
    if path:
        for line in Path(path).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                name, _, reason = line.strip().partition(" ")
                out[name] = reason.strip() or "judged equivalent by hand"
    return out


def summary(path: str) -> int:
    latest: dict[tuple[str, int], dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            latest[(rec["module"], rec["seed"])] = rec
    if not latest:
        print("no sampled results")
        return 1
    print(f"{'module':<24}{'seed':>5}{'killed':>8}{'timeout':>8}{'survived':>9}{'equiv':>6}{'errors':>7}  score")
    for (module, seed), rec in sorted(latest.items()):
        c = Counter(rec["counts"])
        errors = sum(v for k, v in c.items() if k not in ("killed", "timeout", "survived", "equivalent"))
        dead, judged = c["killed"] + c["timeout"], rec["sampled"] - c["equivalent"]
        print(f"{module:<24}{seed:>5}{c['killed']:>8}{c['timeout']:>8}{c['survived']:>9}{c['equivalent']:>6}"
              f"{errors:>7}  {dead}/{judged} = {100 * dead / max(1, judged):.0f} % (of {rec['total']} mutants)")
        for row in rec["mutants"]:
            if row["status"] == "survived":
                print(f"    survived: {row['mutant']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generate", action="store_true", help="make ./mutants from the tree here, run nothing")
    p.add_argument("--summary", metavar="JSONL", help="print the latest score per module and seed in JSONL")
    p.add_argument("--module", help="e.g. jpar.runtime.engine.engine")
    p.add_argument("--sample", type=int, default=40, help="mutants to run (default 40; 0: all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, help="seconds per mutant (default: 3 x the clean run + 60); "
                                                  "a run past it is stopped and counted as killed by timeout")
    p.add_argument("--root", default="mutants", help="mutmut's mutated copy (default ./mutants)")
    p.add_argument("--json", help="append the results to this JSON-lines file")
    p.add_argument("--names", help="run these mutants (a file, one name a line) instead of a sample")
    p.add_argument("--equivalent", help="a file of mutants judged equivalent by hand: NAME reason, one a line")
    p.add_argument("--as-main", action="store_true", help=argparse.SUPPRESS)   # no longer needed: sitecustomize
    p.add_argument("tests", nargs="*", help="test files or node ids (relative to the root)")
    args = p.parse_args(argv)
    root = Path(args.root)
    if args.generate:
        generate(root)
        return 0
    if args.summary:
        return summary(args.summary)
    if not args.module or not args.tests:
        p.error("--module and the tests are needed")
    root = root.resolve()
    (root / "sitecustomize.py").write_text(SITECUSTOMIZE)
    names = mutant_names(args.module, root)
    if args.names:
        with open(args.names) as f:
            chosen = [n.strip() for n in f if n.strip().startswith(args.module + ".")]
    elif args.sample:
        chosen = sorted(random.Random(args.seed).sample(names, min(args.sample, len(names))))
    else:
        chosen = names
    by_hand = load_equivalents(args.equivalent)
    print(f"{args.module}: {len(names)} mutants, running {len(chosen)} (seed {args.seed}) against {args.tests}",
          flush=True)
    for attempt in (1, 2):     # a clean run that fails once on a loaded machine gets one more try
        base, secs, why = run_one("", args.tests, root, 900)
        if base == "survived":
            break
        print(f"  the tests do not pass unmutated ({base}): {why}", flush=True)
    else:
        print("nothing measured", flush=True)
        return 2
    timeout = args.timeout or 3 * secs + 60
    print(f"  clean run {secs:.1f}s; {timeout:.0f}s a mutant at most", flush=True)
    counts: Counter = Counter()
    rows = []
    for name in chosen:
        diff = diff_of(name, args.module, root)
        reason = by_hand.get(name) or equivalent_by_rule(name, args.module, root)
        if reason:
            status, secs, why = "equivalent", 0.0, ""
        else:
            status, secs, why = run_one(name, args.tests, root, timeout)
        counts[status.split(" ")[0]] += 1
        row = {"mutant": name, "status": status, "seconds": round(secs, 1)}
        if reason:
            row["reason"] = reason
        if why:
            row["by"] = why
        if status not in ("killed", "timeout"):
            row["diff"] = diff
        rows.append(row)
        print(f"  {status:<10} {secs:6.1f}s  {name}" + (f"  ({reason})" if reason else "")
              + (f"  <- {why.split(' - ')[0]}" if why else ""), flush=True)
    dead, judged = counts["killed"] + counts["timeout"], len(chosen) - counts["equivalent"]
    print(f"{args.module}: killed {counts['killed']}, timeout {counts['timeout']}, survived {counts['survived']}, "
          f"equivalent {counts['equivalent']}, errors {counts['error']}: "
          f"score {dead}/{judged} = {100 * dead / max(1, judged):.0f} %", flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"module": args.module, "seed": args.seed, "tests": args.tests, "sampled": len(chosen),
                                "total": len(names), "counts": dict(counts), "mutants": rows}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
