"""The API function in-process: Mangum's handler invoked with every file in
events/, against the fake upstreams and moto (keys read from Secrets Manager
through Powertools, state in DynamoDB)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.scenarios import COUNT_TOKENS, TEXT

from .conftest import (
    ACCESS_KEY,
    EVENTS,
    ROOT,
    UPSTREAM_KEYS,
    FakeLambdaContext,
    load_event,
    provider_id,
    secret_document,
)

EVENT_FILES = sorted(EVENTS.glob("*.json"))


def invoke(module: Any, event: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    # Mangum runs each invocation on the thread's event loop; another test's
    # asyncio.run may have closed it, which a Lambda runtime never does.
    try:
        loop = asyncio.get_event_loop()
        if loop.is_closed():
            raise RuntimeError
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    reply = module.handler(event, FakeLambdaContext())
    body = reply.get("body") or ""
    if reply.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return reply["statusCode"], {k.lower(): v for k, v in (reply.get("headers") or {}).items()}, body


def sse_data(body: str) -> list[Any]:
    """The JSON payloads of an SSE body (`[DONE]` kept as a string)."""
    found = []
    for line in body.splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


def check_shape(name: str, headers: dict[str, str], body: str) -> None:
    """What each event's client would accept, in its own protocol."""
    if name == "health":
        assert json.loads(body) == {"status": "ok"}
    elif name == "openai-chat":
        answer = json.loads(body)
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["content"] == TEXT
        assert answer["usage"]["completion_tokens"] > 0
    elif name == "openai-chat-stream":
        assert headers["content-type"].startswith("text/event-stream")
        chunks = sse_data(body)
        assert chunks[-1] == "[DONE]"
        assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"])
        assert text == TEXT
        assert any(c.get("usage") for c in chunks[:-1])
    elif name == "openai-models":
        listed = json.loads(body)
        assert listed["object"] == "list" and listed["data"]
    elif name == "claude-messages":
        answer = json.loads(body)
        assert answer["type"] == "message" and answer["role"] == "assistant"
        assert answer["content"][0] == {"type": "text", "text": TEXT}
        assert answer["stop_reason"] == "end_turn"
    elif name == "claude-messages-stream":
        assert headers["content-type"].startswith("text/event-stream")
        events = [line[7:] for line in body.splitlines() if line.startswith("event: ")]
        assert events[0] == "message_start" and events[-1] == "message_stop"
        data = sse_data(body)
        text = "".join(d["delta"].get("text", "") for d in data if d["type"] == "content_block_delta")
        assert text == TEXT
    elif name == "claude-count-tokens":
        assert json.loads(body) == {"input_tokens": COUNT_TOKENS}
    elif name == "gemini-generate":
        answer = json.loads(body)
        parts = answer["candidates"][0]["content"]["parts"]
        assert "".join(p.get("text", "") for p in parts) == TEXT
        assert answer["usageMetadata"]["candidatesTokenCount"] > 0
    elif name == "gemini-stream":
        assert headers["content-type"].startswith("text/event-stream")
        chunks = sse_data(body)
        text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"].get("parts", []))
        assert text == TEXT
    elif name == "ollama-chat":
        answer = json.loads(body)
        assert answer["done"] is True
        assert answer["message"] == {"role": "assistant", "content": TEXT} or answer["message"]["content"] == TEXT
    elif name == "ollama-tags":
        assert "models" in json.loads(body)
    elif name == "root":
        assert json.loads(body) == {"service": "ccproxy", "status": "ok"}
    else:  # a new event file: at least valid JSON or SSE
        assert body.startswith(("{", "data:", "event:"))


