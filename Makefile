# Switchboard developer commands. `make test` works on a fresh machine: it installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# A uv on PATH that runs (a pyenv shim for another Python does not), else the copy `make` installs.
UV := $(or $(shell uv --version >/dev/null 2>&1 && command -v uv),$(HOME)/.local/bin/uv)
PY_SOURCES := $(wildcard layers functions streaming infra tests bench demo)
# Every top-level folder holding Python, so mypy never skips a folder that gains code.
MYPY_PATHS = $(shell git ls-files --cached --others --exclude-standard '*.py' | cut -d/ -f1 | sort -u)

.PHONY: help
help:
	@echo "make demo   whole calls through the platform on this machine, no accounts needed"
	@echo "make test   install what is missing, then lint, type-check and run every test"
	@echo "make bench  the benchmarks, written to bench/results/latest.json (a few minutes)"
	@echo "make openapi  regenerate docs/openapi.json from the functions' routes"
	@echo "make lint   ruff and mypy"
	@echo "make fmt    format and auto-fix with ruff"

$(UV):
	@echo "uv not found: installing it with pip into ~/.local/bin"
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet --user --break-system-packages uv

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@

.PHONY: venv
venv: .venv/.synced

# The integration tests start their own redis-server; install the binary when the machine lacks it.
.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null || { \
		echo "redis-server not found: installing Debian's package"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	}

.PHONY: lint
lint: venv
	$(UV) run --frozen ruff check $(PY_SOURCES)
	$(UV) run --frozen ruff format --check $(PY_SOURCES)
	$(UV) run --frozen mypy $(MYPY_PATHS)

.PHONY: fmt
fmt: venv
	$(UV) run --frozen ruff check --fix $(PY_SOURCES)
	$(UV) run --frozen ruff format $(PY_SOURCES)

.PHONY: test
test: venv redis-server lint
	$(UV) run --frozen pytest

.PHONY: demo
demo: venv redis-server
	$(UV) run --frozen python -m demo $(SCENARIOS)

.PHONY: bench
bench: venv redis-server
	$(UV) run --frozen python -m bench $(SECTIONS)

.PHONY: openapi
openapi: venv
	$(UV) run --frozen python -m functions.openapi
