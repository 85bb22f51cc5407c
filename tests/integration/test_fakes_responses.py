"""The fake Responses API upstream on its own, with no proxy in between: its
answers parse in the openai SDK (`responses.create`, `stream=True` and the
`responses.stream()` helper that checks the event order), it refuses what
the real API refuses and accepts what the SDK sends, and its streams carry
the full event sequence with contiguous sequence numbers.

If these pass, a failing Responses cell in the pair tests points at the
proxy, not at the fake or the driver.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx
import openai
import pytest

from tests.fakes import FakeUpstream, scenarios
from tests.fakes.responses import COMPACTED, ENCRYPTED, MESSAGE_ID, REASONING_ID, RESPONSE_ID
from tests.support.server import BackgroundServer

from .drivers import ACCESS_KEY, QUESTION, TOOL_RESULT, TOOLS, ResponsesDriver

CALL_IDS = scenarios.CALL_IDS["responses"]
WEATHER_TOOL = {"type": "function", **TOOLS[0], "strict": False}
CONTENT = ("text", "tool_call", "parallel_tools", "thinking", "thinking_tool_call", "web_search")
EXPECTED_CALLS = {
    "tool_call": [("get_weather", scenarios.WEATHER_ARGS)],
    "parallel_tools": [("get_weather", scenarios.WEATHER_ARGS), ("get_time", scenarios.TIME_ARGS)],
    "thinking_tool_call": [("get_weather", scenarios.WEATHER_ARGS)],
}
EXPECTED_TEXT = {"text": scenarios.TEXT, "thinking": scenarios.THINKING_ANSWER, "web_search": scenarios.TEXT}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream("responses", key=ACCESS_KEY)
    server = BackgroundServer(fake.app).start()
    yield fake, server.url
    server.stop()


@pytest.fixture
def fake(served) -> Iterator[FakeUpstream]:
    served[0].reset()
    yield served[0]


@pytest.fixture
def url(served) -> str:
    return served[1]


def client(url: str, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=ACCESS_KEY, max_retries=0, **kwargs)


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ACCESS_KEY}", **kwargs.pop("headers", {})}
    return httpx.post(url + "/v1/responses", json=body, headers=headers, timeout=10, **kwargs)


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE record."""
    records = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        records.append((lines["event"], json.loads(lines["data"])))
    return records


