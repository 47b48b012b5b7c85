# The two commands: `make demo` (main job on a built-in sample) and `make test` (the test suite).
# Each creates .venv when missing and installs what it needs from the project's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= demo_output
# pyliverlesionseg 0.3 wheel (Apache-2.0): source of the two ported U-Nets; only the conversion test needs it.
PLS_WHEEL := .cache/pyliverlesionseg-0.3-py3-none-any.whl
PLS_SHA256 := ffe1576aefff5922ea8d1cfa2c50864cda97798798559542b9517689fd290cb8

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

# Three pytest-xdist workers on 2 cores (one thread each): the Flower and subprocess tests wait much of their time,
# and a third worker fills it (measured in a fresh clone: pytest 13:30 vs 16:38 with two, peak RSS 7.8 GB).
# Tests sharing a module fixture stay together (Testing/conftest.py). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3
test: $(STAMP) system-deps $(PLS_WHEEL)
	$(BIN)/python -m pytest -q --durations=30 Testing $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

# Fetched with pip (no install); a failed download only warns (the test skips), a wrong checksum fails.
$(PLS_WHEEL): | $(STAMP)
	mkdir -p .cache/download
	if $(BIN)/python -m pip download --quiet --no-deps --python-version 3.6 --only-binary=:all: \
	    --dest .cache/download pyliverlesionseg==0.3; then \
	  echo "$(PLS_SHA256)  .cache/download/$(notdir $@)" | sha256sum -c - && mv .cache/download/$(notdir $@) $@; \
	else echo "warning: could not download $(notdir $@); its conversion test will be skipped"; fi

bench: $(STAMP)
	for b in Testing/Benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache
