# Two commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The per-span modules compiled in place (setup.py): rebuilt when a source changes, else a module whose
# source changed would run as pure Python (promptwall_otel/compiled.py never imports a stale build).
COMPILED := $(VENV)/.compiled-stamp
SOURCES := $(wildcard promptwall_otel/*.py promptwall_otel/*/*.py promptwall_otel/*/*.pyx)

.PHONY: demo test bench soak clean

# The compiled modules are built once, by the next rule (PROMPTWALL_PURE_PYTHON here: not twice).
$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PROMPTWALL_PURE_PYTHON=1 $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[server,test]'
	touch $(STAMP)

$(COMPILED): $(STAMP) setup.py $(SOURCES)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $(COMPILED)

demo: $(COMPILED)
	$(BIN)/python examples/demo.py

test: $(COMPILED)
	$(BIN)/python -m pytest -q

# The fault suite's long mode: a 10-minute outage at 1,000 spans/s, among others (about 15 minutes).
soak: $(COMPILED)
	PROMPTWALL_FAULT_MODE=long $(BIN)/python -m pytest -q -s tests/faults

bench: $(COMPILED)
	$(BIN)/python benchmarks/app_thread_cost.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache promptwall_otel/_compiled.json
	find promptwall_otel \( -name "*.so" -o -name "*.c" \) -delete