# ---------------------------------------------------------------- answers parse


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("scenario", CONTENT)
def test_the_sdk_parses_every_content_scenario(fake, url, scenario, stream):
    fake.script(scenario)
    tools = scenario in EXPECTED_CALLS
    outcome = ResponsesDriver(url).chat("gpt-x", stream=stream, tools=tools, thinking="thinking" in scenario)
    assert fake.violations == [], "the fake refused what the openai SDK sent"
    assert outcome.text == EXPECTED_TEXT.get(scenario, "")
    assert outcome.thinking == (scenarios.THINKING if "thinking" in scenario else "")
    assert outcome.calls == EXPECTED_CALLS.get(scenario, [])
    assert outcome.call_ids == list(CALL_IDS[: len(outcome.calls)])
    assert outcome.stop == "completed"
    assert (outcome.input_tokens, outcome.output_tokens) == (scenarios.PROMPT_TOKENS, scenarios.OUTPUT_TOKENS)
    assert outcome.models == {"gpt-x"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_usage_details_and_reasoning_items(fake, url, stream):
    fake.script("thinking_tool_call")
    kwargs = dict(model="gpt-x", input=QUESTION, tools=[WEATHER_TOOL], reasoning={"effort": "low", "summary": "auto"},
                  include=["reasoning.encrypted_content"])
    if stream:
        with client(url).responses.stream(**kwargs) as events:
            response = events.get_final_response()
    else:
        response = client(url).responses.create(**kwargs)
    usage = response.usage
    assert usage.input_tokens_details.cached_tokens == scenarios.CACHED_TOKENS
    assert usage.output_tokens_details.reasoning_tokens == scenarios.THINKING_TOKENS
    assert usage.total_tokens == scenarios.PROMPT_TOKENS + scenarios.OUTPUT_TOKENS
    reasoning, call = response.output
    assert (reasoning.type, reasoning.id, reasoning.encrypted_content) == ("reasoning", REASONING_ID, ENCRYPTED)
    assert (call.type, call.id[:3], call.call_id, call.status) == ("function_call", "fc_", CALL_IDS[0], "completed")


def test_reasoning_summaries_only_when_asked(fake, url):
    """Like the API: a reasoning model reasons anyway, but shows a summary
    (and its encrypted content) only when the request asks for them."""
    fake.script("thinking")
    response = client(url).responses.create(model="gpt-x", input=QUESTION, reasoning={"effort": "low"})
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary == [] and reasoning.encrypted_content is None
    assert response.usage.output_tokens_details.reasoning_tokens == scenarios.THINKING_TOKENS


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_custom_tool_is_called_with_a_raw_string(fake, url, stream):
    fake.script("tool_call")
    tool = {"type": "custom", "name": "get_weather", "description": "Weather, as free text"}
    kwargs = dict(model="gpt-x", input=QUESTION, tools=[tool])
    if stream:
        with client(url).responses.stream(**kwargs) as events:
            kinds = [e.type for e in events]
            response = events.get_final_response()
        assert "response.custom_tool_call_input.delta" in kinds and "response.custom_tool_call_input.done" in kinds
    else:
        response = client(url).responses.create(**kwargs)
    (call,) = response.output
    assert (call.type, call.name, call.call_id) == ("custom_tool_call", "get_weather", CALL_IDS[0])
    assert json.loads(call.input) == scenarios.WEATHER_ARGS


def test_web_search_and_its_citations(fake, url):
    fake.script("web_search")
    response = client(url).responses.create(model="gpt-x", input=QUESTION, tools=[{"type": "web_search"}])
    search, message = response.output
    assert search.type == "web_search_call" and search.action.query == scenarios.SEARCH[0]
    cited = [(a.url, a.title) for a in message.content[0].annotations]
    assert cited == list(scenarios.SEARCH[1])


def test_count_input_tokens(fake, url):
    counted = client(url).responses.input_tokens.count(model="gpt-x", input=QUESTION, tools=[WEATHER_TOOL])
    assert counted.input_tokens == scenarios.COUNT_TOKENS
    assert fake.last.path == "/v1/responses/input_tokens" and fake.violations == []


def test_compaction_keeps_the_user_messages_then_one_compaction_item(fake, url):
    conversation = [
        {"role": "user", "content": QUESTION},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "And tomorrow?"}]},
    ]
    compacted = client(url).responses.compact(model="gpt-x", input=conversation, instructions="Be terse.")
    assert [item.type for item in compacted.output] == ["message", "message", "compaction"]
    assert compacted.output[-1].encrypted_content == COMPACTED
    assert compacted.usage.input_tokens == scenarios.PROMPT_TOKENS
    assert fake.last.path == "/v1/responses/compact" and fake.violations == []


@pytest.mark.parametrize("body_,expected", [
    ({"input": QUESTION}, "model: field required"),
    ({"model": "gpt-x", "input": QUESTION, "stream": True}, "stream: Unknown parameter"),
    ({"model": "gpt-x", "input": QUESTION, "tools": []}, "tools: Unknown parameter"),
    ({"model": "gpt-x", "input": QUESTION, "service_tier": "cheap"}, "service_tier"),
    ({"model": "gpt-x", "input": 3}, "input: must be a string or an array of input items"),
], ids=["no-model", "stream", "tools", "service-tier", "input"])
def test_compaction_refuses_what_the_api_refuses(fake, url, body_, expected):
    headers = {"authorization": f"Bearer {ACCESS_KEY}"}
    answer = httpx.post(url + "/v1/responses/compact", json=body_, headers=headers, timeout=10)
    assert answer.status_code == 400
    assert any(expected in v for v in fake.violations), fake.violations


# ---------------------------------------------------------------- the stream itself


