PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The SAM CLI has a venv of its own: its pinned dependencies conflict with ours.
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
# Offline and quiet: no telemetry, no region lookup.
SAM := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM_VENV)/bin/sam

.PHONY: setup run test lint-template bench clean

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

test: $(STAMP) lint-template
	$(BIN)/python -m pytest

# Figures for the README: ccproxy beside LiteLLM's proxy (installed by the
# script into bench/.venv-litellm). BENCH_ARGS=--quick for a short run.
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) bench/.venv-litellm .pytest_cache
