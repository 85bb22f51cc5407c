"""The Lambda cold start stays lean: importing the handler (which builds the
app) loads nothing that only the CLI, the benchmark or the tests need, and
no AWS SDK unless an AWS store is configured.

No timing here (bench/run.py measures the cold start): the import list is
what keeps it in check, and it is the same on every machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Modules that only the CLI (`ccproxy serve` runs uvicorn), the benchmark or
# the tests use. A top-level name also rules out its submodules.
FORBIDDEN = (
    "uvicorn",               # the streaming function starts it from run.sh, not from the handler
    "argparse",              # the CLI
    "ccproxy.cli",
    "boto3", "botocore", "s3transfer",  # only when CCPROXY_TABLE / CCPROXY_SECRET_ID / a log bucket is set
    "aws_lambda_powertools",  # the Secrets Manager store imports it when it first reads the secret
    "openai", "anthropic", "google.genai", "ollama",  # the SDKs the protocol tests drive the proxy with
    "moto", "pytest", "_pytest",  # the tests
    "tests", "bench", "load",  # the test suite's and the benchmark's own modules
    "rich",                  # httpx's optional command line
)

# Measured when this test was written: 421 modules after the import (the
# test venv, where httpx also pulls in click and pygments for its optional
# CLI). The ceiling leaves 15% for growth; a jump past it means something
# heavy joined the handler's imports: check it with `python -X importtime`.
MEASURED = 421
CEILING = int(MEASURED * 1.15)

PROBE = """
import json, sys
import ccproxy.lambda_handler as handler
assert handler.handler is not None and handler.app is not None
print(json.dumps(sorted(sys.modules)))
"""

CONFIG = """
providers:
  up:
    protocol: openai
    base_url: http://127.0.0.1:9/v1
    keys: [sk-test]
groups:
  default:
    models:
      "*": [up/some-model]
access_keys: [ccp-test]
"""


def loaded_modules(tmp_path, **env_extra: str) -> set[str]:
    config = tmp_path / "ccproxy.yaml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCPROXY_", "AWS_"))}
    env.update(CCPROXY_CONFIG=str(config), CCPROXY_STATE=str(tmp_path / "state.db"), **env_extra)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def forbidden_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_the_handler_imports_nothing_only_the_cli_benchmark_or_tests_need(tmp_path):
    modules = loaded_modules(tmp_path)
    assert "ccproxy.lambda_handler" in modules
    assert forbidden_in(modules) == []


def test_no_aws_sdk_without_an_aws_store(tmp_path):
    modules = loaded_modules(tmp_path)
    assert not {"boto3", "botocore"} & modules


def test_the_import_list_stays_under_its_ceiling(tmp_path):
    modules = loaded_modules(tmp_path)
    assert len(modules) <= CEILING, (
        f"importing the Lambda handler loads {len(modules)} modules (ceiling {CEILING}, measured {MEASURED} "
        "when this test was written): see what joined with `python -X importtime -c 'import ccproxy.lambda_handler'`"
    )
