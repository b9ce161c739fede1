# Two commands a fresh machine needs: `make demo` and `make test`.
# Both create the environment first if it is missing (Python venv + npm packages).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test wheel-check lint bench install browser clean

install: $(STAMP)

# torch is installed first and pinned to the CPU build present on the machine: an unpinned
# torch pulls several GB of CUDA wheels.
$(STAMP): pyproject.toml package.json package-lock.json Makefile
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ray,privacy,flower]'
	npm ci --no-audit --no-fund
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/blockfl demo

# headless Chromium and its driver for the explorer's browser tests: Debian packages, installed
# when missing (CI runs as root; elsewhere the browser tests skip without them)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -q && apt-get install -y -q chromium chromium-driver; } || \
	  echo "could not install chromium chromium-driver: the browser tests will skip"

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

# what `pip install .` gives: the wheel alone in a fresh venv, every --help and a demo round
wheel-check:
	scripts/check_wheel.sh

# Flower (the [bench] extra) after torch, so its dependencies never replace the CPU torch
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) node_modules runs
