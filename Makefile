# Two commands matter: `make run` starts the platform, `make test` runs every check and test.
# Both install from the lock files first (uv.lock for Python, tools/package-lock.json for buf):
# .venv and tools/node_modules are always exactly what the locks say, and the checkout stays clean.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := tools/.uv/bin/uv
BUF := tools/node_modules/.bin/buf
# uv uses the machine's Python and never downloads one.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: run test test-fast check lint typecheck proto proto-check bench clean bootstrap venv lock audit fuzz fuzz-rest fuzz-grpc

## uv itself, pinned with every platform's hash in tools/uv-requirements.txt.
$(UV): tools/uv-requirements.txt
	test -x tools/.uv/bin/python || $(PYTHON) -m venv tools/.uv
	tools/.uv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
	  -r tools/uv-requirements.txt
	touch $@

## .venv = uv.lock, exactly. --locked fails when pyproject.toml changed without `make lock`.
venv: $(UV)
	$(UV) sync --quiet --locked --extra dev

$(BUF): tools/package.json tools/package-lock.json
	cd tools && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

bootstrap: venv $(BUF)

run: bootstrap
	$(BIN)/switchboard run

## Re-resolve the locks after editing pyproject.toml or tools/package.json (commit the result).
lock: $(UV)
	$(UV) lock
	{ echo "# uv, the installer that syncs .venv from uv.lock; every platform's wheel hash (make lock rewrites this)."; \
	  $(UV) pip compile --quiet --universal --generate-hashes --no-header - <<< "uv==$$($(UV) --version | cut -d' ' -f2)"; \
	} > tools/uv-requirements.txt
	cd tools && npm install --package-lock-only --ignore-scripts --no-audit --no-fund --loglevel=error

## Known vulnerabilities in the locked packages (allowlist: security/audit-allowlist.txt).
audit: venv
	$(BIN)/python scripts/audit.py

## Regenerate gen/ from proto/ (commit the result).
proto: bootstrap
	$(BUF) format -w
	scripts/genproto.sh

## Fails when buf lint/format complain, gen/ is stale, or a contract breaks main's.
proto-check: bootstrap
	scripts/proto-check.sh

## ruff, then the architecture: import-linter's layer contracts (pyproject.toml) and no package cycle.
lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/package-cycles.py

typecheck: bootstrap
	$(BIN)/mypy

## AT="2026-12-27T03:30:00-08:00" runs the suite (tests and the servers they start) at that instant.
test: proto-check lint typecheck
	$(if $(AT),SWITCHBOARD_TEST_AT="$(AT)") $(BIN)/pytest $(PYTEST_ARGS)

## The unit tests alone (marked `unit`: no server, subprocess or Envoy), in seconds: the quick
## loop while editing. `make test` runs them too, with everything else.
test-fast: venv
	$(BIN)/pytest -q -m unit $(PYTEST_ARGS)

## Conformance fuzzing of the REST APIs against gen/openapi.json, through a real Envoy (minutes;
## run by .ci/run), then the property-based fuzzing of every RPC (also part of `make test`).
fuzz: fuzz-rest fuzz-grpc

fuzz-rest: bootstrap
	$(BIN)/pytest -m fuzz tests/fuzz

## FUZZ_EXAMPLES per method, FUZZ_SECONDS in all, FUZZ_SEED to explore other examples.
fuzz-grpc: bootstrap
	$(if $(FUZZ_EXAMPLES),SWITCHBOARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES)) \
	$(if $(FUZZ_SECONDS),SWITCHBOARD_FUZZ_SECONDS=$(FUZZ_SECONDS)) \
	$(if $(FUZZ_SEED),SWITCHBOARD_FUZZ_SEED=$(FUZZ_SEED)) \
	$(BIN)/pytest -p no:randomly -q -s tests/api/test_grpc_fuzz.py

bench: bootstrap
	$(BIN)/python -m bench.sms_throughput
	$(BIN)/python -m bench.contacts_import
	$(BIN)/python -m bench.template_render
	$(BIN)/python -m bench.communication_preview
	$(BIN)/python -m bench.message_fanout
	$(BIN)/python -m bench.delivery_smpp
	$(BIN)/python -m bench.calling --rate 50
	$(BIN)/python -m bench.webhooks
	$(BIN)/python -m bench.streams

clean:
	rm -rf $(VENV) tools/.uv tools/node_modules var .pytest_cache .mypy_cache .ruff_cache
