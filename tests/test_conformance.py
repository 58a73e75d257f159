"""The conformance kit (jpar.testing) on every registered backend: what each must do, in one suite."""

from jpar.testing.conformance import *  # noqa: F401,F403
