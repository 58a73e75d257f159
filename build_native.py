"""Hatchling build hook: compiles jpar's one C module, ``jpar/multiprocessing/_slotlock.c``.

Why a C module in a Python package: a ``jpar.multiprocessing.Lock`` records its holder (so a dead
holder's lock can be released), and doing that in Python costs a frame per call, 6x the stdlib's
Lock; in C it costs what the stdlib's does. The module is optional: where no C compiler is found
(or the platform is not Linux) the build goes on without it, says so, and the lock runs its
pure-Python path (same behaviour, slower). ``JPAR_NO_NATIVE=1`` skips it on purpose.

The compiler and flags are the ones this Python was built with (``sysconfig``), as setuptools
would use; the shared object lands next to its source, which is where an editable install imports
it from, and a regular wheel gets it through ``force_include``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = {"jpar/multiprocessing/_slotlock": "jpar/multiprocessing/_slotlock.c"}


def compile_module(root: Path, name: str, source: str) -> Path | None:
    """Build ``name`` from ``source`` under ``root`` if it is missing or older than its source;
    its path, or None (with the reason on stderr) where it cannot be built here."""
    src = root / source
    out = root / (name + sysconfig.get_config_var("EXT_SUFFIX"))
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    cmd = [*cc, *shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC"), "-shared", "-O2",
           "-Wall", "-I", sysconfig.get_paths()["include"], str(src), "-o", str(out) + ".tmp", "-lpthread"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        print(f"jpar: no C compiler ({cc[0]}) found: {name} not built; Lock uses its slower "
              "pure-Python path", file=sys.stderr)
        return None
    except subprocess.CalledProcessError as e:
        print(f"jpar: building {name} failed; Lock uses its slower pure-Python path:\n{e.stderr}",
              file=sys.stderr)
        return None
    os.replace(str(out) + ".tmp", out)
    return out


class NativeBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or not sys.platform.startswith("linux") or \
                os.environ.get("JPAR_NO_NATIVE") == "1":
            return
        root = Path(self.root)
        built = {name: compile_module(root, name, source) for name, source in SOURCES.items()}
        built = {name: path for name, path in built.items() if path is not None}
        if not built:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":   # an editable install imports them from the tree itself
            for path in built.values():
                build_data["force_include"][str(path)] = str(path.relative_to(root))
