"""The layering of DESIGN.md holds, and the public API is exactly what __all__ says."""

import ast
import pathlib

import jpar

PKG = pathlib.Path(jpar.__file__).parent

# Layers, from the user down: the public API (what users call), the seam (jpar.backends), the
# backends (native: jpar.runtime). Neutral modules (refs, options, errors, config, context,
# pickling, exceptions) are shared by all.
PUBLIC_API = {"jpar.api", "jpar.actor", "jpar.remote_function", "jpar.hooks", "jpar.util", "jpar.pool",
              "jpar.submitter", "jpar.process_executor", "jpar.multiprocessing", "jpar.joblib", "jpar.futures",
              "jpar.notebook", "jpar.trace"}
NATIVE = {"jpar.runtime", "jpar.backends.native"}
PURE_HEAD = {"zmq", "threading", "asyncio", "psutil", "jpar.runtime.wire.transport", "jpar.runtime.driver",
             "jpar.runtime.head.controller"}

# module (dotted, or a package prefix) -> imports it must not make
FORBIDDEN = {
    # above the seam: no backend's internals, no wire
    **{m: NATIVE | {"zmq"} for m in PUBLIC_API},
    "jpar.refs": NATIVE | {"zmq"},
    "jpar.context": NATIVE | {"zmq"},
    "jpar.pickling": NATIVE | {"zmq"} | PUBLIC_API,
    "jpar.backends.__init__": NATIVE | {"zmq"} | PUBLIC_API,
    # the other engines' backends: neutral modules and the seam only
    "jpar.backends.dask": NATIVE | {"zmq", "ray"} | PUBLIC_API,
    "jpar.backends.ray": NATIVE | {"zmq", "dask", "distributed"} | PUBLIC_API,
    # the native runtime never imports the public API back
    "jpar.runtime": PUBLIC_API | {"IPython", "ipywidgets", "ipykernel"},
    # the scheduler is a pure state machine
    "jpar.runtime.head.scheduler": PURE_HEAD,
    "jpar.runtime.head.scheduler_state": PURE_HEAD,
    "jpar.runtime.head.scheduler_actors": PURE_HEAD,
    "jpar.runtime.head.scheduler_rebalance": PURE_HEAD,
    "jpar.runtime.head.scheduler_placement": PURE_HEAD,
    "jpar.runtime.head.scheduler_chaining": PURE_HEAD,
    "jpar.runtime.head.task_summary": PURE_HEAD,      # the scheduler calls it in its moves
    "jpar.runtime.wire.protocol": {"zmq"},
    "jpar.runtime.wire.serialization": {"zmq"},
    "jpar.runtime.store.segments": {"zmq"},
}


def imports_of(path: pathlib.Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                names.add(mod)
                names.update(f"{mod}.{a.name}" for a in node.names)
            else:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def violates(name: str, forbidden: set[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts)


def rules_for(name: str) -> set[str]:
    out: set[str] = set()
    for key, forbidden in FORBIDDEN.items():
        if name == key or name.startswith(key + "."):
            out |= forbidden
    return out


def test_layering():
    problems = []
    for path in PKG.rglob("*.py"):
        name = module_name(path)
        forbidden = rules_for(name)
        for imported in imports_of(path):
            if violates(imported, forbidden):
                problems.append(f"{name} imports {imported}")
    assert problems == []


def test_the_rules_catch_what_they_forbid():
    """The resolver sees relative imports as the absolute names the rules use."""
    names = imports_of(PKG / "runtime" / "head" / "controller.py")
    assert "jpar.runtime.wire.protocol" in names and "jpar.config" in names
    assert violates("jpar.runtime.driver.driver", rules_for("jpar.api"))
    assert violates("jpar.api", rules_for("jpar.runtime.driver.driver"))
    assert not violates("jpar.backends", rules_for("jpar.api"))


def test_importing_jpar_imports_no_backend_engine():
    import subprocess
    import sys

    code = ("import sys, jpar; print(sorted(m for m in ('ray', 'dask', 'distributed', 'jpar.backends.native', "
            "'jpar.runtime.head.controller') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_only_transport_imports_zmq():
    users = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if "zmq" in {n.split(".")[0] for n in imports_of(p)}]
    assert users == ["runtime/wire/transport.py"]


def test_only_config_reads_settings_from_the_environment():
    readers = []
    for p in PKG.rglob("*.py"):
        text = p.read_text()
        if "os.environ.get(\"JPAR_" in text or "os.environ[\"JPAR_" in text or "getenv(\"JPAR_" in text:
            readers.append(str(p.relative_to(PKG)))
    assert readers == []
    assert "os.environ.get(f.metadata" in (PKG / "config.py").read_text()


def test_public_api_matches_all():
    public = {n for n in dir(jpar) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(jpar, n)).__name__ == "module"}
    assert set(jpar.__all__) - {"__version__"} <= public
    assert public - modules - set(jpar.__all__) == set()


def test_every_module_says_its_job():
    missing = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
               if p.name != "__main__.py" and not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []


def test_importing_jpar_loads_no_notebook_stack():
    import subprocess
    import sys

    code = "import sys, jpar; print(sorted(m for m in ('IPython', 'ipywidgets', 'ipykernel') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
