# docbus developer commands. `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: run test setup lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Strict editable install: the package `docbus` maps bus/, adapters/, connectors/ and schemas/ (see pyproject);
# strict mode is what lets mypy see it. Re-run on every call so new modules are picked up.
setup: $(BIN)/python
	$(BIN)/pip install -q --config-settings editable_mode=strict -e '.[dev]'

run: setup
	$(BIN)/docbus serve --host $(HOST) --port $(PORT)

test: setup
	bash tests/run-all.sh

lint: setup
	$(BIN)/ruff check bus adapters connectors schemas tests
	$(BIN)/ruff format --check bus adapters connectors schemas tests

typecheck: setup
	$(BIN)/mypy -p docbus

bench: setup
	bash tests/benchmark/run.sh

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