def test_there_is_an_event_for_each_main_route():
    names = {p.stem for p in EVENT_FILES}
    assert {
        "openai-chat", "openai-chat-stream", "openai-models", "claude-messages", "claude-count-tokens",
        "gemini-generate", "gemini-stream", "ollama-chat", "ollama-tags", "health",
    } <= names  # fmt: skip
    for path in EVENT_FILES:
        event = load_event(path)
        assert event["version"] == "2.0" and event["requestContext"]["http"]["path"] == event["rawPath"]
        headers = event["headers"]
        presented = (
            headers.get("authorization", "").removeprefix("Bearer ") or headers.get("x-api-key")
            or headers.get("x-goog-api-key")
        )
        assert presented == ACCESS_KEY, f"{path.name} presents no access key"
        if "body" in event:
            assert int(headers["content-length"]) == len(event["body"].encode())


@pytest.mark.parametrize("path", EVENT_FILES, ids=[p.stem for p in EVENT_FILES])
def test_every_event_is_answered_in_its_protocol(path: Path, deployment, upstreams):
    module = deployment.handler_module()
    status, headers, body = invoke(module, load_event(path))
    assert status == 200, body
    check_shape(path.stem, headers, body)
    # The upstreams got the keys from the secret (the fakes refuse any other:
    # a key read from the config's env: names would be a violation).
    for protocol, fake in upstreams.items():
        for request in fake.requests:
            if UPSTREAM_KEYS[protocol]:
                sent = request.headers.get("authorization", "").removeprefix("Bearer ") or request.headers.get(
                    "x-api-key") or request.headers.get("x-goog-api-key")
                assert sent == UPSTREAM_KEYS[protocol]


def test_state_goes_to_the_dynamodb_table(deployment, upstreams):
    module = deployment.handler_module()
    for name in ("openai-chat", "claude-messages"):
        status, _, body = invoke(module, load_event(EVENTS / f"{name}.json"))
        assert status == 200, body
    items = deployment.moto.client("dynamodb").scan(TableName=deployment.table)["Items"]
    # A pool of one key needs no turn counter; usage is counted per key.
    usage = {item["entry"]["S"] for item in items if item["pk"]["S"].startswith("usage#")}
    # Provider keys' usage, and the access key's (by its name, per model).
    assert {e.split("#")[0] for e in usage if not e.startswith("access#")} == {"up-claude", "up-gemini"}, items
    assert {e for e in usage if e.startswith("access#")}, items


def test_exchange_records_land_where_the_glue_table_reads_them(deployment, upstreams):
    """Objects under exchanges/dt=YYYY-MM-DD/hour=HH/{id}.json.gz, one JSON
    line each, with the columns template.yaml declares."""
    module = deployment.handler_module()
    status, _, body = invoke(module, load_event(EVENTS / "claude-messages.json"))
    assert status == 200, body
    s3 = deployment.moto.client("s3")
    listed = s3.list_objects_v2(Bucket=deployment.bucket, Prefix="exchanges/").get("Contents") or []
    assert listed, "no exchange record was written to the log bucket"
    key = listed[0]["Key"]
    parts = key.split("/")
    assert parts[0] == "exchanges" and parts[1].startswith("dt=") and len(parts[1]) == len("dt=2026-11-28")
    assert parts[2].startswith("hour=") and len(parts[2]) == len("hour=09") and parts[3].endswith(".json.gz")
    data = gzip.decompress(s3.get_object(Bucket=deployment.bucket, Key=key)["Body"].read()).decode()
    assert data.count("\n") <= 1  # a single line, as the JSON SerDe reads it
    record = json.loads(data)
    columns = {c["Name"] for c in glue_columns()}
    assert set(record) <= columns, f"record fields the Glue table lacks: {set(record) - columns}"
    assert record["client_protocol"] == "claude"


def glue_columns() -> list[dict[str, str]]:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    return template["Resources"]["ExchangesTable"]["Properties"]["TableInput"]["StorageDescriptor"]["Columns"]


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) kept as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


_CfnLoader.add_multi_constructor("!", _any_tag)


