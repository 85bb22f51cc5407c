"""Research logs: one record per exchange, both sides of the conversion,
never a key, and a failing sink never fails the request."""

from __future__ import annotations

import json
import logging
import time

import anthropic
import openai
import pytest
from ccproxy.stores.logs import DirectorySink, S3Sink

from tests.fakes import scenarios
from tests.support.aws import moto_server  # noqa: F401  (fixture)

from .conftest import PROTOCOLS, UPSTREAM_KEYS, alias
from .drivers import ACCESS_KEY, QUESTION, TOOLS


@pytest.fixture
def sink_dir(stack, tmp_path):
    app = stack[2]
    app.state.recorder.sink = DirectorySink(tmp_path)
    yield tmp_path
    app.state.recorder.sink = None


def records(sink, count: int, timeout: float = 10.0) -> list[dict]:
    """The sink's records, once `count` have arrived (they are written after
    the answer)."""
    deadline = time.monotonic() + timeout
    while len(sink.keys()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return [sink.read(key) for key in sink.keys()]


def claude_client(proxy_url):
    return anthropic.Anthropic(base_url=proxy_url, api_key=ACCESS_KEY, max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
def test_one_record_per_request_with_both_sides(proxy_url, upstreams, sink_dir, stream):
    upstreams["gemini"].script("tool_call")
    client = claude_client(proxy_url)
    kwargs = dict(model=alias("gemini"), max_tokens=300, system="You are a test.",
                  messages=[{"role": "user", "content": QUESTION}],
                  tools=[{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in TOOLS])
    if stream:
        with client.messages.stream(**kwargs) as s:
            s.get_final_message()
    else:
        client.messages.create(**kwargs)
    (record,) = records(DirectorySink(sink_dir), 1)
    assert record["schema_version"] == 1 and record["stream"] is stream
    assert (record["client_protocol"], record["group"], record["alias"], record["model"]) == ("claude", "default", "via-gemini", "via-gemini")
    assert record["target"] == {"provider": "up-gemini", "model": "gemini-upstream", "protocol": "gemini"}
    assert record["upstream_model"] == "gemini-upstream"  # as the answer named it; the client saw its alias
    assert record["left_out"] == []
    assert record["system"] == "You are a test." and record["tools"] == ["get_weather", "get_time"]
    assert QUESTION in json.loads(record["client_request"])["messages"][0]["content"]
    assert "functionDeclarations" in record["upstream_request"]
    assert "functionCall" in record["upstream_response"]
    assert ("tool_use" in record["client_response"]) and ("input_json_delta" in record["client_response"]) is stream
    assert record["final"]["tool_calls"] == [{"name": "get_weather", "arguments": json.dumps(scenarios.WEATHER_ARGS, separators=(",", ":"))}]
    assert record["final"]["stop_reason"] == "tool_use"
    assert record["usage"]["input_tokens"] == scenarios.PROMPT_TOKENS
    timings = record["timings"]
    assert 0 < timings["upstream_first_byte_ms"] <= timings["client_first_byte_ms"] <= timings["duration_ms"]
    assert record["status"] == 200 and record["error"] is None
    assert record["key_fingerprint"].startswith("k-")


@pytest.mark.parametrize("stream", [False, True])
def test_pass_through_records_the_upstreams_model_name(proxy_url, upstreams, sink_dir, stream):
    upstreams["claude"].script("text")
    kwargs = dict(model=alias("claude"), max_tokens=64, messages=[{"role": "user", "content": QUESTION}])
    client = claude_client(proxy_url)
    if stream:
        with client.messages.stream(**kwargs) as s:
            answered = s.get_final_message()
    else:
        answered = client.messages.create(**kwargs)
    (record,) = records(DirectorySink(sink_dir), 1)
    assert answered.model == alias("claude")
    assert record["passthrough"] is True and record["upstream_model"] == "claude-upstream"


def test_what_the_upstream_cannot_take_is_recorded(proxy_url, upstreams, sink_dir):
    upstreams["openai"].script("text")
    claude_client(proxy_url).messages.create(
        model=alias("openai"), max_tokens=64, messages=[{"role": "user", "content": QUESTION}],
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
        extra_headers={"anthropic-beta": "context-1m-2025-08-07"})
    (record,) = records(DirectorySink(sink_dir), 1)
    assert record["left_out"] == ["server tool web_search (web_search)", "beta context-1m-2025-08-07"]


def test_failover_and_errors_are_recorded(proxy_url, upstreams, sink_dir):
    upstreams["openai"].script("rate_limit")
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=alias("openai"), messages=[{"role": "user", "content": QUESTION}])
    (record,) = records(DirectorySink(sink_dir), 1)
    assert record["status"] == 429 and record["error"]["status"] == 429
    assert [a["status"] for a in record["attempts"]] == [429]
    assert "rate_limit_error" in record["client_response"]


def test_midstream_errors_are_recorded(proxy_url, upstreams, sink_dir):
    upstreams["ollama"].script("midstream_error")
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=alias("ollama"), stream=True, messages=[{"role": "user", "content": QUESTION}]))
    (record,) = records(DirectorySink(sink_dir), 1)
    assert record["error"] and scenarios.PARTIAL_TEXT in record["final"]["text"]


