# Two commands from a fresh machine: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup lab bench clean browser docs labext

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
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
	$(PY) -m pip install --quiet jupyterlab
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 notebooks/

# Rebuild the prebuilt JupyterLab sidebar (jupyter_ext/ -> jpar/labextension/, committed) with jlpm, then
# reinstall so share/jupyter/labextensions/jpar picks it up. Only developers need Node for this.
labext: $(STAMP)
	cd jupyter_ext && PATH=$(CURDIR)/$(VENV)/bin:$$PATH jlpm install && rm -f tsconfig.tsbuildinfo && PATH=$(CURDIR)/$(VENV)/bin:$$PATH jlpm build
	$(PY) -m pip install --quiet --no-deps -e .
	$(VENV)/bin/jupyter labextension list 2>&1 | grep -q 'jpar.*enabled.*OK'

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
	rm -rf $(VENV) build dist *.egg-info
