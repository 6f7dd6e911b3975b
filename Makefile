# Two commands for a newcomer: `make demo` (run the import end to end on the embedded default)
# and `make test` (set up and run every test). Both create .venv from the lock file first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo dev test test-deps lint typecheck bench lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/fitonfhir demo

dev: setup
	$(BIN)/fitonfhir demo --dev

tests/node/node_modules/.installed: tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test-deps: setup tests/node/node_modules/.installed
	@command -v chromium >/dev/null || { \
	  echo "installing Debian chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

test: test-deps
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/device_messages.py
	$(BIN)/python bench/conversion.py
	$(BIN)/python bench/backfill.py

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^fitonfhir' > requirements.lock

clean:
	rm -rf $(VENV) .fitonfhir .dagster_home tests/node/node_modules
