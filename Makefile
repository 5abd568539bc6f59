# Two commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[server,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The fault suite's long mode: a 10-minute outage at 1,000 spans/s, among others (about 15 minutes).
soak: $(STAMP)
	PROMPTWALL_FAULT_MODE=long $(BIN)/python -m pytest -q -s tests/faults

bench: $(STAMP)
	$(BIN)/python benchmarks/app_thread_cost.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
