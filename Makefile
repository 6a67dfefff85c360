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
	@echo "make synth  the CloudFormation template in cdk.out (offline, no Docker; DOMAIN=... for your own)"
	@echo "make deploy DOMAIN=media.example.com  deploy the platform (docs/deploy.md)"
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
	$(UV) run --frozen python -m demo --engines $(or $(ENGINES),simulated) $(SCENARIOS)

.PHONY: bench
bench: venv redis-server
	$(UV) run --frozen python -m bench $(SECTIONS)

.PHONY: openapi
openapi: venv
	$(UV) run --frozen python -m functions.openapi

# The CDK CLI, pinned in infra/package-lock.json. `synth` checks the template with an example media domain
# unless DOMAIN is given; `deploy` needs the real one. CONTEXT passes more (-c certificateArn=... etc.).
CDK := infra/node_modules/.bin/cdk
# jsii prints a banner when this machine's Node 20 is past its end of life; it changes nothing here.
CDK_ENV := PATH="$(dir $(UV)):$$PATH" JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 CDK_DISABLE_CLI_TELEMETRY=true

$(CDK): infra/package.json infra/package-lock.json
	npm ci --prefix infra --no-audit --no-fund
	@touch $@

.PHONY: synth
synth: venv $(CDK)
	$(CDK_ENV) $(CDK) synth --quiet --no-notices -c domainName=$(or $(DOMAIN),media.example.com) $(CONTEXT)

.PHONY: deploy
deploy: venv $(CDK)
	@test -n "$(DOMAIN)" || { echo "DOMAIN is required: make deploy DOMAIN=media.example.com (docs/deploy.md)"; exit 2; }
	$(CDK_ENV) $(CDK) deploy --no-notices -c domainName=$(DOMAIN) $(CONTEXT)
