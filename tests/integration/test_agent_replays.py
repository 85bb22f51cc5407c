"""Every request the real agents sent (recorded in tests/agents/ from Claude
Code, Gemini CLI and opencode), replayed through the proxy to each upstream
protocol. The strict fakes refuse what the real APIs refuse, so a request
shape an agent really sends that the proxy cannot carry fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.fakes.responses import ENCRYPTED

from .conftest import PROTOCOLS, alias
from .drivers import ACCESS_KEY

RECORDINGS = Path(__file__).parent.parent / "agents"
# Headers that belong to the recorded connection or carry the recorded key.
DROPPED = {"host", "content-length", "connection", "accept-encoding", "authorization", "x-api-key", "x-goog-api-key"}
AUTH = {"claude": "x-api-key", "gemini": "x-goog-api-key", "openai": "authorization", "responses": "authorization"}
GEMINI_MODEL = re.compile(r"/models/[^/:]+:")
# How each client protocol's stream ends when nothing went wrong.
STREAM_END = {"claude": b"event: message_stop", "openai": b"data: [DONE]", "gemini": b'"finishReason"',
              "responses": b"event: response.completed"}


def client_protocol(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "claude"
    if path.startswith("/v1/chat/completions"):
        return "openai"
    if path.startswith("/v1/responses"):
        return "responses"
    return "gemini"


def as_made_here(body: dict) -> dict:
    """A recorded Responses conversation replayed on the fake Responses
    upstream as if that upstream had had it: the reasoning the recording
    server encrypted becomes the fake's, which it can read back."""
    items = body.get("input")
    if not isinstance(items, list):
        return body
    mine = [{**i, "encrypted_content": ENCRYPTED} if i.get("type") == "reasoning" and i.get("encrypted_content") else i
            for i in items]
    return {**body, "input": mine}


def replays() -> list:
    params = []
    for file in sorted(RECORDINGS.glob("*.json")):
        recording = json.loads(file.read_text())
        for index, request in enumerate(recording["requests"]):
            if request["method"] != "POST":
                continue
            for upstream in PROTOCOLS:
                params.append(pytest.param(file.name, index, upstream, id=f"{file.stem}-{index}-on-{upstream}"))
    return params


def test_recordings_are_there_and_keyless():
    files = sorted(RECORDINGS.glob("*.json"))
    assert {json.loads(f.read_text())["agent"] for f in files} >= {"claude-code", "gemini-cli", "opencode"}
    for file in files:
        text = file.read_text()
        assert "sk-fake" not in text and "<redacted>" in text


def test_claude_code_probes_the_root_first(proxy_url):
    recording = json.loads((RECORDINGS / "claude-code-sonnet.json").read_text())
    probe = recording["requests"][0]
    assert (probe["method"], probe["path"]) == ("HEAD", "/")
    assert httpx.head(proxy_url + "/").status_code == 200


@pytest.mark.parametrize("name,index,upstream", replays())
def test_agent_request_replayed_on_every_upstream(name, index, upstream, proxy_url, upstreams):
    recorded = json.loads((RECORDINGS / name).read_text())["requests"][index]
    protocol = client_protocol(recorded["path"])
    body = recorded["body"]
    path = recorded["path"]
    if protocol == "gemini":
        path = GEMINI_MODEL.sub(f"/models/{alias(upstream)}:", path)
    else:
        body = {**body, "model": alias(upstream)}
    if protocol == upstream == "responses":
        body = as_made_here(body)
    headers = {k: v for k, v in recorded["headers"].items() if k not in DROPPED}
    headers[AUTH[protocol]] = f"Bearer {ACCESS_KEY}" if AUTH[protocol] == "authorization" else ACCESS_KEY
    upstreams[upstream].script("text")
    response = httpx.post(proxy_url + path, params=recorded["query"], headers=headers, json=body, timeout=30)
    if upstream == "ollama" and "application/pdf" in json.dumps(body):
        # Ollama reads no PDFs: the agent is told so, in its own protocol.
        assert response.status_code == 400 and "application/pdf" in response.text
        assert upstreams[upstream].requests == []
        return
    assert response.status_code == 200, response.text[:2000]
    streamed = "stream" in path.split(":")[-1] or body.get("stream") is True
    if streamed:
        assert STREAM_END[protocol] in response.content, response.text[-2000:]
        assert b"event: error" not in response.content and b'data: {"error"' not in response.content
    else:
        answer = response.json()
        assert "error" not in answer


def test_gemini_cli_router_schema_reaches_openai_as_json_schema(proxy_url, upstreams):
    """Gemini CLI's model router asks for JSON with upper-case type names,
    which only Gemini reads; others get JSON Schema's lower-case ones."""
    recorded = json.loads((RECORDINGS / "gemini-cli-default.json").read_text())["requests"][0]
    assert recorded["path"].endswith(":generateContent")
    upstreams["openai"].script("text")
    path = GEMINI_MODEL.sub(f"/models/{alias('openai')}:", recorded["path"])
    response = httpx.post(proxy_url + path, headers={"x-goog-api-key": ACCESS_KEY}, json=recorded["body"], timeout=30)
    assert response.status_code == 200
    schema = upstreams["openai"].last.json["response_format"]["json_schema"]["schema"]
    assert schema["type"] == "object"
    assert {name: sub["type"] for name, sub in schema["properties"].items()} == {
        "complexity_reasoning": "string", "complexity_score": "integer"}