def test_no_key_in_any_record_or_log_line(proxy_url, upstreams, sink_dir, caplog):
    caplog.set_level(logging.DEBUG)
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    for protocol in PROTOCOLS:
        # a client that pastes a key into its prompt does not leak it either
        client.chat.completions.create(
            model=alias(protocol), messages=[{"role": "user", "content": f"my key is {UPSTREAM_KEYS['openai']} ok"}])
        upstreams[protocol].script("rate_limit")
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=alias(protocol), messages=[{"role": "user", "content": "hi"}])
    stored = records(DirectorySink(sink_dir), 2 * len(PROTOCOLS))
    assert len(stored) == 2 * len(PROTOCOLS)
    text = json.dumps(stored) + "\n".join(r.getMessage() for r in caplog.records)
    for secret in [ACCESS_KEY, *filter(None, UPSTREAM_KEYS.values())]:
        assert secret not in text
    assert "[redacted]" in text


@pytest.mark.parametrize("stream", [False, True])
def test_records_in_s3_partitioned_by_date_and_hour(proxy_url, upstreams, stack, moto_server, stream):  # noqa: F811
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket="ccproxy-logs-test")
    sink = S3Sink("ccproxy-logs-test", "exchanges/", client=s3)
    app = stack[2]
    app.state.recorder.sink = sink
    try:
        before = len(sink.keys())
        client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
        if stream:
            list(client.chat.completions.create(model=alias("claude"), stream=True, messages=[{"role": "user", "content": QUESTION}]))
        else:
            client.chat.completions.create(model=alias("claude"), messages=[{"role": "user", "content": QUESTION}])
        stored = records(sink, before + 1)
    finally:
        app.state.recorder.sink = None
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ccproxy-logs-test")["Contents"]]
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert all(k.startswith(f"exchanges/dt={day}/hour=") and k.endswith(".json.gz") for k in keys)
    assert stored[-1]["final"]["text"] == scenarios.TEXT


def test_a_failing_sink_leaves_the_answer_intact(proxy_url, upstreams, stack, moto_server, caplog):  # noqa: F811
    app = stack[2]
    app.state.recorder.sink = S3Sink("no-such-bucket", "exchanges/", client=moto_server.client("s3"))
    try:
        client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
        answer = client.chat.completions.create(model=alias("gemini"), messages=[{"role": "user", "content": QUESTION}])
        assert answer.choices[0].message.content == scenarios.TEXT
        chunks = list(client.chat.completions.create(model=alias("gemini"), stream=True,
                                                     messages=[{"role": "user", "content": QUESTION}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == scenarios.TEXT
        deadline = time.monotonic() + 3
        while sum("exchange log not written" in r.getMessage() for r in caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sum("exchange log not written" in r.getMessage() for r in caplog.records) == 2
    finally:
        app.state.recorder.sink = None


def test_sampling_records_only_its_share(proxy_url, upstreams, stack, sink_dir):
    logs = stack[2].state.live.config.logs
    logs.sample = 0.0
    try:
        client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model=alias("openai"), messages=[{"role": "user", "content": QUESTION}])
        time.sleep(0.2)
        assert DirectorySink(sink_dir).keys() == []
    finally:
        logs.sample = 1.0
