"""The conformance kit: one pytest suite that every backend must pass.

Run it against the backends installed here::

    pytest -p jpar.testing.plugin --pyargs jpar.testing.conformance          # every registered backend
    pytest -p jpar.testing.plugin --pyargs jpar.testing.conformance --jpar-backend dask

or from a project's own tests (``from jpar.testing.conformance import *`` in a test module, with
``pytest_plugins = ["jpar.testing.plugin"]`` in its top-level conftest.py, as jpar's own
``tests/test_conformance.py`` does). The ``jpar_cluster`` fixture
starts one cluster per backend (``jpar.init(backend=name)``, two engines) and shuts it down after
that backend's tests. A test that needs a capability some backend lacks is marked
``@requires("flag")`` and is skipped, naming the flag, on a backend whose Capabilities lack it: the
kit's only way to skip. ``test_declared_gaps_raise_unsupported_on_backend`` then checks that using
each missing feature raises :class:`jpar.UnsupportedOnBackend`, so a declared gap is tested too.
"""

from .plugin import requires

__all__ = ["requires"]
