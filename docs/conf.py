"""Sphinx configuration of jpar's documentation site (MyST Markdown + myst-nb; why: internals/docs-tooling.md).

The source directory is the repository root and this directory only holds the configuration, so that a
relative link means the same thing on GitHub and on the site (`../notebooks/01_quickstart.ipynb` from a
page here, `../docs/concepts.md` from a notebook):

    python -m sphinx -W --keep-going -b html -c docs . build/docs     # or: make docs

Notebooks are rendered with the outputs stored in them (they are executed by nbval in `make test`,
never during the docs build). The reference pages under reference/ are written by generate.py.
"""

from __future__ import annotations

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The GitHub org/repo the Binder badge and links point to: a placeholder until the project is published.
# The README's badge must use the same value (tests/test_binder.py checks it).
GITHUB_REPO = "jpar-org-placeholder/jpar"

project = "jpar"
author = "the jpar authors"
copyright = "the jpar authors"
release = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)

extensions = ["myst_nb"]
root_doc = "docs/index"
include_patterns = ["docs/**.md", "notebooks/[0-9]*.ipynb", "benchmarks/README.md"]
exclude_patterns = [".venv", "build", "node_modules", "**/.ipynb_checkpoints", "test-artifacts"]

myst_heading_anchors = 3               # `page.md#a-heading` links resolve (and are checked)
myst_enable_extensions = ["colon_fence"]
nb_execution_mode = "off"              # render stored outputs; nbval executes the notebooks
nb_merge_streams = True

html_theme = "alabaster"
html_title = f"jpar {release}"
html_theme_options = {"description": "Interactive parallel computing from Jupyter", "fixed_sidebar": True}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}

# Pages the toctree lists that another change is still writing: while one is absent its toctree
# line is dropped (see _pending_pages); once it exists it is built and checked like any page.
PENDING_PAGES: list[str] = []


def newest_benchmark_run() -> pathlib.Path | None:
    """The benchmark run worth publishing: results/<tag>/ with a summary.md (written when a run
    finishes), `*-quick` scratch runs (ignored by git) excluded; the one that checks the most targets
    (a run of one workload must not hide the all-workloads one), newest by `started` among those."""
    def started(run: pathlib.Path) -> str:
        try:
            return json.loads((run / "results.json").read_text()).get("started", "")
        except (OSError, ValueError):
            return ""

    runs = [p.parent for p in (ROOT / "benchmarks" / "results").glob("*/summary.md")
            if not p.parent.name.endswith("-quick")]
    def checked(run: pathlib.Path) -> int:
        text = (run / "summary.md").read_text()
        return text.count("**PASS**") + text.count("**MISS**")

    return max(runs, key=lambda run: (checked(run), started(run), run.name), default=None)


def _benchmark_figures(app, docname, source):
    """docs/benchmarks.md: replace the marker with the newest run's summary.md, headings one level down."""
    if docname != "docs/benchmarks":
        return
    run = newest_benchmark_run()
    if run is None:
        figures = "No benchmark run has been committed yet: run `make bench` (below).\n"
    else:
        summary = (run / "summary.md").read_text()
        figures = (f"From `benchmarks/results/{run.name}/summary.md`:\n\n"
                   + re.sub(r"^(#+) ", r"#\1 ", summary, flags=re.M))
    source[0] = source[0].replace("<!-- latest-benchmark-summary -->", figures)


def _pending_pages(app, docname, source):
    if docname == "docs/index":
        for page in PENDING_PAGES:
            if not (ROOT / "docs" / f"{page}.md").exists():
                source[0] = re.sub(rf"^{page}\n", "", source[0], flags=re.M)


def _root_redirect(app, exception):
    """The site's entry page is docs/index.html; index.html at the top redirects to it."""
    if exception is None and app.builder.format == "html":
        (pathlib.Path(app.outdir) / "index.html").write_text(
            '<!DOCTYPE html><meta charset="utf-8"><title>jpar</title>'
            '<meta http-equiv="refresh" content="0; url=docs/index.html"><a href="docs/index.html">jpar docs</a>\n')


def setup(app):
    app.connect("source-read", _benchmark_figures)
    app.connect("source-read", _pending_pages)
    app.connect("build-finished", _root_redirect)
    return {"parallel_read_safe": True}