def test_no_access_key_refuses_every_request_and_logs_why(deployment, upstreams, caplog):
    deployment.put_secret(secret_document(access_keys=[]))
    module = deployment.handler_module()
    caplog.set_level(logging.ERROR, logger="ccproxy")
    shapes = {
        "openai-chat": lambda e: e["error"]["message"],
        "claude-messages": lambda e: e["type"] == "error" and e["error"]["message"],
        "gemini-generate": lambda e: e["error"]["status"] == "UNAVAILABLE" and e["error"]["message"],
        "ollama-chat": lambda e: e["error"],
    }
    for name, message_of in shapes.items():
        status, _, body = invoke(module, load_event(EVENTS / f"{name}.json"))
        assert status == 503, (name, body)
        message = message_of(json.loads(body))
        assert message and "no access key" in message, (name, body)
        assert deployment.secret_id not in body
    status, _, _ = invoke(module, load_event(EVENTS / "health.json"))
    assert status == 200  # the adapter's readiness check keeps passing
    assert all(not fake.requests for fake in upstreams.values())
    refusals = [r for r in caplog.records if "refusing every request" in r.getMessage()]
    assert len(refusals) == 1  # said once, not once per request
    assert "no access key" in refusals[0].getMessage() and deployment.secret_id in refusals[0].getMessage()


def test_a_key_pushed_later_is_used_once_the_cached_secret_expires(deployment, upstreams):
    deployment.put_secret(secret_document(access_keys=[]))
    module = deployment.handler_module()
    event = load_event(EVENTS / "openai-chat.json")
    assert invoke(module, event)[0] == 503
    deployment.moto.client("secretsmanager").put_secret_value(
        SecretId=deployment.secret_id, SecretString=json.dumps(secret_document())
    )
    assert invoke(module, event)[0] == 503  # still the cached secret (max_age 300 s)
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()  # what the passing of max_age does
    status, _, body = invoke(module, event)
    assert status == 200, body


def test_an_unreadable_secret_refuses_with_the_reason(deployment, upstreams, monkeypatch):
    monkeypatch.setenv("CCPROXY_SECRET_ID", "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf")
    module = deployment.handler_module()
    status, _, body = invoke(module, load_event(EVENTS / "claude-messages.json"))
    assert status == 503
    assert "cannot be read" in json.loads(body)["error"]["message"]
    assert "missing-AbCdEf" not in body  # the client learns nothing about the deployment


def test_keys_in_the_config_are_never_used_on_lambda(deployment, upstreams):
    """The config names an access key and provider keys; on Lambda only the
    secret counts: the config's access key is refused and a provider with
    no key in the secret is a clear error, never an unauthenticated call."""
    config = yaml.safe_load(deployment.config_path.read_text())
    config["access_keys"] = ["ccp-from-the-config"]
    config["providers"]["up-claude"]["keys"] = ["sk-ant-literal-in-config"]
    deployment.config_path.write_text(yaml.safe_dump(config, sort_keys=False))  # alias order matters
    document = secret_document()
    del document["providers"][provider_id("claude")]
    deployment.put_secret(document)
    module = deployment.handler_module()

    event = load_event(EVENTS / "openai-chat.json")  # gpt-* goes to the claude fake
    event["headers"]["authorization"] = "Bearer ccp-from-the-config"
    status, _, body = invoke(module, event)
    assert status == 401, body

    status, _, body = invoke(module, load_event(EVENTS / "openai-chat.json"))
    assert status == 500, body
    message = json.loads(body)["error"]["message"]
    assert "up-claude" in message and "secret" in message
    assert not upstreams["claude"].requests


def test_the_shipped_config_takes_every_key_from_the_secret():
    from ccproxy.config import load
    from ccproxy.lambda_app import secret_only

    config = load(ROOT / "functions" / "ccproxy.yaml")
    stripped = secret_only(config)
    assert stripped.access_keys == []
    for provider_id_, provider in stripped.providers.items():
        assert provider.keys == [f"env:providers.{provider_id_} in the secret"]
        assert not provider.base_url.startswith(("http://127.", "http://localhost"))
