"""Which installed packages differ from the lock: what `make test-latest` runs with that CI doesn't.

Usage: python requirements/compare.py constraints.txt
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from packaging.markers import Marker


def locked(path: str) -> dict[str, str]:
    """Name -> version of every pin that applies to this interpreter."""
    pins = {}
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        m = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(?:;(.*))?$", line)
        if m and (not m.group(3) or Marker(m.group(3)).evaluate()):
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    pins = locked(sys.argv[1])
    rows = []
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name in pins and pins[name] != dist.version:
            rows.append((name, pins[name], dist.version))
    print(f"{len(rows)} installed package(s) differ from {sys.argv[1]}:")
    for name, was, now in sorted(rows):
        print(f"  {name:30} {was:>14} -> {now}")


if __name__ == "__main__":
    main()
