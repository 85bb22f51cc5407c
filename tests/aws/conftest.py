"""The Lambda functions in front of strict fake upstreams and moto's server.

`fakes` serves one FakeUpstream per protocol on loopback. `deployment` is
what template.yaml sets up, against moto: a Secrets Manager secret holding
the provider keys and the access key, a DynamoDB state table, an S3 log
bucket, and CCPROXY_CONFIG pointing at a config that routes the model
aliases used by events/*.json to the fakes (each to a different protocol).
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes import UPSTREAM_MODELS, FakeUpstream
from tests.support.aws import MotoServer, moto_server  # noqa: F401  (the fixture)
from tests.support.server import BackgroundServer

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
ACCESS_KEY = "ccp-example-access-key"  # what every file in events/ presents

UPSTREAM_KEYS = {
    "openai": "sk-fake-openai-lambda-0123456789",
    "claude": "sk-ant-fake-lambda-0123456789",
    "gemini": "AIza-fake-lambda-0123456789",
    "ollama": None,
}
BASE_PATHS = {"openai": "/v1", "claude": "/v1", "gemini": "/v1beta", "ollama": ""}
# The events' aliases, each sent to an upstream of another protocol, so
# every event also crosses a conversion.
ROUTES = {
    "gpt-*": "claude",
    "claude-*": "gemini",
    "gemini-*": "openai",
    "*": "ollama",  # qwen3:8b
}


def provider_id(protocol: str) -> str:
    return f"up-{protocol}"


def lambda_config(urls: dict[str, str]) -> dict[str, Any]:
    """Keys are never in the config on Lambda: a provider that needs one
    lists `keys` (never read there) and finds its keys in the secret."""
    providers = {}
    for protocol, url in urls.items():
        provider: dict[str, Any] = {"protocol": protocol, "base_url": url + BASE_PATHS[protocol]}
        if UPSTREAM_KEYS[protocol]:
            provider["keys"] = [f"env:{protocol.upper()}_KEY_NOT_USED_ON_LAMBDA"]
        providers[provider_id(protocol)] = provider
    models = {alias: [f"{provider_id(p)}/{UPSTREAM_MODELS[p]}"] for alias, p in ROUTES.items()}
    return {"providers": providers, "groups": {"default": {"models": models}}, "active_group": "default"}


def secret_document(access_keys: list[str] | None = None) -> dict[str, Any]:
    return {
        "providers": {provider_id(p): [k] for p, k in UPSTREAM_KEYS.items() if k},
        "access_keys": [ACCESS_KEY] if access_keys is None else access_keys,
    }


@pytest.fixture(scope="session")
def fakes():
    servers, found = [], {}
    for protocol, key in UPSTREAM_KEYS.items():
        fake = FakeUpstream(protocol, key=key)
        server = BackgroundServer(fake.app).start()
        servers.append(server)
        found[protocol] = (fake, server.url)
    yield found
    for server in servers:
        server.stop()


@pytest.fixture
def upstreams(fakes):
    """The fakes by protocol, reset; fails the test if any of them saw a
    request the real API would refuse."""
    for fake, _ in fakes.values():
        fake.reset()
    yield {protocol: fake for protocol, (fake, _) in fakes.items()}
    for protocol, (fake, _) in fakes.items():
        assert fake.violations == [], f"the {protocol} fake refused what the proxy sent: {fake.violations}"


def forget_cached_secrets() -> None:
    """Powertools keeps secrets (and its boto3 client) per process: start
    each deployment from nothing, as a fresh Lambda environment does."""
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

    DEFAULT_PROVIDERS.clear()
    parameters.clear_caches()


@dataclass
class Deployment:
    moto: MotoServer
    config_path: Path
    secret_id: str
    table: str
    bucket: str
    env: dict[str, str] = field(default_factory=dict)

    def put_secret(self, document: dict[str, Any]) -> None:
        self.moto.client("secretsmanager").put_secret_value(SecretId=self.secret_id, SecretString=json.dumps(document))
        forget_cached_secrets()

    def handler_module(self) -> Any:
        """ccproxy.lambda_handler imported afresh, as a cold start does: the
        module builds the app from the environment at import."""
        forget_cached_secrets()
        sys.modules.pop("ccproxy.lambda_handler", None)
        return importlib.import_module("ccproxy.lambda_handler")


@pytest.fixture
def deployment(moto_server, fakes, tmp_path, monkeypatch):  # noqa: F811
    """template.yaml's resources on moto, and the functions' environment."""
    urls = {protocol: url for protocol, (_, url) in fakes.items()}
    config_path = tmp_path / "ccproxy.yaml"
    config_path.write_text(yaml.safe_dump(lambda_config(urls), sort_keys=False))
    name = f"ccproxy-test-{uuid.uuid4().hex[:8]}"
    secret_id = moto_server.client("secretsmanager").create_secret(
        Name=name, SecretString=json.dumps(secret_document())
    )["ARN"]
    table = moto_server.create_state_table()
    bucket = name
    moto_server.client("s3").create_bucket(Bucket=bucket)
    env = {
        **moto_server.env,
        "CCPROXY_CONFIG": str(config_path),
        "CCPROXY_SECRET_ID": secret_id,
        "CCPROXY_TABLE": table,
        "CCPROXY_LOG_BUCKET": bucket,
        "CCPROXY_LOG_PREFIX": "exchanges/",
        "POWERTOOLS_SERVICE_NAME": "ccproxy",
        "POWERTOOLS_METRICS_NAMESPACE": "ccproxy",
    }
    for name_, value in env.items():
        monkeypatch.setenv(name_, value)
    # Keys the config names must never be read on Lambda: set them to
    # something the fakes refuse, so reading one would fail the test.
    for protocol in UPSTREAM_KEYS:
        monkeypatch.setenv(f"{protocol.upper()}_KEY_NOT_USED_ON_LAMBDA", f"wrong-key-from-env-{protocol}")
    for unwanted in ("CCPROXY_SECRETS_FILE", "CCPROXY_LOG_DIR", "CCPROXY_STATE", "CCPROXY_METRICS",
                     "CCPROXY_JSON_LOGS", "AWS_LAMBDA_FUNCTION_NAME"):
        monkeypatch.delenv(unwanted, raising=False)
    yield Deployment(moto_server, config_path, secret_id, table, bucket, env)
    forget_cached_secrets()
    sys.modules.pop("ccproxy.lambda_handler", None)


class FakeLambdaContext:
    """The attributes of the Lambda context object that Mangum and Powertools read."""

    function_name = "ccproxy-ApiFunction-test"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ccproxy-ApiFunction-test"
    memory_limit_in_mb = 512
    log_group_name = "/aws/lambda/ccproxy-ApiFunction-test"
    log_stream_name = "2026/11/28/[$LATEST]0123456789abcdef"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_event(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
