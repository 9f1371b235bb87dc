# oklog — set-up is two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install deps libs run test lint unit bench chaos fuzz-gossip fuzz-fast sim clean

install: $(STAMP)

# editable_mode=compat: a .pth path entry, not an import hook (27 ms less start-up
# for every `oklog query`); the build compiles oklog/_fast.c in place.
$(STAMP): pyproject.toml setup.py oklog/_fast.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	$(BIN)/python -m compileall -q oklog
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
	@dpkg -s rsyslog-elasticsearch >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog-elasticsearch) \
	  || echo "warning: could not install rsyslog-elasticsearch; the omelasticsearch test will skip" >&2
	@$(MAKE) -s libs
	@dpkg -s rsyslog-gnutls >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog-gnutls) \
	  || echo "warning: could not install rsyslog-gnutls; the rsyslog-over-TLS test will skip" >&2

# Byte-compiled first: with PYTHONDONTWRITEBYTECODE set (as on our machines) the
# editable package is never cached, and each of the suite's hundreds of node
# subprocesses would compile every module again (~0.15 s of CPU per start).
# Three workers on two cores: a third of the suite's time is waiting on real
# nodes (timeouts, gossip rounds), which a third worker fills (441 s against 492 s).
unit: install deps
	$(BIN)/python -m compileall -q oklog
	$(BIN)/pytest -q -n 3 --dist loadfile tests

test: lint unit

# Shared libraries oklog/_fast.c finds with dlopen when present: Hyperscan
# (a regex's candidate lines decided in C; without it the Python binding does).
libs:
	@dpkg -s libhyperscan5 >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhyperscan5) \
	  || echo "warning: could not install libhyperscan5; regex queries decide their candidates in Python (slower)" >&2

bench: install libs
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

chaos: install
	$(BIN)/python tests/chaos/harness.py --duration 120 $(CHAOS_ARGS)

# The gossip fuzzer at the issue's full count (make test runs 10,000).
fuzz-gossip: install
	OKLOG_GOSSIP_FUZZ=100000 $(BIN)/pytest -q -s tests/chaos/test_gossip_fuzz.py

# The gossip simulator's table (N = 10, 100, 1,000; 1% and 5% loss; 10% slow members).
sim: install
	$(BIN)/python -m oklog.cluster.sim $(SIM_ARGS)

# The _fast fuzz test against an AddressSanitizer build of the extension
# (built in a temp dir; libasan is preloaded because python itself is not built with it).
fuzz-fast: install
	@d=$$(mktemp -d) && \
	$(CC) -O1 -g -fsanitize=address -fno-omit-frame-pointer -shared -fPIC \
	  -I$$($(BIN)/python -c "import sysconfig;print(sysconfig.get_paths()['include'])") \
	  oklog/_fast.c -o $$d/_fast.so && \
	OKLOG_FAST_SO=$$d/_fast.so OKLOG_FAST_FUZZ=$${OKLOG_FAST_FUZZ:-2000} PYTHONMALLOC=malloc \
	  ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libstdc++.so.6)" \
	  $(BIN)/pytest -q -s -p no:cacheprovider tests/fast/test_fast_fuzz.py; rc=$$?; rm -rf $$d; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info oklog/*.so
