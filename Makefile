PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The SAM CLI has a venv of its own: its pinned dependencies conflict with ours.
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
# Offline and quiet: no telemetry, no region lookup.
SAM := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM_VENV)/bin/sam

.PHONY: setup run test lint lint-template bench fuzz agents-e2e clean

setup: $(STAMP)

$(STAMP): pyproject.toml layers/dependencies/requirements.txt tests/requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(SAM_STAMP): tests/requirements-sam.txt
	test -d $(SAM_VENV) || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet -r tests/requirements-sam.txt
	touch $(SAM_STAMP)

run: $(STAMP)
	$(BIN)/ccproxy serve $(if $(wildcard ccproxy.yaml),--config ccproxy.yaml,--config ccproxy.example.yaml)

# template.yaml checked by the SAM translator and cfn-lint, offline.
lint-template: $(SAM_STAMP)
	$(SAM) validate --lint --template template.yaml

# ruff (errors, import order, likely bugs; the format of the code) and
# mypy. `make test` runs it first; .pre-commit-config.yaml runs the same.
lint: $(STAMP)
	$(BIN)/ruff check functions tests bench
	$(BIN)/ruff format --check functions bench
	$(BIN)/mypy

test: $(STAMP) lint-template lint
	$(BIN)/python -m pytest

# The fuzz tests at length: client input (make test runs 150 cases a route)
# and broken upstream answers (make test runs 3 per client, upstream and mode).
fuzz: $(STAMP)
	CCPROXY_FUZZ_CASES=$${CCPROXY_FUZZ_CASES:-3000} CCPROXY_FUZZ_ANSWERS=$${CCPROXY_FUZZ_ANSWERS:-60} \
		$(BIN)/python -m pytest tests/fuzz

# Figures for the README: ccproxy beside LiteLLM's proxy (installed by the
# script into bench/.venv-litellm). BENCH_ARGS=--quick for a short run.
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The real coding agents (pinned, from npm, into tests/agents/.npm) through
# `ccproxy serve` to each upstream protocol: each must finish a tool-using turn.
AGENTS_NPM := tests/agents/.npm
AGENTS := @anthropic-ai/claude-code@2.1.197 @google/gemini-cli@0.61.0 opencode-ai@1.18.33 @openai/codex@0.169.0
$(AGENTS_NPM)/.installed:
	npm install --silent --no-audit --no-fund --prefix $(AGENTS_NPM) $(AGENTS)
	touch $@

agents-e2e: $(STAMP) $(AGENTS_NPM)/.installed
	AGENTS_BIN=$(AGENTS_NPM)/node_modules/.bin $(BIN)/python tests/agents/e2e.py $(E2E_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) bench/.venv-litellm .pytest_cache $(AGENTS_NPM)
