"""The docs stay true: generated pages match the code, README code runs, links resolve."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent


def test_generated_reference_pages_are_current():
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _checked(code: str) -> tuple[str, int]:
    """The code with each ``expression   # value[: comment]`` line turned into an assertion that the
    expression equals the value the README promises; returns (code, number of such lines)."""
    import ast

    lines, checks = [], 0
    for line in code.splitlines():
        m = re.match(r"^(?P<expr>[^#]+?)\s+#\s*(?P<val>[^:]+?)(?::.*)?$", line)
        if m:
            try:
                ast.parse(m["expr"], mode="eval")
                value = ast.literal_eval(m["val"])
            except (SyntaxError, ValueError):
                pass
            else:
                line = f"assert ({m['expr']}) == {value!r}, {m['expr']!r}"
                checks += 1
        lines.append(line)
    return "\n".join(lines), checks


@pytest.mark.timeout(120)
def test_readme_python_blocks_run_and_give_the_values_shown():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    code, checks = _checked("\n".join(blocks))
    assert checks >= 2, "the README's example shows its results as '# value' comments"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100, cwd=ROOT)
    assert out.returncode == 0, out.stderr


# Files another change produces (the dashboard's browser test writes the screenshot): a link to one
# may dangle only while it does not exist. Remove an entry once the file is committed.
PENDING_FILES: set = set()


def _markdown_sources():
    for md in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        yield md, md.read_text()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        yield nb, "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def test_relative_links_resolve():
    broken = []
    for md, text in _markdown_sources():
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            path = (md.parent / target).resolve()
            if not path.exists() and path not in PENDING_FILES:
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert broken == []


@pytest.mark.timeout(120)
def test_docs_site_builds_without_warnings(tmp_path):
    # Sphinx + MyST + myst-nb (docs/conf.py): -W turns every warning into an error, and MyST warns on
    # every relative link or #anchor that resolves to no page or heading: the link check of the site.
    # Notebooks are rendered from their stored outputs, not executed.
    out = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
                          "-c", "docs", ".", str(tmp_path / "html")], capture_output=True, text=True, timeout=110,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-5000:]
    html = tmp_path / "html"
    for page in ["index.html", "docs/index.html", "docs/getting-started.html", "docs/compat-ray.html",
                 "docs/reference/configuration.html", "notebooks/01_quickstart.html", "benchmarks/README.html"]:
        assert (html / page).exists(), page
    for nb in (ROOT / "notebooks").glob("[0-9]*.ipynb"):
        assert (html / "notebooks" / f"{nb.stem}.html").exists(), nb.name
    assert "<table" in (html / "docs" / "benchmarks.html").read_text(), "the latest benchmark figures are missing"


def _requirement_names(specs) -> set:
    return {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}


def test_the_lock_pins_every_declared_dependency():
    """Adding a dependency to pyproject.toml or requirements/*.in without `make lock` fails here."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= _requirement_names(extra)
    for infile in (ROOT / "requirements").glob("*.in"):
        declared |= _requirement_names(line for line in infile.read_text().splitlines()
                                       if line.strip() and not line.startswith("#"))
    pinned = {m.group(1).lower().replace("_", "-") for m in
              re.finditer(r"^([A-Za-z0-9_.\-]+)==", (ROOT / "constraints.txt").read_text(), re.M)}
    declared = {re.sub(r"[-_.]+", "-", n) for n in declared}
    assert declared - pinned == set(), "run `make lock` and commit constraints.txt"