@pytest.mark.parametrize("scenario", CONTENT)
def test_the_event_sequence(fake, url, scenario):
    fake.script(scenario)
    body = {"model": "gpt-x", "input": QUESTION, "stream": True, "reasoning": {"summary": "auto"}}
    response = post(url, body)
    assert response.headers["content-type"].startswith("text/event-stream")
    records = sse(response.content)
    assert all(name == data["type"] for name, data in records), "each event name repeats data.type"
    assert [data["sequence_number"] for _, data in records] == list(range(len(records)))
    kinds = [name for name, _ in records]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert records[0][1]["response"]["status"] == "in_progress" and records[0][1]["response"]["output"] == []
    added = [d["output_index"] for n, d in records if n == "response.output_item.added"]
    done = [d["output_index"] for n, d in records if n == "response.output_item.done"]
    assert added == done == list(range(len(records[-1][1]["response"]["output"])))
    if "text" in scenario or scenario in ("thinking", "web_search"):
        message = kinds.index("response.output_item.added", kinds.index("response.in_progress"))
        assert "response.content_part.added" in kinds[message:] and "response.output_text.done" in kinds


def test_streams_are_cut_awkwardly(fake, url):
    fake.script("text")
    chunks = []
    with httpx.stream("POST", url + "/v1/responses", json={"model": "gpt-x", "input": QUESTION, "stream": True},
                      headers={"authorization": f"Bearer {ACCESS_KEY}"}) as response:
        chunks = list(response.iter_raw())
    assert len(chunks) > 50
    undecodable = 0
    for chunk in chunks:
        try:
            chunk.decode()
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable, "some chunk must end inside a multibyte character"


def test_a_response_without_completed_fails_the_stream_helper(fake, url):
    fake.script("truncated")
    with pytest.raises(RuntimeError, match="response.completed"):
        with client(url).responses.stream(model="gpt-x", input=QUESTION) as events:
            events.get_final_response()
    fake.script("truncated")
    assert "response.completed" not in post(url, {"model": "gpt-x", "input": QUESTION, "stream": True}).text
    fake.script("truncated")
    with pytest.raises(ValueError):
        json.loads(post(url, {"model": "gpt-x", "input": QUESTION}).content)


def test_a_midstream_error_is_response_failed_after_some_text(fake, url):
    fake.script("midstream_error")
    events = list(client(url).responses.create(model="gpt-x", input=QUESTION, stream=True))
    assert events[-1].type == "response.failed" and events[-1].response.id == RESPONSE_ID
    assert events[-1].response.error.message and events[-1].response.status == "failed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == scenarios.PARTIAL_TEXT
    assert [e.sequence_number for e in events] == list(range(len(events)))
    fake.script("midstream_error")
    failure = ResponsesDriver(url).fail("gpt-x", stream=True)
    assert (failure.status, failure.kind) == (None, "ResponseFailedEvent") and failure.message
    fake.script("midstream_error")
    assert post(url, {"model": "gpt-x", "input": QUESTION}).status_code == 503


def test_a_stall_sends_the_start_then_nothing(fake, url):
    fake.script("stall", seconds=5)
    with pytest.raises(openai.APITimeoutError):
        with client(url, timeout=0.5).responses.stream(model="gpt-x", input=QUESTION) as events:
            for _ in events:
                pass
    deadline = time.monotonic() + 5
    while fake.hung_up == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.hung_up == 1


def test_a_hang_times_the_client_out(fake, url):
    fake.script("hang", seconds=5)
    with pytest.raises(openai.APITimeoutError):
        client(url, timeout=0.3).responses.create(model="gpt-x", input=QUESTION)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    "scenario,status,error",
    [
        ("rate_limit", 429, openai.RateLimitError),
        ("server_error", 500, openai.InternalServerError),
        ("overloaded", 503, openai.InternalServerError),
    ],
)
def test_error_scenarios_raise_the_sdk_error_for_the_status(fake, url, scenario, status, error, stream):
    fake.script(scenario)
    failure = ResponsesDriver(url).fail("gpt-x", stream=stream)
    assert (failure.status, failure.kind) == (status, error.__name__)


def test_errors_are_in_the_openai_shape_with_retry_after(fake, url):
    fake.script("rate_limit", retry_after=3)
    response = post(url, {"model": "gpt-x", "input": QUESTION})
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_bad_auth_bad_route_and_bad_body(fake, url):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0).responses.create(model="m", input="hi")
    with pytest.raises(openai.NotFoundError):
        client(url).responses.retrieve("resp_123")
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).responses.create(model="m", input="hi", extra_body={"messages": []})
    assert "Unknown parameter" in caught.value.message
    assert len(fake.violations) == 3


# ---------------------------------------------------------------- what it accepts and refuses


