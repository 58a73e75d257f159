"""The chaos suite: SIGKILL engines, actor processes and detached heads mid-workload, and count.

``python -m tests.chaos.run --rounds 100`` (``make chaos``) runs the full suite;
``tests/chaos/test_chaos_quick.py`` runs a few rounds in ``make test``. See docs/internals/testing.md.
"""
