# The two commands: `make demo` (main job on a built-in sample) and `make test` (the test suite).
# Each creates .venv when missing and installs what it needs from the project's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= demo_output

.PHONY: demo test venv system-deps bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,dev,nnunet]"
	touch $(STAMP)

system-deps:
	bash Testing/system_deps.sh

demo: $(STAMP)
	$(BIN)/hccfusion demo --out $(OUT)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q Testing

bench: $(STAMP)
	for b in Testing/Benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache
