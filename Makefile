# Two commands matter: `make run` and `make test`. Everything else is a step they share.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
UV_VERSION := 0.13.9

.PHONY: install bytecode run test lint format lock bench clean chromium

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

# Every module compiled ahead: where PYTHONDONTWRITEBYTECODE is set (CI machines, many container images),
# Python would compile each one again at every start and keep nothing (importing the app took 4.6 s, 1.7 s
# compiled; the suite starts dozens of servers and CLI processes). Only what changed is compiled again.
bytecode: install
	@$(BIN)/python -m compileall -q src

run: bytecode
	$(BIN)/tenantry serve --host 127.0.0.1 --port 8000

test: bytecode chromium
	$(BIN)/pytest $(PYTEST_ARGS)

# The console's browser tests drive Debian's Chromium (Playwright's own browser download is not used).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	  else echo "The browser tests need Debian's Chromium: run 'sudo apt-get install -y chromium', then 'make test' again." >&2; exit 1; fi; }

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

lock:
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 --quiet -o requirements.lock

bench: bytecode
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
	find src -name __pycache__ -prune -exec rm -rf {} +
