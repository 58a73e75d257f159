"""joblib's "jpar" backend against a real two-engine cluster."""

import os
import time

import joblib
import pytest
from joblib import Parallel, delayed

import jpar
import jpar.joblib as jjoblib

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("cluster")]  # conftest: one cluster per module


def sqr(x):
    return x * x


def pid_after(t):
    time.sleep(t)
    return os.getpid()


def fail_on(x):
    if x == 5:
        raise KeyError(x)
    return x


def test_registered_on_import_without_patching():
    from joblib.parallel import BACKENDS

    assert BACKENDS["jpar"] is jjoblib.JparBackend
    before = dict(vars(joblib.Parallel))
    jjoblib.register()                       # idempotent
    assert BACKENDS["jpar"] is jjoblib.JparBackend
    assert dict(vars(joblib.Parallel)) == before


def test_parallel_config():
    with joblib.parallel_config(backend="jpar"):
        assert Parallel()(delayed(sqr)(i) for i in range(100)) == [i * i for i in range(100)]
        assert Parallel(n_jobs=2)(delayed(sqr)(i) for i in range(10)) == [i * i for i in range(10)]
        assert Parallel(n_jobs=1)(delayed(sqr)(i) for i in range(3)) == [0, 1, 4]


def test_parallel_backend_context_manager():
    with joblib.parallel_backend("jpar"):
        assert Parallel(n_jobs=-1)(delayed(sqr)(i) for i in range(20)) == [i * i for i in range(20)]


def test_backend_argument_and_engines_used():
    pids = Parallel(backend="jpar", n_jobs=-1, batch_size=1)(delayed(pid_after)(0.1) for _ in range(8))
    assert len(set(pids)) == 2 and os.getpid() not in pids


def test_effective_n_jobs_is_the_clusters_cpus():
    b = jjoblib.JparBackend()
    assert b.effective_n_jobs(-1) == 2
    assert b.effective_n_jobs(1) == 1
    with pytest.raises(ValueError):
        b.effective_n_jobs(0)


def test_exception_is_the_users_type():
    with pytest.raises(KeyError):
        Parallel(backend="jpar", n_jobs=2)(delayed(fail_on)(i) for i in range(20))
    # and the backend recovers for the next call
    assert Parallel(backend="jpar", n_jobs=2)(delayed(sqr)(i) for i in range(4)) == [0, 1, 4, 9]


def test_return_as_generator():
    gen = Parallel(backend="jpar", n_jobs=2, return_as="generator")(delayed(sqr)(i) for i in range(30))
    assert list(gen) == [i * i for i in range(30)]
    gen = Parallel(backend="jpar", n_jobs=2, return_as="generator_unordered")(delayed(sqr)(i) for i in range(30))
    assert sorted(gen) == [i * i for i in range(30)]


def test_notebook_style_lambda():
    f = lambda x: x + 1  # noqa: E731  (pickled by value, as a notebook's would be)
    assert Parallel(backend="jpar", n_jobs=2)(delayed(f)(i) for i in range(5)) == [1, 2, 3, 4, 5]
