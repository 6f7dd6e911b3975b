# Two commands for a newcomer: `make demo` (run the import end to end on the embedded default)
# and `make test` (set up and run every test). Both create .venv from the lock file first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs the lock in seconds; it comes from PyPI into its own small venv, so nothing else is needed.
UV_VERSION := 0.13.9
UV := .uv/bin/uv

# `make stack`: the production shape (PostgreSQL, code server, daemon, webserver as processes) on loopback.
.PHONY: setup demo dev stack postgres-deps test test-deps check lint typecheck bench lock clean

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): requirements.lock pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/fitonfhir demo

dev: setup
	$(BIN)/fitonfhir demo --dev

postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian postgresql for the PostgreSQL store and deployment tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq postgresql >/dev/null; fi; }

stack: setup postgres-deps
	$(BIN)/fitonfhir stack

tests/node/node_modules/.installed: tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test-deps: setup postgres-deps tests/node/node_modules/.installed
	@command -v chromium >/dev/null || { \
	  echo "installing Debian chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

# The README's test command: lint, format, types, then every test.
test: test-deps check
	$(BIN)/python -m pytest -q

check: lint typecheck

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/device_messages.py
	$(BIN)/python bench/conversion.py
	$(BIN)/python bench/backfill.py
	$(BIN)/python bench/backfill.py --sandbox process
	$(BIN)/python bench/heavy_user.py

# Re-pin after changing dependencies in pyproject.toml (keeps every pin that still fits; --upgrade for new ones).
lock: | $(UV)
	$(UV) pip compile --quiet pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
	  $(if $(wildcard requirements.lock),-c requirements.lock) -o requirements.lock

clean:
	rm -rf $(VENV) .uv .fitonfhir .dagster_home tests/node/node_modules
