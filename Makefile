# Two commands do the whole set-up on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment first if it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/astrotransfer demo --out demo_out

# two workers, one per core; each test file stays in one worker so its fixtures are built once
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=10

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf demo_out .pytest_cache
