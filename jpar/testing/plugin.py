"""pytest plumbing of the conformance kit: the ``--jpar-backend`` option, the ``jpar_cluster``
fixture parametrized over backends, and the ``requires`` marker read from capability flags."""

from __future__ import annotations

import pytest

import jpar
from jpar import backends

__all__ = ["requires", "pytest_addoption", "pytest_generate_tests", "jpar_cluster", "INIT_ARGS"]

#: what a cluster of each backend is started with in the kit (two engines, as on a 2-core machine)
INIT_ARGS = {
    "native": {"num_engines": 2},
    "dask": {"num_engines": 2},
    "ray": {"num_cpus": 2},
}


def requires(flag: str):
    """Mark a test that needs capability ``flag`` (a field of jpar.backends.Capabilities)."""
    if flag not in backends.FEATURES:
        raise ValueError(f"unknown capability {flag!r}: one of {', '.join(backends.FEATURES)}")
    return pytest.mark.jpar_requires(flag)


def pytest_addoption(parser):
    group = parser.getgroup("jpar")
    group.addoption("--jpar-backend", action="append", default=None,
                    help="run the conformance kit on this backend (repeatable; default: every registered one)")


def pytest_configure(config):
    config.addinivalue_line("markers", "jpar_requires(flag): the test needs this backend capability")


def selected_backends(config) -> list[str]:
    return config.getoption("--jpar-backend") or backends.names()


def pytest_generate_tests(metafunc):
    if "jpar_cluster" in metafunc.fixturenames:
        names = selected_backends(metafunc.config)
        metafunc.parametrize("jpar_cluster", names, indirect=True, scope="module", ids=[f"on-{n}" for n in names])


@pytest.fixture(scope="module")
def jpar_cluster(request):
    """A cluster of one backend, shared by the module's tests on that backend: its ClusterContext."""
    name = request.param
    if jpar.is_initialized():
        jpar.shutdown()
    ctx = jpar.init(backend=name, **INIT_ARGS.get(name, {}))
    try:
        yield ctx
    finally:
        jpar.shutdown()


@pytest.fixture(autouse=True)
def _skip_without_capability(request):
    """A test marked ``requires(flag)`` is skipped on a backend whose Capabilities lack ``flag``,
    and the skip names the flag (the kit's only way to skip)."""
    mark = request.node.get_closest_marker("jpar_requires")
    if mark is None or "jpar_cluster" not in request.fixturenames:
        return
    request.getfixturevalue("jpar_cluster")
    b = backends.current()
    flag = mark.args[0]
    if not getattr(b.capabilities, flag):
        pytest.skip(f"capability {flag}=False on the {b.name} backend ({backends.FEATURES[flag][0]})")
