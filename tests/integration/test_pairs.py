"""All 25 pairs of client protocol and upstream protocol, through the
official SDKs, whole and streamed; each test checks both sides."""

from __future__ import annotations

import json

import pytest

from tests.fakes import scenarios

from .conftest import PROTOCOLS, UPSTREAM_MODELS, alias
from .drivers import QUESTION, TOOL_RESULT

PAIRS = [pytest.param(c, u, id=f"{c}-on-{u}") for c in PROTOCOLS for u in PROTOCOLS]
STREAMING = [pytest.param(False, id="whole"), pytest.param(True, id="stream")]

# A Responses client sees the response's status: its calls are output items
# of a completed response, with no stop reason of their own.
STOP_NORMAL = {"openai": "stop", "claude": "end_turn", "gemini": "STOP", "ollama": "stop", "responses": "completed"}
STOP_TOOLS = {"openai": "tool_calls", "claude": "tool_use", "gemini": "STOP", "ollama": "stop", "responses": "completed"}
RATE_LIMIT_ERRORS = {"openai": "RateLimitError", "claude": "RateLimitError", "gemini": "ClientError", "ollama": "ResponseError",
                     "responses": "RateLimitError"}
# The client protocols whose every call carries an id (Gemini's and Ollama's may not).
CALLS_WITH_IDS = ("openai", "claude", "responses")


def sent_model(upstream: str, recorded) -> str:
    if upstream == "gemini":
        return recorded.path.rsplit("/models/", 1)[1].split(":", 1)[0]
    return recorded.json["model"]


def check_sent(upstream: str, fake) -> dict:
    recorded = fake.last
    assert sent_model(upstream, recorded) == UPSTREAM_MODELS[upstream]
    assert recorded.path.startswith("/prefix/"), "the base URL's own path was dropped"
    assert QUESTION in json.dumps(recorded.json, ensure_ascii=False)
    return recorded.json


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("client,upstream", PAIRS)
def test_text(client, upstream, stream, upstreams, driver_for):
    upstreams[upstream].script("text")
    outcome = driver_for(client).chat(alias(upstream), stream=stream)
    assert outcome.text == scenarios.TEXT
    assert outcome.calls == []
    assert outcome.stop == STOP_NORMAL[client]
    assert (outcome.input_tokens, outcome.output_tokens) == (scenarios.PROMPT_TOKENS, scenarios.OUTPUT_TOKENS)
    # The name the client asked for, never the upstream's, pass-through included
    # (Claude Code drops its thinking from history when they differ).
    assert outcome.models == {alias(upstream)}
    check_sent(upstream, upstreams[upstream])


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("client,upstream", PAIRS)
def test_tool_call(client, upstream, stream, upstreams, driver_for):
    upstreams[upstream].script("tool_call")
    outcome = driver_for(client).chat(alias(upstream), stream=stream, tools=True)
    assert outcome.calls == [("get_weather", {"city": "Paris"})]
    assert outcome.stop == STOP_TOOLS[client]
    if client in CALLS_WITH_IDS:
        assert all(outcome.call_ids), "every call needs an id"
    sent = check_sent(upstream, upstreams[upstream])
    assert "get_weather" in json.dumps(sent)


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("client,upstream", PAIRS)
def test_parallel_tool_calls(client, upstream, stream, upstreams, driver_for):
    upstreams[upstream].script("parallel_tools")
    outcome = driver_for(client).chat(alias(upstream), stream=stream, tools=True)
    assert outcome.calls == [("get_weather", {"city": "Paris"}), ("get_time", {"timezone": "Europe/Paris"})]
    assert outcome.stop == STOP_TOOLS[client]
    if client in CALLS_WITH_IDS:
        assert len(set(outcome.call_ids)) == 2, "parallel calls need distinct ids"


def tool_results_sent(upstream: str, body: dict) -> list[tuple[str, str]]:
    """(tool name or call id, result text) for each tool result the upstream got."""
    found = []
    if upstream == "openai":
        calls = {c["id"]: c["function"]["name"] for m in body["messages"] for c in m.get("tool_calls") or []}
        for m in body["messages"]:
            if m["role"] == "tool":
                content = m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])
                found.append((calls[m["tool_call_id"]], content))
    elif upstream == "claude":
        calls = {
            b["id"]: b["name"] for m in body["messages"] if isinstance(m["content"], list) for b in m["content"] if b["type"] == "tool_use"
        }
        for m in body["messages"]:
            for b in m["content"] if isinstance(m["content"], list) else []:
                if b["type"] == "tool_result":
                    content = b["content"] if isinstance(b["content"], str) else "".join(p["text"] for p in b["content"])
                    found.append((calls[b["tool_use_id"]], content))
    elif upstream == "responses":
        items = body["input"] if isinstance(body["input"], list) else []
        calls = {i["call_id"]: i["name"] for i in items if i.get("type") == "function_call"}
        for i in items:
            if i.get("type") == "function_call_output":
                output = i["output"] if isinstance(i["output"], str) else "".join(p["text"] for p in i["output"])
                found.append((calls[i["call_id"]], output))
    elif upstream == "gemini":
        for c in body["contents"]:
            for p in c["parts"]:
                if "functionResponse" in p:
                    response = p["functionResponse"]["response"]
                    found.append((p["functionResponse"]["name"], response.get("output", json.dumps(response))))
    else:
        for m in body["messages"]:
            if m["role"] == "tool":
                found.append((m.get("tool_name"), m["content"]))
    return found


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("client,upstream", PAIRS)
def test_tool_result_round_trip(client, upstream, stream, upstreams, driver_for):
    upstreams[upstream].script("text")
    outcome = driver_for(client).round_trip(alias(upstream), "call_abc123", stream=stream)
    assert outcome.text == scenarios.TEXT
    sent = check_sent(upstream, upstreams[upstream])
    assert tool_results_sent(upstream, sent) == [("get_weather", TOOL_RESULT)]


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("client,upstream", PAIRS)
def test_thinking(client, upstream, stream, upstreams, driver_for):
    upstreams[upstream].script("thinking")
    outcome = driver_for(client).chat(alias(upstream), stream=stream, thinking=True)
    assert outcome.text == scenarios.THINKING_ANSWER
    assert outcome.thinking == scenarios.THINKING


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("client,upstream", PAIRS)
def test_rate_limit_keeps_its_status(client, upstream, stream, upstreams, driver_for):
    upstreams[upstream].script("rate_limit", retry_after=7)
    failure = driver_for(client).fail(alias(upstream), stream=stream)
    assert failure.status == 429
    assert failure.kind == RATE_LIMIT_ERRORS[client]


@pytest.mark.parametrize("client,upstream", PAIRS)
def test_error_mid_stream_ends_the_stream_with_an_error(client, upstream, upstreams, driver_for):
    upstreams[upstream].script("midstream_error")
    failure = driver_for(client).fail(alias(upstream), stream=True)
    assert failure.message, "the client must be told what went wrong"
