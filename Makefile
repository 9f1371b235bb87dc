# oklog — set-up is two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install deps run test lint unit bench chaos fuzz-gossip clean

install: $(STAMP)

# editable_mode=compat: a .pth path entry, not an import hook (27 ms less start-up
# for every `oklog query`); the build compiles oklog/_fast.c in place.
$(STAMP): pyproject.toml setup.py oklog/_fast.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

run: install
	$(BIN)/oklog run

lint: install
	$(BIN)/ruff check oklog tests benchmarks
	$(BIN)/mypy oklog

# Debian packages the ecosystem tests drive (tests skip when one is absent).
deps:
	@if command -v promtool rsyslogd logger curl >/dev/null 2>&1 && \
	    (for b in promtool rsyslogd logger curl; do command -v $$b >/dev/null || exit 1; done); then :; else \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    prometheus rsyslog bsdutils curl) \
	  || echo "warning: could not install prometheus rsyslog bsdutils curl; ecosystem tests will skip" >&2; \
	fi
	@command -v zstdcat >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd) \
	  || echo "warning: could not install zstd; the zstdcat tests will fail" >&2

unit: install deps
	$(BIN)/pytest -q -n 2 --dist loadfile tests

test: lint unit

bench: install
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

chaos: install
	$(BIN)/python tests/chaos/harness.py --duration 120 $(CHAOS_ARGS)

# The gossip fuzzer at the issue's full count (make test runs 10,000).
fuzz-gossip: install
	OKLOG_GOSSIP_FUZZ=100000 $(BIN)/pytest -q -s tests/chaos/test_gossip_fuzz.py

clean:
	rm -rf $(VENV) build *.egg-info oklog/*.so
