# Two commands matter: `make run` starts the platform, `make test` runs every check and test.
# Both bootstrap .venv (Python deps) and tools/node_modules (buf) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF := tools/node_modules/.bin/buf

.PHONY: run test check lint typecheck proto proto-check bench clean

$(BIN)/switchboard: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(BUF): tools/package.json tools/package-lock.json
	cd tools && npm install --no-audit --no-fund --loglevel=error
	touch $@

bootstrap: $(BIN)/switchboard $(BUF)

run: bootstrap
	$(BIN)/switchboard run

## Regenerate gen/ from proto/ (commit the result).
proto: bootstrap
	$(BUF) format -w
	scripts/genproto.sh

## Fails when buf lint/format complain, gen/ is stale, or a contract breaks main's.
proto-check: bootstrap
	scripts/proto-check.sh

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: bootstrap
	$(BIN)/mypy

test: proto-check lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

bench: bootstrap
	$(BIN)/python -m bench.sms_throughput
	$(BIN)/python -m bench.contacts_import
	$(BIN)/python -m bench.template_render
	$(BIN)/python -m bench.communication_preview
	$(BIN)/python -m bench.message_fanout
	$(BIN)/python -m bench.delivery_smpp
	$(BIN)/python -m bench.calling --rate 50

clean:
	rm -rf $(VENV) tools/node_modules var .pytest_cache .mypy_cache .ruff_cache
