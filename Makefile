# One entry point for humans and CI. `make test` creates .venv on first use and
# reinstalls only when pyproject.toml changes (the stamp file records that).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test demo lint bench bench-quick bench-batch clean browser screenshots soak

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo,test,batch,ray]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for tests/test_demo_browser.py: installed with apt only when
# missing and running as root; never fails the build (the test then skips, saying why).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	      || echo "note: could not install chromium; the browser test will be skipped"; \
	  else echo "note: no chromium and not root: the browser test will be skipped"; fi; }

test: install browser
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/explainzoo demo

# The README's screenshots (docs/img/): the browser test saves them when asked to.
screenshots: install browser
	EXPLAINZOO_SCREENSHOTS=1 $(PY) -m pytest -q tests/test_demo_browser.py

lint: install
	$(VENV)/bin/ruff check .

# Benchmarks against pytorch-grad-cam, Captum and torchcam (benchmarks/RESULTS.md).
# The bench extra goes into the same .venv, with its own stamp. On a shared, loaded
# machine: make bench BENCH_ARGS="--threads 1 --clock cpu" (how RESULTS.md was made).
BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_ARGS  ?=

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[demo,test,batch,ray,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(PY) -m benchmarks.run --quick $(BENCH_ARGS)

# Dataset jobs: throughput against a bare forward and pytorch-grad-cam, RSS, Ray scaling
# (benchmarks/RESULTS_batch.md).
bench-batch: $(BENCH_STAMP)
	$(PY) -m benchmarks.batch $(BENCH_ARGS)

# Public-host soak (issue 11): 1 000 mixed requests from 4 clients through the served app;
# `python -m benchmarks.soak heaviest` times the heaviest allowed request per backbone.
soak: $(BENCH_STAMP)
	$(PY) -m benchmarks.soak soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