def user(text: str = QUESTION) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(call_id: str = "call_1", **extra: Any) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": '{"city":"Paris"}', **extra}


def result(call_id: str = "call_1", **extra: Any) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": TOOL_RESULT, **extra}


def reasoning(**extra: Any) -> dict[str, Any]:
    return {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Look it up."}], **extra}


def body(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-x", "input": list(items), **extra}


CLOSED_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}

VALID = [
    pytest.param({"model": "gpt-x", "input": "hi"}, id="string-input"),
    pytest.param(body(user(), call(), result(), tools=[WEATHER_TOOL]), id="tool-round-trip"),
    pytest.param(body(user(), call(id="fc_1"), result(), tools=[WEATHER_TOOL]), id="call-with-its-own-id"),
    pytest.param(body(user(), reasoning(encrypted_content=ENCRYPTED), call(), result()), id="reasoning-encrypted"),
    pytest.param(body(user(), reasoning(id=REASONING_ID), call(), result()), id="reasoning-stored"),
    pytest.param(body(result(), previous_response_id=RESPONSE_ID), id="output-for-the-previous-response"),
    pytest.param(body(user(), {"type": "item_reference", "id": MESSAGE_ID}, user("And?")), id="item-reference"),
    pytest.param(body(user(), {"role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]}), id="assistant-output-text"),
    pytest.param(body({"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]}, user()),
                 id="developer-message"),
    pytest.param(body(user(), {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin"},
                      {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"},
                      tools=[{"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark",
                                                                                 "definition": "start: /.+/"}}]),
                 id="custom-tool-round-trip"),
    pytest.param(body(user(), tools=[{**WEATHER_TOOL, "strict": True, "parameters": CLOSED_SCHEMA}],
                      tool_choice={"type": "function", "name": "get_weather"}), id="strict-closed-schema"),
    pytest.param(body(user(), tools=[{"type": "web_search"}], include=["web_search_call.action.sources"]), id="web-search"),
    pytest.param(body(user(), tools=[{"type": "web_search_preview"}], tool_choice={"type": "web_search_preview"}),
                 id="forced-web-search-preview"),
    pytest.param(body(user(), tools=[{"type": "web_search"}],
                      tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "web_search"}]}),
                 id="forced-web-search"),
    pytest.param(body(user(), text={"format": {"type": "json_schema", "name": "w", "schema": CLOSED_SCHEMA, "strict": True}}),
                 id="json-schema-format"),
    pytest.param(body(user(), instructions="Be brief.", max_output_tokens=16, store=False, stream=True,
                      stream_options={"include_obfuscation": False}, reasoning={"effort": "high", "summary": "auto"}),
                 id="options"),
    pytest.param(body(user([{"type": "input_text", "text": "What is it?"}, {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                            {"type": "input_file", "file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"}])),
                 id="image-and-file"),
]

INVALID = [
    pytest.param(body(user(), tools=[{"type": "function", "function": TOOLS[0]}]), "Responses tools are flat", id="nested-tool"),
    pytest.param(body(user(), tools=[{"type": "function", **TOOLS[0]}]), "tools[0].strict: field required", id="no-strict"),
    pytest.param(body(user(), tools=[{**WEATHER_TOOL, "strict": True}]), "'additionalProperties' is required", id="strict-open-schema"),
    pytest.param({"model": "gpt-x", "messages": [user()]}, "messages: Unknown parameter", id="chat-messages"),
    pytest.param(body(user(), max_tokens=100), "max_tokens: Unknown parameter", id="chat-max-tokens"),
    pytest.param(body(user(), stream=True, stream_options={"include_usage": True}), "include_usage: Unknown parameter", id="include-usage"),
    pytest.param(body(user(), max_output_tokens=5), "must be >= 16", id="tiny-max-output-tokens"),
    pytest.param(body(user(), result()), "No tool call found for function call output with call_id call_1", id="orphan-output"),
    pytest.param(body(user(), call()), "No tool output found for function call call_1", id="unanswered-call"),
    pytest.param(body(user(), call(id="call_1"), result()), "Expected an ID that begins with 'fc'", id="call-id-as-item-id"),
    pytest.param(body(user(), reasoning(), call(), result()), "needs its encrypted_content or the id", id="bare-reasoning"),
    pytest.param(body(user(), reasoning(encrypted_content="EqQBsigned"), call(), result()), "could not be verified", id="foreign-encrypted"),
    pytest.param(body(user(), reasoning(id=REASONING_ID), call(), result(), store=False), "not persisted", id="unstored-reasoning"),
    pytest.param(body(user(), reasoning(id="rs_other"), call(), result()), "'rs_other' not found", id="unknown-reasoning"),
    pytest.param(body(user(), reasoning(encrypted_content=ENCRYPTED)), "without its required following item", id="reasoning-last"),
    pytest.param(body(user(), {"role": "assistant", "content": [{"type": "input_text", "text": "Hi."}]}),
                 "Invalid value: 'input_text'", id="assistant-input-text"),
    pytest.param(body({"role": "user", "content": [{"type": "output_text", "text": "Hi."}]}), "Invalid value: 'output_text'",
                 id="user-output-text"),
    pytest.param(body({"role": "tool", "content": "22C", "tool_call_id": "call_1"}), "role: 'tool' is not one of", id="tool-role"),
    pytest.param(body(user(), {"type": "function_result", "call_id": "x"}), "Invalid value: 'function_result'", id="unknown-item"),
    pytest.param(body(user(), tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}),
                 "tool_choice.function: Unknown parameter", id="chat-tool-choice"),
    pytest.param(body(user(), text={"format": {"type": "json_schema", "json_schema": {"name": "w", "schema": CLOSED_SCHEMA}}}),
                 "text.format.name: field required", id="nested-json-schema"),
    pytest.param(body(user(), previous_response_id="resp_other"), "'resp_other' not found", id="unknown-previous"),
    pytest.param(body(user(), tools=[{"type": "web_search"}], tool_choice={"type": "web_search"}),
                 "Invalid value: 'web_search'", id="web-search-tool-choice"),
    pytest.param(body(user(), tools=[{"type": "web_search"}], tool_choice={"type": "function", "name": "web_search"}),
                 "Tool choice 'function' 'web_search' not found", id="hosted-tool-as-function-choice"),
    pytest.param(body(user([{"type": "input_image", "image_url": "ftp://x/y.png"}])), "must be an http(s) URL", id="bad-image-url"),
    pytest.param(body(user(), reasoning={"effort": "low", "budget_tokens": 100}), "budget_tokens: Unknown parameter", id="reasoning-budget"),
    pytest.param({"model": "gpt-x"}, "input: field required", id="no-input"),
    pytest.param(body(), "must not be empty", id="empty-input"),
    pytest.param(body(user(), {"type": "function_call", "call_id": "c", "name": "f", "arguments": {"city": "Paris"}},
                      result("c")), "arguments: must be a string", id="object-arguments"),
]


@pytest.mark.parametrize("request_body", VALID)
def test_valid_requests_pass(fake, url, request_body):
    response = post(url, request_body)
    assert response.status_code == 200, response.text
    assert fake.violations == []


@pytest.mark.parametrize("request_body,expected", INVALID)
def test_violations_are_caught(fake, url, request_body, expected):
    response = post(url, request_body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert any(expected in v for v in fake.violations), fake.violations


def test_the_sdk_own_round_trip_is_accepted(fake, url):
    """What the SDK's users do: send the response's output back as input,
    with an output for each call; reasoning included, encrypted or stored."""
    oa = client(url)
    tools = [WEATHER_TOOL]
    for include in ([], ["reasoning.encrypted_content"]):
        fake.script("thinking_tool_call", "text")
        first = oa.responses.create(model="gpt-x", input=QUESTION, tools=tools, include=include,
                                    reasoning={"effort": "low", "summary": "auto"})
        history: list[Any] = [user(), *first.output]
        history += [result(item.call_id) for item in first.output if item.type == "function_call"]
        second = oa.responses.create(model="gpt-x", input=history, tools=tools)
        assert second.output_text == scenarios.TEXT
    assert fake.violations == []


def test_the_driver_round_trip_is_accepted(fake, url):
    for stream in (False, True):
        fake.script("text")
        outcome = ResponsesDriver(url).round_trip("gpt-x", "call_abc123", stream=stream)
        assert outcome.text == scenarios.TEXT
    assert fake.violations == []
    sent = fake.last.json["input"]
    assert [i.get("type", "message") for i in sent] == ["message", "function_call", "function_call_output"]
