# Two commands from a fresh machine: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup lab bench clean browser sshd docs labext fuzz lock test-latest mutants mutants-sample mutation-copy mutation-sample-run

# Every install below is pinned by the checked-in lock (pip constraints), so a fresh machine gets
# what CI passed with; pyproject.toml keeps ranges for users. `make lock` refreshes it,
# `make test-latest` runs the suite on the newest releases instead.
LOCK := constraints.txt
PIPC := -c $(LOCK)

TOOLS := $(VENV)/.tools
# The JupyterLab sidebar, built from jupyter_ext/ (TypeScript) into jpar/labextension/ (not committed).
LABEXT := jpar/labextension/package.json
LABEXT_SRC := $(wildcard jupyter_ext/src/*.ts jupyter_ext/style/*) jupyter_ext/package.json jupyter_ext/tsconfig.json \
	jupyter_ext/yarn.lock jupyter_ext/.yarnrc.yml

# What building needs: hatchling and the JupyterLab build hook for the package, JupyterLab for jlpm
# and the extension builder. Node.js itself comes from the machine (apt's nodejs if it is missing).
$(TOOLS): $(LOCK) requirements/build.in
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIPC) pip
	@command -v node >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm)
	$(PY) -m pip install --quiet $(PIPC) -r requirements/build.in
	touch $(TOOLS)

# npm install (offline-capable against the registry; first time ~3 min) and the prebuilt extension build.
$(LABEXT): $(LABEXT_SRC) | $(TOOLS)
	cd jupyter_ext && PATH=$(CURDIR)/$(VENV)/bin:$$PATH jlpm install && rm -f tsconfig.tsbuildinfo \
		&& PATH=$(CURDIR)/$(VENV)/bin:$$PATH jlpm build
	touch $(LABEXT)

# The package, editable, with its test extras; reinstalled when the extension is rebuilt so that
# share/jupyter/labextensions/jpar holds the new build (the wheel's shared-data mapping copies it).
$(STAMP): pyproject.toml build_native.py jpar/multiprocessing/_slotlock.c $(LOCK) $(LABEXT) | $(TOOLS)
	SKIP_JUPYTER_BUILDER=1 $(PY) -m pip install --quiet $(PIPC) --no-build-isolation -e '.[test]'
	$(VENV)/bin/jupyter labextension list 2>&1 | grep -q 'jpar.*enabled.*OK'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

# Debian's chromium for the browser tests (never `playwright install`: no downloads from the internet)
browser:
	@test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# OpenSSH (server and client) for the SSH launcher's test, which runs a throwaway sshd in a network namespace
sshd:
	@test -x /usr/sbin/sshd -a -x /usr/bin/ssh || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
		openssh-server openssh-client)

PYTEST_ARGS := -q --durations=30 --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks

test: $(STAMP) browser sshd
	$(PY) -m pytest $(PYTEST_ARGS)

# Regenerate the lock from pyproject.toml's ranges and requirements/*.in (newest releases that fit,
# for every Python and platform the package supports); commit the result after `make test` passes.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(if $(wildcard $(LOCK)),$(PIPC)) -r requirements/tools.in
	$(VENV)/bin/uv pip compile --quiet --universal --python-version 3.10 --custom-compile-command "make lock" --annotation-style line \
		pyproject.toml requirements/build.in requirements/tools.in \
		--all-extras -o $(LOCK)

# The whole suite on the newest releases, unpinned, in a venv of its own (.venv-latest): what an
# upstream release would break shows up here on purpose, not in a landing. Ends by listing the
# packages whose newest release differs from the lock.
LATEST := .venv-latest
test-latest: $(LABEXT) browser sshd
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -r requirements/build.in
	SKIP_JUPYTER_BUILDER=1 $(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager \
		--no-build-isolation -e '.[test]'
	$(LATEST)/bin/python requirements/compare.py $(LOCK)
	$(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

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
	$(PY) -m pip install --quiet $(PIPC) -e '.[bench]'
	touch $(BENCH_STAMP)

# jpar beside its peers on ../shared/bench's workloads (benchmarks/README.md).
# Quick mode: make bench BENCH_ARGS=--quick; a subset: BENCH_ARGS='--systems jpar,ray --workloads latency'
bench: $(BENCH_STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# The protocol fuzzer, long run (make test runs a 5 s flood and a few hundred decoder examples):
# prints messages sent, tasks served and the head's peak RSS. make fuzz FUZZ_SECONDS=300 for longer.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	JPAR_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -s tests/test_fuzz_protocol.py --hypothesis-profile=long

clean:
	rm -rf $(VENV) $(LATEST) build dist *.egg-info jpar/labextension jupyter_ext/lib jupyter_ext/node_modules jupyter_ext/tsconfig.tsbuildinfo

# The chaos suite in full (docs/internals/testing.md): 100 rounds of SIGKILLs of engines, actor processes and
# detached heads during mixed workloads, counted as a table. CHAOS_ARGS='--seed N' replays a run.
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(PY) -m tests.chaos.run --rounds 100 $(CHAOS_ARGS)
	$(PY) -m tests.chaos.queues --rounds 40

# Mutation testing (mutmut, config in pyproject.toml [tool.mutmut]) over the scheduler, driver, engine and
# notebook routing, in a copy under build/mutation so the tree is never mutated; not part of `make test`.
# Every scheduler mutant runs (or those MUTANTS='glob' names); MUTANT_SAMPLE=N also runs N mutants of each of
# the driver, engine and routing, drawn with MUTANT_SEED (default 1), against a focused set of integration
# tests each (tests/mutation_sample.py: -x, a time limit per mutant, equivalents listed with their reason in
# tests/mutation_equivalents.txt), then prints the sampled score per module. `make mutants-sample` runs only
# that sample (no mutmut test pass): about 10-20 s a mutant.
MUTANTS ?=
MUTANT_SAMPLE ?=
MUTANT_SEED ?= 1
MUTATION_STAMP := $(VENV)/.installed-mutation
MUTMUT := $(CURDIR)/$(VENV)/bin/mutmut
MUTATION_DIR := build/mutation
SAMPLE_PY := $(CURDIR)/$(PY) tests/mutation_sample.py
SAMPLE_ARGS = --json sampled.jsonl --sample $(MUTANT_SAMPLE) --seed $(MUTANT_SEED) \
	--equivalent tests/mutation_equivalents.txt
ROUTING_TESTS := tests/test_output_routing.py tests/test_magics.py tests/test_mutation_killers.py
DRIVER_TESTS := tests/test_driver_semantics.py tests/test_mutation_killers.py tests/test_core.py \
	tests/test_lifecycle.py::test_a_killed_local_head_leaves_no_segment_once_its_driver_closes
ENGINE_TESTS := tests/test_engine_processes.py tests/test_driver_semantics.py tests/test_mutation_killers.py \
	tests/test_core.py tests/test_engine_children.py::test_forked_copy_of_the_engine_exits_when_the_task_returns \
	tests/test_engine_children.py::test_processes_left_by_tasks_do_not_survive_shutdown \
	tests/test_lifecycle.py::test_gpu_tasks_see_only_their_devices \
	tests/test_nested_tasks.py::test_fan_out_parents_sharing_two_engines_never_hang

$(MUTATION_STAMP): $(STAMP)
	SKIP_JUPYTER_BUILDER=1 $(PY) -m pip install --quiet $(PIPC) --no-build-isolation -e '.[mutation]'
	touch $(MUTATION_STAMP)

mutation-copy:
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR)
	tar --exclude=__pycache__ --exclude=jpar/labextension -cf - jpar tests pyproject.toml | tar -xf - -C $(MUTATION_DIR)

mutants: $(MUTATION_STAMP) mutation-copy
	cd $(MUTATION_DIR) && $(MUTMUT) run $(or $(MUTANTS),'jpar.runtime.head.scheduler*')
	cd $(MUTATION_DIR) && $(MUTMUT) results --all true > results.txt; \
		for s in killed survived timeout "no tests" suspicious "not checked"; do \
			printf 'jpar.runtime.head.scheduler %-12s %s\n' "$$s" "$$(grep 'jpar.runtime.head.scheduler' results.txt | grep -c ": $$s$$")"; done
	@echo "per-mutant results: $(MUTATION_DIR)/results.txt; show one with: cd $(MUTATION_DIR) && $(MUTMUT) show NAME"
	if [ -n "$(MUTANT_SAMPLE)" ]; then $(MAKE) --no-print-directory mutation-sample-run; fi

mutants-sample: $(MUTATION_STAMP) mutation-copy
	cd $(MUTATION_DIR) && $(SAMPLE_PY) --generate > generate.log
	$(MAKE) --no-print-directory mutation-sample-run MUTANT_SAMPLE=$(or $(MUTANT_SAMPLE),40)

mutation-sample-run:
	cd $(MUTATION_DIR) && $(SAMPLE_PY) $(SAMPLE_ARGS) --module jpar.runtime.driver.driver $(DRIVER_TESTS)
	cd $(MUTATION_DIR) && $(SAMPLE_PY) $(SAMPLE_ARGS) --module jpar.runtime.engine.engine $(ENGINE_TESTS)
	cd $(MUTATION_DIR) && $(SAMPLE_PY) $(SAMPLE_ARGS) --module jpar.notebook.routing $(ROUTING_TESTS)
	@echo "sampled mutation score (seed $(MUTANT_SEED); diffs of survivors in $(MUTATION_DIR)/sampled.jsonl):"
	@cd $(MUTATION_DIR) && $(SAMPLE_PY) --summary sampled.jsonl

