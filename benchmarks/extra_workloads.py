"""Workloads jpar's targets need that the shared harness lacks, registered into it at run time.

    putget   N small objects: put each one, then get them back (jpar target:
             10,000 small put then get >= 20,000 ops/s, one op = one put plus its get)

``register()`` adds each workload to the shared registries (``bench.ALL_WORKLOADS``,
``bench.TITLES``, ``workloads.WORKLOADS``) and its sizes to ``bench.FULL`` / ``bench.QUICK``,
in the parent and in every child, so the shared ``main_parent``/``run_child`` run them like
their own. The shared files are never edited.
"""
from __future__ import annotations

import statistics

import workloads as W  # the shared harness's workloads module

SIZES_FULL = dict(putget_ops=10_000, putget_reps=5, putget_warmup=200, putget_bytes=64)
SIZES_QUICK = dict(putget_ops=1_000, putget_reps=2, putget_warmup=100, putget_bytes=64)
TITLES = {"putget": "9. Small objects: put N small (64-byte) objects, then get them back "
                    "(one op = one put + its get)"}


def _accessors(ad):
    """(put, get_one, get_all, free_all) for this adapter's put refs, or None if unknown.

    The shared adapters have no 'get of a put ref' method: for jpar, Ray and Dask a put
    ref is a handle that result()/gather() resolve; serial's put is the object itself;
    ipyparallel's is a name in engine 0's namespace that has to be pulled. Dask's put
    (scatter) names objects by a hash of their content by default, so putting equal
    objects again while the last ones are being released races ("already forgotten"):
    here it scatters with hash=False, a fresh key per put, like the other systems."""
    if ad.name == "serial":
        return ad.put, (lambda r: r), list, (lambda rs: None)
    if ad.name == "ipyparallel":
        def free_all(rs):
            names = [r.name for r in rs]
            ad.dv0.execute(f"for _k in {names!r}: globals().pop(_k, None)", block=True)
        return (ad.put, (lambda r: ad.dv0.pull(r.name, block=True)),
                (lambda rs: list(ad.dv0.pull([r.name for r in rs], block=True))), free_all)
    if ad.name in ("jpar", "ray", "ray_nice0", "dask"):
        def free_all(rs):
            for r in rs:
                ad.free(r)
        put = (lambda o: ad.client.scatter(o, hash=False)) if ad.name == "dask" else ad.put
        return put, ad.result, ad.gather, free_all
    return None


def wl_putget(ad, cfg):
    if "put" not in ad.caps:
        return []
    acc = _accessors(ad)
    if acc is None:
        return []
    put, get_one, get_all, free_all = acc
    rec = W.Recorder()
    N, B = cfg["putget_ops"], cfg["putget_bytes"]
    # bytes, not tuples: Dask's scatter() would scatter a tuple's items one by one
    objs = [i.to_bytes(8, "little") * (B // 8) for i in range(N)]
    warm = objs[:cfg["putget_warmup"]]
    refs = [put(o) for o in warm]
    assert get_all(refs) == warm
    assert get_one(put(warm[0])) == warm[0]
    free_all(refs)
    del refs
    rows = []

    bulk, put_phase = [], []
    for _ in W.reps(cfg["putget_reps"]):
        def one():
            t0 = W.perf()
            refs = [put(o) for o in objs]
            t1 = W.perf()
            out = get_all(refs)
            t2 = W.perf()
            return t0, t1, t2, out, refs
        t0, t1, t2, out, refs = rec.rep(one)
        assert out == objs, "wrong objects back"
        free_all(refs)
        del refs, out
        bulk.append(N / (t2 - t0))
        put_phase.append(N / (t1 - t0))
    rows.append(W.row(f"{N} small puts, then one get of all refs", "put all, then get all",
                      "ops/s", "higher", bulk, rec.take(),
                      put_phase_rate_median=round(statistics.median(put_phase))))

    seq = []
    for _ in W.reps(cfg["putget_reps"]):
        def one():
            t0 = W.perf()
            for o in objs:
                assert get_one(put(o)) == o
            return W.perf() - t0
        seq.append(N / rec.rep(one))
    rows.append(W.row(f"{N} x (put one small object, get it back)", "put then get, one at a time",
                      "ops/s", "higher", seq, rec.take()))
    return rows


WORKLOADS = {"putget": wl_putget}


def register(bench):
    """Add this module's workloads and sizes to the shared harness (idempotent)."""
    for name, fn in WORKLOADS.items():
        W.WORKLOADS[name] = fn
        if name not in bench.ALL_WORKLOADS:
            bench.ALL_WORKLOADS.append(name)
    bench.TITLES.update(TITLES)
    for k, v in SIZES_FULL.items():
        bench.FULL.setdefault(k, v)
    for k, v in SIZES_QUICK.items():
        bench.QUICK.setdefault(k, v)
