# voip-rooms: make help lists the targets.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
ROOMS  ?= 20000
DEMO   ?= .demo
EVENTS := $(abspath $(DEMO))-events.jsonl
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck fmt bench soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml service/core/store/_extract.pyx
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with the project and its dev tools

$(DEMO)/manifest.json: | $(STAMP)
	$(BIN)/voip-rooms demo-data --out $(DEMO) --rooms $(ROOMS) --port $(PORT) > $(DEMO).credentials.txt || (rm -rf $(DEMO); exit 1)

run: $(STAMP) $(DEMO)/manifest.json ## serve demo data on port 3000 (with live simulated calls), print a working curl and the board's URL
	@cat $(DEMO).credentials.txt
	@echo "  live call board: http://localhost:$(PORT)/board  (sign in with the manager's X-User-Id and X-Auth-Token)"
	@: > $(EVENTS); \
	$(BIN)/voip-rooms simulate --feed file://$(EVENTS) --snapshot $(DEMO) --rate 2 >/dev/null 2>&1 & sim=$$!; \
	trap 'kill $$sim 2>/dev/null' EXIT INT TERM; \
	$(BIN)/voip-rooms serve --snapshot $(DEMO) --feed file://$(EVENTS) --port $(PORT)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check service tests
	$(BIN)/ruff format --check service tests

typecheck: $(STAMP) ## mypy strict on service/ and tests/
	$(BIN)/mypy service tests

test: lint typecheck ## lint, typecheck, then the whole test suite
	$(BIN)/pytest

fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format service tests
	$(BIN)/ruff check --fix service tests

bench: $(STAMP) ## every target figure (ready, memory, checkpoint, events/s, query p99, HTTP req/s, live answers) against its target (BENCH_ROOMS=N, default 1000000): tests/bench/RESULTS.md
	$(BIN)/python -m tests.bench.http --rooms $${BENCH_ROOMS:-1000000}
	$(BIN)/python -m tests.bench.live --rooms $${BENCH_ROOMS:-1000000}

soak: $(STAMP) ## 60-second soak: maximum request rate with feed events arriving
	$(BIN)/python -m tests.soak

clean: ## remove the venv, demo data and caches
	rm -rf $(VENV) $(DEMO) $(DEMO).credentials.txt $(EVENTS) .bench-data .mypy_cache .ruff_cache .pytest_cache
