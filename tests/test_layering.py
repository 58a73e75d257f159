"""The layering of DESIGN.md holds, and the public API is exactly what __all__ says."""

import ast
import pathlib

import jpar

PKG = pathlib.Path(jpar.__file__).parent

# module (or package prefix) -> imports it must not make
FORBIDDEN = {
    "scheduler": {"zmq", "threading", "asyncio", "psutil", "jpar.transport", "jpar.driver", "jpar.controller"},
    "scheduler_state": {"zmq", "threading", "asyncio", "psutil", "jpar.transport", "jpar.driver", "jpar.controller"},
    "scheduler_actors": {"zmq", "threading", "asyncio", "psutil", "jpar.transport", "jpar.driver", "jpar.controller"},
    "scheduler_rebalance": {"zmq", "threading", "asyncio", "psutil", "jpar.transport", "jpar.driver", "jpar.controller"},
    "protocol": {"zmq"},
    "serialization": {"zmq"},
    "engine": {"IPython", "ipywidgets", "ipykernel", "jpar.notebook"},
    "object_store": {"IPython", "ipywidgets", "jpar.notebook"},
    "store_segments": {"IPython", "ipywidgets", "jpar.notebook", "zmq"},
    "metrics": {"IPython", "ipywidgets", "jpar.notebook"},
    "pool": {"jpar.driver", "jpar.transport", "jpar.scheduler", "zmq"},
    "submitter": {"jpar.driver", "jpar.transport", "jpar.scheduler", "zmq"},
    "executor": {"jpar.driver", "jpar.transport", "jpar.scheduler", "zmq"},
    "multiprocessing": {"jpar.driver", "jpar.transport", "jpar.scheduler", "zmq"},
    "notebook": {"jpar.driver", "jpar.transport", "jpar.scheduler", "jpar.controller", "zmq"},
    "backends": {"jpar.driver", "jpar.transport", "jpar.scheduler", "zmq"},
}


def imports_of(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = "jpar" + ("." + node.module if node.module else "")
                if path.parent != PKG and node.level == 1:
                    base = "jpar." + path.parent.name + ("." + node.module if node.module else "")
                names.add(base)
                names.update(f"jpar.{a.name}" for a in node.names if not node.module)
            else:
                names.add(node.module)
    return names


def violates(name: str, forbidden: set[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def test_layering():
    problems = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        key = rel.parts[0].removesuffix(".py")
        forbidden = FORBIDDEN.get(key)
        if not forbidden:
            continue
        for name in imports_of(path):
            if violates(name, forbidden):
                problems.append(f"{rel} imports {name}")
    assert problems == []


def test_only_transport_imports_zmq():
    users = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if "zmq" in {n.split(".")[0] for n in imports_of(p)}]
    assert users == ["transport.py"]


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
