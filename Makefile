# Two commands do all the set-up on a fresh machine: `make serve` and `make test`.
# Each creates .venv and installs into it on first use (and again when pyproject.toml changes).
# `make bench` (full, < 15 min) and `make bench-quick` (< 3 min) also install the `bench`
# extra; the harness installs nginx-light and wrk with apt-get when run as root.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The service needs only its runtime packages (with S3 support, so `--storage s3://...`
# works from a fresh clone); the tests need the dev extra too.
SERVE_STAMP := $(VENV)/.serve-stamp
STAMP := $(VENV)/.dev-stamp
# Debian packages some tests drive (curl as a real client; clamd for virus scanning;
# Chromium for the test page, through Playwright; ffmpeg to make the video it plays;
# nginx for the benchmarks' smoke test; strace to slow a server's system calls in the
# erasure's SIGKILL test; Ceph's monitor, OSD and RADOS Gateway for
# the S3 tests on RGW, tests/rgw.py: about 70 MB to download, 1.5 min to install);
# installed when running as root, otherwise the tests that need them skip and name
# the package. With CI=true a package that cannot be installed fails `make test`
# here, and a test that would skip for it fails (tests/capabilities.py).
DEB_PACKAGES := curl clamav-daemon chromium ffmpeg nginx-light ceph-mon ceph-osd radosgw strace
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: serve test lint format system-packages clean bench bench-quick

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[speed,s3]'
	@touch $@

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev,speed]'
	@touch $@ $(SERVE_STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,speed,bench]'
	@touch $(BENCH_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/streamproxy serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check streamproxy tests benchmarks
	$(BIN)/ruff format --check streamproxy tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format streamproxy tests benchmarks
	$(BIN)/ruff check --fix streamproxy tests benchmarks

system-packages:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null)) \
	      || { echo "could not install$$missing: the tests that need them will skip" >&2; \
	           if [ "$$CI" = true ]; then echo "CI=true: a package the tests need is missing" >&2; exit 1; fi; }; \
	  else echo "not root: tests needing$$missing will skip" >&2; \
	    if [ "$$CI" = true ]; then echo "CI=true: a package the tests need is missing" >&2; exit 1; fi; \
	  fi; \
	fi

# The suite runs in TEST_WORKERS processes: most of its time is spent waiting on the
# servers it starts (a serial run leaves two cores ~70% idle), so three processes
# take about a third of the time. Tests that share a machine-wide setting are kept
# in one process (`xdist_group`, with `--dist loadgroup`). TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 3
test: lint system-packages
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# BENCH_ARGS passes options through: make bench BENCH_ARGS="--scenarios 'upload-*'"
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
