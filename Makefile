# Two commands from a fresh machine: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup lab bench clean browser docs labext

TOOLS := $(VENV)/.tools
# The JupyterLab sidebar, built from jupyter_ext/ (TypeScript) into jpar/labextension/ (not committed).
LABEXT := jpar/labextension/package.json
LABEXT_SRC := $(wildcard jupyter_ext/src/*.ts jupyter_ext/style/*) jupyter_ext/package.json jupyter_ext/tsconfig.json \
	jupyter_ext/yarn.lock jupyter_ext/.yarnrc.yml

# What building needs: hatchling and the JupyterLab build hook for the package, JupyterLab for jlpm
# and the extension builder. Node.js itself comes from the machine (apt's nodejs if it is missing).
$(TOOLS):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@command -v node >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm)
	$(PY) -m pip install --quiet 'hatchling>=1.21' editables 'hatch-jupyter-builder>=0.9' 'jupyterlab>=4,<5'
	touch $(TOOLS)

# npm install (offline-capable against the registry; first time ~3 min) and the prebuilt extension build.
$(LABEXT): $(LABEXT_SRC) | $(TOOLS)
	cd jupyter_ext && PATH=$(CURDIR)/$(VENV)/bin:$$PATH jlpm install && rm -f tsconfig.tsbuildinfo \
		&& PATH=$(CURDIR)/$(VENV)/bin:$$PATH jlpm build
	touch $(LABEXT)

# The package, editable, with its test extras; reinstalled when the extension is rebuilt so that
# share/jupyter/labextensions/jpar holds the new build (the wheel's shared-data mapping copies it).
$(STAMP): pyproject.toml $(LABEXT) | $(TOOLS)
	SKIP_JUPYTER_BUILDER=1 $(PY) -m pip install --quiet --no-build-isolation -e '.[test]'
	$(VENV)/bin/jupyter labextension list 2>&1 | grep -q 'jpar.*enabled.*OK'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

# Debian's chromium for the browser tests (never `playwright install`: no downloads from the internet)
browser:
	@test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

test: $(STAMP) browser
	$(PY) -m pytest -q --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks

# The docs site (Sphinx + MyST + myst-nb, docs/conf.py) -> build/docs/docs/index.html; the tests build it too.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html -c docs . build/docs

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 notebooks/

# Rebuild the sidebar now (make test and make demo rebuild it whenever jupyter_ext/ changed).
labext:
	rm -f $(LABEXT)
	$(MAKE) setup

BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# jpar beside its peers on ../shared/bench's workloads (benchmarks/README.md).
# Quick mode: make bench BENCH_ARGS=--quick; a subset: BENCH_ARGS='--systems jpar,ray --workloads latency'
bench: $(BENCH_STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info jpar/labextension jupyter_ext/lib jupyter_ext/node_modules jupyter_ext/tsconfig.tsbuildinfo
