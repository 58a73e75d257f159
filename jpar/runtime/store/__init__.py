"""The shared-memory object store: segments on this host, pulls from other hosts."""
