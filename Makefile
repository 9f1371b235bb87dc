# oklog — set-up is two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint unit bench chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/oklog run

lint: install
	$(BIN)/ruff check oklog tests benchmarks
	$(BIN)/mypy oklog

unit: install
	$(BIN)/pytest -q -n 2 --dist loadfile tests

test: lint unit

bench: install
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

chaos: install
	$(BIN)/python tests/chaos/harness.py --duration 120 $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
