"""jpar's targets (PASS/MISS) and jpar-vs-peer ratios, computed from one run's results.json.

A ratio is always "how many times better jpar is than the peer" on that row:
peer/jpar for lower-is-better units (s, us), jpar/peer for higher-is-better ones
(tasks/s, GB/s). So 2.0x means jpar is twice as good, 0.5x half as good, whatever the unit.
Only rows measured in the same run are compared (the machine is noisy across runs).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from bench import fmt  # the shared harness's number formatting


@dataclass(frozen=True)
class Verdict:
    target: str        # the wording
    goal: str          # the threshold as measured here
    value: str         # jpar's figure
    status: str        # PASS | MISS | n/a
    peers: str = ""    # context: the same figure for peers in this run
    note: str = ""


def rows_of(R, system, workload, contains="", variant=None):
    return [r for r in R["rows"] if r["system"] == system and r["workload"] == workload
            and contains in r["metric"] and (variant is None or r["variant"] == variant)]


def row_of(R, system, workload, contains="", variant=None):
    rs = rows_of(R, system, workload, contains, variant)
    return rs[0] if rs else None


def med(r):
    return r["stats"]["median"]


def peers_of(R):
    seen = []
    for r in R["rows"]:
        if r["system"] not in seen and r["system"] != "jpar" and r["system"] not in ON_ENGINE:
            seen.append(r["system"])
    return seen


#: jpar's API on another engine -> that engine's own row (the overhead table compares the two)
ON_ENGINE = {"jpar_dask": "dask", "jpar_ray": "ray"}


def overhead_table(R):
    """jpar's cost on top of each engine it runs on: for every row of jpar(backend=X), how many
    times X's own figure it is (time ratio; for rates the inverse), goal <= 1.1x."""
    L = []
    for mine, engine in ON_ENGINE.items():
        rows = [r for r in R["rows"] if r["system"] == mine]
        if not rows:
            continue
        if not L:
            L = ["| system | workload | metric | variant | unit | engine alone | through jpar | overhead (goal <= 1.1x) |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            p = row_of(R, engine, r["workload"], r["metric"], r["variant"])
            if p is None or p["metric"] != r["metric"] or not med(p) or not med(r):
                L.append(f"| {mine} | {r['workload']} | {r['metric']} | {r['variant']} | {r['unit']} | - | "
                         f"{fmt(med(r))} | - |")
                continue
            over = med(r) / med(p) if r["better"] == "lower" else med(p) / med(r)
            L.append(f"| {mine} | {r['workload']} | {r['metric']} | {r['variant']} | {r['unit']} | "
                     f"{fmt(med(p))} | {fmt(med(r))} | {'**' if over > 1.1 else ''}{fmt(over)}x"
                     f"{'**' if over > 1.1 else ''} |")
    return "\n".join(L)


def jpar_versions(R):
    for x in R.get("runs", []):
        if x["system"] == "jpar" and x.get("versions"):
            return x["versions"]
    return {}


def why_missing(R, workload, feature=None):
    """Explain an absent jpar row: a failure in that child, a missing feature, or not run."""
    if "jpar" not in R.get("jpar_bench", {}).get("systems", ["jpar"]):
        return "jpar was not in this run's --systems"
    for f in R.get("failures", []):
        if f["system"] == "jpar" and f["workload"] == workload:
            err = (f.get("error") or "").strip().splitlines()
            tail = err[-1] if err else ("timed out" if f.get("timed_out") else f"rc={f['rc']}")
            return f"jpar failed: {tail[:160]}"
    missing = jpar_versions(R).get("missing", {})
    if feature and feature in missing:
        return missing[feature]
    if not any(r["system"] == "jpar" and r["workload"] == workload for r in R["rows"]) and \
            not any(x["system"] == "jpar" and x["workload"] == workload for x in R.get("runs", [])):
        return f"workload '{workload}' not run"
    return "no jpar row"


def peer_context(R, workload, contains="", variant=None, lower=True, conv=None, unit=""):
    """'best: <sys> <v>; ray <v>' over the non-serial peers of this run."""
    vals = []
    for s in peers_of(R):
        if s == "serial":
            continue
        r = row_of(R, s, workload, contains, variant)
        if r:
            v = med(r) if conv is None else conv(med(r))
            vals.append((v, s))
    if not vals:
        return ""
    best = min(vals) if lower else max(vals)
    sep = "" if unit == "x" else " "
    out = [f"best {best[1]} {fmt(best[0])}{sep}{unit}".rstrip()]
    ray = next((v for v, s in vals if s == "ray"), None)
    if ray is not None and best[1] != "ray":
        out.append(f"ray {fmt(ray)}{sep}{unit}".rstrip())
    return "; ".join(out)


def threshold(target, workload, contains, variant, unit, limit, lower, *, conv=None, scale="",
              feature=None, note=""):
    """A target of the form 'jpar's median <= limit' (lower) or '>= limit'."""
    def check(R):
        r = row_of(R, "jpar", workload, contains, variant)
        goal = f"{'<=' if lower else '>='} {fmt(limit)} {unit}"
        ctx = peer_context(R, workload, contains, variant, lower, conv, unit)
        if r is None:
            return Verdict(target, goal, "-", "n/a", ctx, why_missing(R, workload, feature))
        v = med(r) if conv is None else conv(med(r))
        ok = v <= limit if lower else v >= limit
        return Verdict(target, goal, f"{fmt(v)} {unit}", "PASS" if ok else "MISS", ctx,
                       (note + " " + r["metric"]).strip())
    return check


def chain_len(r):
    return int(re.search(r"chain of (\d+)", r["metric"]).group(1))


def chain_target(R):
    target = "chain of 100 dependent tasks <= 20 ms"
    r = row_of(R, "jpar", "dag", "chain of", "refs/futures as args")
    ctx_rows = [(s, row_of(R, s, "dag", "chain of", "refs/futures as args")) for s in peers_of(R)
                if s != "serial"]
    ctx = "; ".join(f"{s} {fmt(med(x) / chain_len(x) * 1e6)} us/link" for s, x in ctx_rows if x)
    if r is None:
        return Verdict(target, "<= 200 us/link", "-", "n/a", ctx, why_missing(R, "dag"))
    n = chain_len(r)
    per_link = med(r) / n
    total100 = per_link * 100
    value = f"{fmt(per_link * 1e6)} us/link; chain of {n}: {fmt(med(r) * 1e3)} ms"
    if n != 100:
        value += f"; x100 links: {fmt(total100 * 1e3)} ms"
    return Verdict(target, "<= 200 us/link (20 ms / 100)", value,
                   "PASS" if total100 <= 0.020 else "MISS", ctx,
                   "ObjectRefs as arguments, resolved on the engines")


def pi_target(R):
    target = "seed Monte Carlo pi, 200 x sample(100_000): speedup over serial >= 1.85"
    r = row_of(R, "jpar", "pi_paired")
    if r is not None:
        ctx = peer_context(R, "pi_paired", lower=False, unit="x")
        v = med(r)
        return Verdict(target, ">= 1.85x", f"{v:.2f}x", "PASS" if v >= 1.85 else "MISS", ctx,
                       "paired: serial in the driver then jpar's default map, per rep; "
                       + r["metric"].split(", ")[-1])
    r = row_of(R, "jpar", "pi", variant="default map")
    s = row_of(R, "serial", "pi", variant="default map")
    if r is None or s is None:
        return Verdict(target, ">= 1.85x", "-", "n/a", "",
                       why_missing(R, "pi") if r is None else "no serial pi row in this run "
                       "(add serial to --systems, or run pi_paired)")
    conv = lambda x: med(s) / x
    v = conv(med(r))
    return Verdict(target, ">= 1.85x", f"{v:.2f}x", "PASS" if v >= 1.85 else "MISS",
                   peer_context(R, "pi", variant="default map", lower=False, conv=conv, unit="x"),
                   "serial row / jpar default map, measured minutes apart (pi_paired is fairer)")


def pool_map_target(R):
    target = "Pool.map(inc, range(100_000)) >= mp.Pool items/s"
    r = row_of(R, "jpar", "map", variant="default map")
    m = row_of(R, "mp_pool", "map", variant="default map")
    kind = jpar_versions(R).get("default_map", "?")
    if m is None:
        return Verdict(target, ">= 1.0x mp_pool", "-", "n/a", "",
                       "mp_pool did not run the map workload in this run")
    if r is None:
        return Verdict(target, ">= 1.0x mp_pool", "-", "n/a", f"mp_pool {fmt(med(m))} items/s",
                       why_missing(R, "map"))
    ratio = med(r) / med(m)
    value = f"{fmt(med(r))} items/s = {ratio:.2f}x mp_pool"
    if "Pool" not in kind:
        return Verdict(target, ">= 1.0x mp_pool", value, "n/a", f"mp_pool {fmt(med(m))} items/s",
                       "jpar.multiprocessing.Pool is missing: this is jpar's chunked-task map")
    return Verdict(target, ">= 1.0x mp_pool", value, "PASS" if ratio >= 1.0 else "MISS",
                   f"mp_pool {fmt(med(m))} items/s", r["metric"])


def put_target(R):
    target = "put of a 1 GB float64 array >= 0.8 x memcpy"
    mem = row_of(R, "serial", "physical", "memcpy")
    puts = rows_of(R, "jpar", "transfer", "put() once")
    size = lambda r: r["metric"].split(" put()")[0]
    if mem is None:
        return Verdict(target, ">= 0.8 x memcpy", "-", "n/a", "",
                       "no memcpy row: add the 'physical' workload")
    goal = f">= {fmt(0.8 * med(mem))} GB/s (0.8 x memcpy {fmt(med(mem))} GB/s)"
    if not puts:
        return Verdict(target, goal, "-", "n/a", "", why_missing(R, "transfer", "put"))
    r = puts[-1]  # the largest size of the run
    frac = med(r) / med(mem)
    ctx = []
    for s in peers_of(R):
        x = [p for p in rows_of(R, s, "transfer", "put() once") if size(p) == size(r)]
        if x:
            ctx.append(f"{s} {fmt(med(x[0]) / med(mem))}x")
    note = f"{size(r)} array" + ("" if size(r) == "1 GB" else " (not 1 GB: quick sizes)")
    return Verdict(target, goal, f"{fmt(med(r))} GB/s = {frac:.2f}x memcpy",
                   "PASS" if frac >= 0.8 else "MISS", "; ".join(ctx), note)


TARGETS = [
    threshold("cold start: init() + first task <= 0.5 s", "coldstart", "start + first task result",
              None, "s", 0.5, True),
    threshold("no-op round trip, one at a time <= 100 us", "latency", "round trip",
              "submit+result", "us", 100, True),
    threshold("10,000 no-op tasks, submit all then get >= 20,000 tasks/s", "throughput",
              "no-op tasks", "individual submits", "tasks/s", 20_000, False),
    chain_target,
    pi_target,
    threshold("actor call round trip <= 100 us", "actors", "sequential", "call+wait", "us", 100,
              True, feature="actors"),
    threshold("10,000 pipelined actor calls >= 20,000 calls/s", "actors", "pipelined",
              "pipelined", "calls/s", 20_000, False, feature="actors"),
    pool_map_target,
    put_target,
    threshold("10,000 small put then get >= 20,000 ops/s", "putget", "small puts",
              "put all, then get all", "ops/s", 20_000, False, feature="put"),
]


def verdicts(R):
    return [t(R) for t in TARGETS]


def ratio_table(R):
    """Rows: every jpar row. Columns: each peer's median and jpar's advantage over it."""
    keys = {(r["workload"], r["metric"], r["variant"]) for r in R["rows"] if r["system"] == "jpar"}
    peers = [s for s in peers_of(R) if s != "serial" and any(
        r["system"] == s and (r["workload"], r["metric"], r["variant"]) in keys for r in R["rows"])]
    hdr = ["workload", "metric", "variant", "unit", "jpar"] + peers
    L = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in R["rows"]:
        if r["system"] != "jpar":
            continue
        cells = [r["workload"], r["metric"], r["variant"], r["unit"], f"**{fmt(med(r))}**"]
        for s in peers:
            p = row_of(R, s, r["workload"], r["metric"], r["variant"])
            p = p if p and p["metric"] == r["metric"] else None
            if p is None or not med(p) or not med(r):
                cells.append("-")
                continue
            ratio = med(p) / med(r) if r["better"] == "lower" else med(r) / med(p)
            cells.append(f"{fmt(med(p))} ({fmt(ratio)}x)")
        L.append("| " + " | ".join(cells) + " |")
    return "\n".join(L)


def target_table(vs):
    L = ["| target (from the issues) | goal here | jpar | status | peers in this run | note |",
         "|---|---|---|---|---|---|"]
    for v in vs:
        L.append(f"| {v.target} | {v.goal} | {v.value} | **{v.status}** | {v.peers} | {v.note} |")
    return "\n".join(L)


def render_summary(R):
    vs = verdicts(R)
    quick = R["cfg"].get("tput_tasks") != 10_000
    n_pass = sum(v.status == "PASS" for v in vs)
    n_miss = sum(v.status == "MISS" for v in vs)
    ver = jpar_versions(R)
    L = [f"# jpar vs peers: {R['tag']}\n",
         f"- command: `{' '.join(R['argv'])}`",
         f"- started {R['started']}, finished {R.get('finished', '(running)')}; loadavg at start "
         f"{tuple(round(x, 2) for x in R['loadavg_start'])}; machine: "
         f"{R['machine'].get('cpu_model')} x{R['machine']['cpu_count_logical']}",
         f"- jpar: {ver.get('jpar')} (git {ver.get('git')}), default map: "
         f"{ver.get('default_map', '?')}, missing: {ver.get('missing') or 'nothing'}",
         "- " + ("QUICK sizes (1,000 tasks, chain of 100, 100 MB arrays ...): the targets are "
                 "stated for the full sizes, so treat these verdicts as indicative only."
                 if quick else "full sizes."),
         f"- targets: {n_pass} PASS, {n_miss} MISS, {len(vs) - n_pass - n_miss} n/a\n",
         "## Targets\n", target_table(vs),
         "\n## jpar vs each peer (median, and in brackets how many times better jpar is: "
         ">1x = jpar better)\n",
         "The in-process `serial` baseline is left out here (see results.md; the pi speedup "
         "over serial is a target above).\n", ratio_table(R)]
    over = overhead_table(R)
    if over:
        L += ["\n## jpar on other engines: its overhead over the engine's own figure (same run)\n", over]
    left = [f"{x['workload']}: {', '.join(x['leftovers'])}" for x in R.get("runs", [])
            if x["system"] == "jpar" and x.get("leftovers")]
    if left:
        L.append("\n## jpar left processes behind after shutdown() (the harness killed them)\n")
        L += [f"- {x}" for x in left]
    fails = R.get("failures", [])
    if fails:
        L.append("\n## Failures\n")
        for f in fails:
            err = (f.get("error") or "").strip().splitlines()
            L.append(f"- {f['system']} / {f['workload']}: rc={f['rc']} timed_out={f['timed_out']}"
                     f" log={f['log']}: `{err[-1] if err else ''}`")
    return "\n".join(L) + "\n", [asdict(v) for v in vs]
