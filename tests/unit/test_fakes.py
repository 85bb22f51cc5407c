"""The fake upstreams themselves: their answers parse in the official SDKs,
they reject what the real APIs reject, and their streams are cut awkwardly.

If these pass, an integration test failure points at the proxy, not the fake.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import anthropic
import httpx
import ollama
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

from tests.fakes import FakeUpstream, awkward_chunks, scenarios
from tests.support.server import BackgroundServer

PROTOCOLS = ("openai", "claude", "gemini", "ollama")
KEYS = {"openai": "sk-test-openai", "claude": "sk-ant-test", "gemini": "AIza-test-key", "ollama": "ollama-test-key"}
CONTENT = ("text", "tool_call", "parallel_tools", "thinking")
QUESTION = "What's the weather in Paris?"
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
    },
]
# Where each protocol's generation endpoint lives under a base URL, and a
# minimal valid body for it.
CHAT_PATHS = {
    "openai": "/v1/chat/completions",
    "claude": "/v1/messages",
    "gemini": "/v1beta/models/gemini-x:generateContent",
    "ollama": "/api/chat",
}
MINIMAL = {
    "openai": {"model": "gpt-x", "messages": [{"role": "user", "content": QUESTION}]},
    "claude": {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": QUESTION}]},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]},
    "ollama": {"model": "llama-x", "messages": [{"role": "user", "content": QUESTION}], "stream": False},
}


@dataclass
class Served:
    fake: FakeUpstream
    url: str

    def headers(self) -> dict[str, str]:
        """Valid auth (and required) headers for direct HTTP calls."""
        key = self.fake.key
        if self.fake.protocol == "claude":
            return {"anthropic-version": "2023-06-01", **({"x-api-key": key} if key else {})}
        if key is None:
            return {}
        if self.fake.protocol == "gemini":
            return {"x-goog-api-key": key}
        return {"authorization": f"Bearer {key}"}

    def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 10)
        return httpx.post(self.url + path, json=body, headers=headers, **kwargs)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Served]]:
    running: list[BackgroundServer] = []
    served = {}
    for protocol in PROTOCOLS:
        fake = FakeUpstream(protocol, key=KEYS[protocol])
        server = BackgroundServer(fake.app).start()
        running.append(server)
        served[protocol] = Served(fake, server.url)
    yield served
    for server in running:
        server.stop()


@pytest.fixture
def up(servers: dict[str, Served]) -> Iterator[dict[str, Served]]:
    for s in servers.values():
        s.fake.reset()
    yield servers


# -- the official SDKs, pointed straight at the fakes ----------------------------


@dataclass
class Outcome:
    text: str = ""
    thinking: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    stop: str | None = None
    prompt: int | None = None
    output: int | None = None


def run_openai(url: str, stream: bool, tools: bool, thinking: bool) -> Outcome:
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEYS["openai"], max_retries=0)
    kwargs: dict[str, Any] = {"model": "gpt-x", "messages": [{"role": "user", "content": QUESTION}]}
    if tools:
        kwargs["tools"] = [{"type": "function", "function": t} for t in TOOLS]
    if thinking:
        kwargs["reasoning_effort"] = "low"
    if stream:
        with client.chat.completions.stream(**kwargs, stream_options={"include_usage": True}) as s:
            for _ in s:
                pass
            completion = s.get_final_completion()
    else:
        completion = client.chat.completions.create(**kwargs)
    choice = completion.choices[0]
    message = choice.message
    calls = message.tool_calls or []
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == scenarios.CACHED_TOKENS
    return Outcome(
        text=message.content or "",
        thinking=getattr(message, "reasoning_content", None) or "",
        calls=[(c.function.name, json.loads(c.function.arguments)) for c in calls],
        ids=[c.id for c in calls],
        stop=choice.finish_reason,
        prompt=completion.usage.prompt_tokens,
        output=completion.usage.completion_tokens,
    )


def claude_client(url: str) -> anthropic.Anthropic:
    # anthropic 2.x sends the key as a Bearer token; the real API (and the
    # fake) want x-api-key, so send that too.
    return anthropic.Anthropic(
        base_url=url, api_key=KEYS["claude"], max_retries=0, default_headers={"x-api-key": KEYS["claude"]}
    )


def run_claude(url: str, stream: bool, tools: bool, thinking: bool) -> Outcome:
    client = claude_client(url)
    kwargs: dict[str, Any] = {"model": "claude-x", "max_tokens": 4096, "messages": [{"role": "user", "content": QUESTION}]}
    if tools:
        kwargs["tools"] = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in TOOLS]
    if thinking:
        kwargs["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    if stream:
        with client.messages.stream(**kwargs) as s:
            for _ in s:
                pass
            message = s.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    out = Outcome(stop=message.stop_reason)
    for block in message.content:
        if block.type == "text":
            out.text += block.text
        elif block.type == "thinking":
            out.thinking += block.thinking
            assert block.signature == scenarios.CLAUDE_SIGNATURE
        elif block.type == "tool_use":
            out.calls.append((block.name, dict(block.input)))
            out.ids.append(block.id)
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (16, 5), "cache arithmetic needs 16 fresh + 5 cached"
    out.prompt = usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    out.output = usage.output_tokens
    return out


def gemini_client(url: str) -> genai.Client:
    return genai.Client(api_key=KEYS["gemini"], http_options=gt.HttpOptions(base_url=url, api_version="v1beta"))


def gemini_config(tools: bool, thinking: bool) -> gt.GenerateContentConfig:
    config: dict[str, Any] = {"automatic_function_calling": {"disable": True}}
    if tools:
        config["tools"] = [gt.Tool(function_declarations=[gt.FunctionDeclaration(**t) for t in TOOLS])]
    if thinking:
        config["thinking_config"] = gt.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
    return gt.GenerateContentConfig(**config)


def run_gemini(url: str, stream: bool, tools: bool, thinking: bool) -> Outcome:
    client = gemini_client(url)
    config = gemini_config(tools, thinking)
    if stream:
        chunks = list(client.models.generate_content_stream(model="gemini-x", contents=QUESTION, config=config))
    else:
        chunks = [client.models.generate_content(model="gemini-x", contents=QUESTION, config=config)]
    out = Outcome()
    for chunk in chunks:
        candidate = chunk.candidates[0]
        for part in candidate.content.parts:
            if part.function_call:
                out.calls.append((part.function_call.name, dict(part.function_call.args)))
                out.ids.append(part.function_call.id or "")
            elif part.thought:
                out.thinking += part.text or ""
            else:
                out.text += part.text or ""
        if candidate.finish_reason:
            out.stop = candidate.finish_reason.value
        meta = chunk.usage_metadata
        if meta is not None:
            out.prompt = meta.prompt_token_count
            out.output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
    return out


def run_ollama(url: str, stream: bool, tools: bool, thinking: bool) -> Outcome:
    client = ollama.Client(host=url, headers={"Authorization": f"Bearer {KEYS['ollama']}"})
    kwargs: dict[str, Any] = {"model": "llama-x", "messages": [{"role": "user", "content": QUESTION}]}
    if tools:
        kwargs["tools"] = [{"type": "function", "function": t} for t in TOOLS]
    if thinking:
        kwargs["think"] = True
    responses = list(client.chat(**kwargs, stream=True)) if stream else [client.chat(**kwargs)]
    out = Outcome()
    for response in responses:
        out.text += response.message.content or ""
        out.thinking += response.message.thinking or ""
        for call in response.message.tool_calls or []:
            out.calls.append((call.function.name, dict(call.function.arguments)))
        if response.done:
            out.stop, out.prompt, out.output = response.done_reason, response.prompt_eval_count, response.eval_count
    assert responses[-1].done and sum(r.done for r in responses) == 1
    return out


RUNNERS = {"openai": run_openai, "claude": run_claude, "gemini": run_gemini, "ollama": run_ollama}
STOP = {"openai": "stop", "claude": "end_turn", "gemini": "STOP", "ollama": "stop"}
STOP_TOOLS = {"openai": "tool_calls", "claude": "tool_use", "gemini": "STOP", "ollama": "stop"}
EXPECTED_CALLS = {
    "text": [],
    "thinking": [],
    "tool_call": [("get_weather", scenarios.WEATHER_ARGS)],
    "parallel_tools": [("get_weather", scenarios.WEATHER_ARGS), ("get_time", scenarios.TIME_ARGS)],
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("scenario", CONTENT)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sdk_parses_every_content_scenario(up, protocol, scenario, stream):
    served = up[protocol]
    served.fake.script(scenario)
    out = RUNNERS[protocol](served.url, stream, tools=scenario in ("tool_call", "parallel_tools"), thinking=scenario == "thinking")
    assert served.fake.violations == [], "the fake refused what the official SDK sent"
    expected_text = {"text": scenarios.TEXT, "thinking": scenarios.THINKING_ANSWER}.get(scenario, "")
    assert out.text == expected_text
    assert out.thinking == (scenarios.THINKING if scenario == "thinking" else "")
    assert out.calls == EXPECTED_CALLS[scenario]
    assert out.stop == (STOP_TOOLS if out.calls else STOP)[protocol]
    assert (out.prompt, out.output) == (scenarios.PROMPT_TOKENS, scenarios.OUTPUT_TOKENS)


def test_call_ids_per_protocol(up):
    """Gemini's parallel calls have no ids (older models); everywhere else
    each call has its own id."""
    for protocol in ("openai", "claude", "gemini"):
        parallel = ["", ""] if protocol == "gemini" else list(scenarios.CALL_IDS[protocol])
        up[protocol].fake.script("parallel_tools", "parallel_tools", "tool_call")
        assert RUNNERS[protocol](up[protocol].url, False, True, False).ids == parallel
        assert RUNNERS[protocol](up[protocol].url, True, True, False).ids == parallel
        assert RUNNERS[protocol](up[protocol].url, False, True, False).ids == [scenarios.CALL_IDS[protocol][0]]


def test_gemini_streamed_turn_is_kept_in_chat_history(up):
    """F.3: the chats module drops a streamed turn unless every chunk has a
    non-empty part and one carries finishReason."""
    client = gemini_client(up["gemini"].url)  # keep it referenced: it closes its transport when collected
    chat = client.chats.create(model="gemini-x")
    for _ in chat.send_message_stream(QUESTION):
        pass
    history = chat.get_history(curated=True)
    assert len(history) >= 2 and history[0].role == "user" and {c.role for c in history[1:]} == {"model"}
    assert chat.send_message("And tomorrow?").text == scenarios.TEXT  # the replayed history is valid
    assert up["gemini"].fake.violations == []


def test_gemini_history_round_trip_is_valid(up):
    """What the SDK sends back after a tool call (signature and id echoed)
    passes the fake's Gemini 3 rules."""
    client = gemini_client(up["gemini"].url)
    config = gemini_config(tools=True, thinking=False)
    up["gemini"].fake.script("tool_call", "text")
    first = client.models.generate_content(model="gemini-x", contents=QUESTION, config=config)
    call_content = first.candidates[0].content
    call = call_content.parts[0].function_call
    answer = gt.Content(
        role="user",
        parts=[gt.Part(function_response=gt.FunctionResponse(id=call.id, name=call.name, response={"output": "22C"}))],
    )
    contents = [gt.Content(role="user", parts=[gt.Part(text=QUESTION)]), call_content, answer]
    second = client.models.generate_content(model="gemini-x", contents=contents, config=config)
    assert second.text == scenarios.TEXT
    assert up["gemini"].fake.violations == []


def test_ollama_generate(up):
    client = ollama.Client(host=up["ollama"].url, headers={"Authorization": f"Bearer {KEYS['ollama']}"})
    whole = client.generate(model="llama-x", prompt=QUESTION)
    assert whole.response == scenarios.TEXT and whole.done and whole.eval_count == scenarios.OUTPUT_TOKENS
    up["ollama"].fake.script("thinking")
    parts = list(client.generate(model="llama-x", prompt=QUESTION, think=True, stream=True))
    assert "".join(p.response for p in parts) == scenarios.THINKING_ANSWER
    assert "".join(p.thinking or "" for p in parts) == scenarios.THINKING
    assert up["ollama"].fake.violations == []


def test_ollama_missing_stream_means_stream(up):
    body = {k: v for k, v in MINIMAL["ollama"].items() if k != "stream"}
    response = up["ollama"].post("/api/chat", body)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert len(response.text.splitlines()) > 1


def test_count_tokens_and_embeddings(up):
    claude = claude_client(up["claude"].url)
    count = claude.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": QUESTION}])
    assert count.input_tokens == scenarios.COUNT_TOKENS
    gemini = gemini_client(up["gemini"].url)
    assert gemini.models.count_tokens(model="gemini-x", contents=QUESTION).total_tokens == scenarios.COUNT_TOKENS
    embedded = gemini.models.embed_content(model="embed-x", contents=["a", "b"])
    assert [e.values for e in embedded.embeddings] == [scenarios.EMBEDDING] * 2
    oai = openai.OpenAI(base_url=up["openai"].url + "/v1", api_key=KEYS["openai"], max_retries=0)
    vectors = oai.embeddings.create(model="embed-x", input=["a", "b"])
    assert [d.embedding for d in vectors.data] == [scenarios.EMBEDDING] * 2 and vectors.data[1].index == 1
    olm = ollama.Client(host=up["ollama"].url, headers={"Authorization": f"Bearer {KEYS['ollama']}"})
    assert olm.embed(model="embed-x", input="a").embeddings == [scenarios.EMBEDDING]
    single = up["gemini"].post("/v1beta/models/embed-x:embedContent", {"content": {"parts": [{"text": "a"}]}})
    assert single.json() == {"embedding": {"values": scenarios.EMBEDDING}}
    for s in up.values():
        assert s.fake.violations == []


# -- errors and faults ----------------------------------------------------------------


def sdk_error(protocol: str, url: str, stream: bool) -> Exception:
    try:
        RUNNERS[protocol](url, stream, tools=False, thinking=False)
    except Exception as exc:  # noqa: BLE001 - the point is which one
        return exc
    raise AssertionError("the SDK raised nothing")


ERROR_STATUS = {
    "rate_limit": dict.fromkeys(PROTOCOLS, 429),
    "server_error": dict.fromkeys(PROTOCOLS, 500),
    "overloaded": {"openai": 503, "claude": 529, "gemini": 503, "ollama": 503},
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("scenario", list(ERROR_STATUS))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_error_scenarios_raise_the_sdk_error_for_the_status(up, protocol, scenario, stream):
    up[protocol].fake.script(scenario)
    exc = sdk_error(protocol, up[protocol].url, stream)
    status = getattr(exc, "status_code", None) or getattr(exc, "code", None)
    assert status == ERROR_STATUS[scenario][protocol], repr(exc)
    if scenario == "rate_limit":
        expected = {"openai": openai.RateLimitError, "claude": anthropic.RateLimitError, "gemini": genai_errors.ClientError, "ollama": ollama.ResponseError}
        assert isinstance(exc, expected[protocol])
    if protocol == "claude" and scenario == "overloaded":
        assert isinstance(exc, anthropic.InternalServerError) and type(exc).__name__ == "OverloadedError"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rate_limit_shape_and_retry_after(up, protocol):
    served = up[protocol]
    served.fake.script("rate_limit", retry_after=3)
    response = served.post(CHAT_PATHS[protocol], MINIMAL[protocol])
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    body = response.json()
    if protocol == "openai":
        assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "rate_limit_exceeded"
    elif protocol == "claude":
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    elif protocol == "gemini":
        assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert body["error"]["details"][0] == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}
    else:
        assert isinstance(body["error"], str)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_midstream_error_raises_in_the_sdk_after_some_text(up, protocol):
    served = up[protocol]
    served.fake.script("midstream_error")
    exc = sdk_error(protocol, served.url, stream=True)
    expected = {"openai": openai.APIError, "claude": anthropic.APIStatusError, "gemini": genai_errors.ServerError, "ollama": ollama.ResponseError}
    assert isinstance(exc, expected[protocol]), repr(exc)
    served.fake.script("midstream_error")
    raw = served.post(stream_path(protocol), stream_body(protocol)).content.decode()
    assert "°" in raw and raw.index("°") < raw.rindex("error"), "the error comes after some text"
    served.fake.script("midstream_error")
    assert served.post(CHAT_PATHS[protocol], MINIMAL[protocol]).status_code == 503


FINISH_MARKERS = {"openai": "[DONE]", "claude": "message_stop", "gemini": "finishReason", "ollama": '"done":true'}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncated_stream_has_no_finish_marker(up, protocol):
    served = up[protocol]
    served.fake.script("truncated")
    raw = served.post(stream_path(protocol), stream_body(protocol)).content.decode()
    assert raw and FINISH_MARKERS[protocol] not in raw
    served.fake.script("truncated")
    with pytest.raises(ValueError):
        json.loads(served.post(CHAT_PATHS[protocol], MINIMAL[protocol]).content)


def test_truncated_abort_drops_the_connection(up):
    up["openai"].fake.script("truncated", abort=True)
    with pytest.raises(httpx.RemoteProtocolError):
        up["openai"].post(stream_path("openai"), stream_body("openai"))


def test_hang_waits_then_answers_and_times_out_clients(up):
    served = up["openai"]
    served.fake.script("hang", seconds=0.3)
    start = time.monotonic()
    assert served.post(CHAT_PATHS["openai"], MINIMAL["openai"]).status_code == 200
    assert time.monotonic() - start >= 0.3
    served.fake.script("hang", seconds=5)
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        served.post(CHAT_PATHS["openai"], MINIMAL["openai"], timeout=0.2)
    assert time.monotonic() - start < 2


# -- raw wire format -------------------------------------------------------------------


def stream_path(protocol: str) -> str:
    return "/v1beta/models/gemini-x:streamGenerateContent?alt=sse" if protocol == "gemini" else CHAT_PATHS[protocol]


def stream_body(protocol: str, **extra: Any) -> dict[str, Any]:
    body = dict(MINIMAL[protocol])
    if protocol != "gemini":
        body["stream"] = True
    return {**body, **extra}


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        events.append((name, "\n".join(data)))
    return events


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_stream_format(up, include_usage):
    up["openai"].fake.script("parallel_tools")
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    response = up["openai"].post(stream_path("openai"), stream_body("openai", **extra))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert sum("role" in d for d in deltas) == 1
    fragments = [t for d in deltas for t in d.get("tool_calls", [])]
    assert [f["index"] for f in fragments if "id" in f] == [0, 1]
    assert all("function" in f and ("name" in f["function"]) == ("id" in f) for f in fragments)
    for index, args in enumerate((scenarios.WEATHER_ARGS, scenarios.TIME_ARGS)):
        mine = [f["function"]["arguments"] for f in fragments if f["index"] == index]
        assert len(mine) > 2 and json.loads("".join(mine)) == args
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["delta"] == {}
    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert usage_chunks == [chunks[-1]] and chunks[-1]["choices"] == []
        assert all("usage" in c for c in chunks)
    else:
        assert usage_chunks == [] and all("usage" not in c for c in chunks)


def test_openai_thinking_uses_reasoning_content(up):
    up["openai"].fake.script("thinking")
    deltas = [json.loads(d)["choices"][0]["delta"] for _, d in sse_events(up["openai"].post(stream_path("openai"), stream_body("openai")).text)[:-1]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == scenarios.THINKING
    assert "".join(d.get("content") or "" for d in deltas) == scenarios.THINKING_ANSWER


def test_claude_stream_format(up):
    up["claude"].fake.script("thinking")
    events = sse_events(up["claude"].post(stream_path("claude"), stream_body("claude", max_tokens=4096)).text)
    parsed = [(name, json.loads(data)) for name, data in events]
    assert all(name == data["type"] for name, data in parsed)
    names = [name for name, _ in parsed]
    assert names[0] == "message_start" and names[-1] == "message_stop" and "ping" in names
    start = parsed[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and "input_tokens" in start["usage"]
    starts = [d for n, d in parsed if n == "content_block_start"]
    assert [d["index"] for d in starts] == [0, 1]
    assert starts[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert starts[1]["content_block"] == {"type": "text", "text": ""}
    delta_types = [d["delta"]["type"] for n, d in parsed if n == "content_block_delta"]
    assert delta_types.index("signature_delta") < delta_types.index("text_delta")
    message_delta = next(d for n, d in parsed if n == "message_delta")
    assert message_delta["usage"]["output_tokens"] == scenarios.OUTPUT_TOKENS


def test_claude_tool_stream_splits_input_json(up):
    up["claude"].fake.script("tool_call")
    events = [json.loads(d) for _, d in sse_events(up["claude"].post(stream_path("claude"), stream_body("claude")).text)]
    start = next(e for e in events if e["type"] == "content_block_start")
    assert start["content_block"]["input"] == {} and start["content_block"]["id"] == scenarios.CALL_IDS["claude"][0]
    fragments = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert len(fragments) > 2 and json.loads("".join(fragments)) == scenarios.WEATHER_ARGS


def test_gemini_stream_format(up):
    up["gemini"].fake.script("parallel_tools")
    response = up["gemini"].post(stream_path("gemini"), stream_body("gemini"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    raw = response.text
    assert "\r\n\r\n" in raw and "[DONE]" not in raw and "event:" not in raw
    chunks = [json.loads(data) for name, data in sse_events(raw)]
    calls = [p["functionCall"] for c in chunks for p in c["candidates"][0]["content"]["parts"] if "functionCall" in p]
    assert calls == [{"name": "get_weather", "args": scenarios.WEATHER_ARGS}, {"name": "get_time", "args": scenarios.TIME_ARGS}]
    assert sum(any("functionCall" in p for p in c["candidates"][0]["content"]["parts"]) for c in chunks) == 2
    assert all(c["candidates"][0]["content"]["parts"] for c in chunks)
    assert [bool(c["candidates"][0].get("finishReason")) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == scenarios.OUTPUT_TOKENS


def test_gemini_stream_needs_alt_sse(up):
    response = up["gemini"].post("/v1beta/models/gemini-x:streamGenerateContent", MINIMAL["gemini"])
    assert response.status_code == 400 and "alt=sse" in up["gemini"].fake.violations[0]


def test_ollama_stream_format(up):
    up["ollama"].fake.script("thinking")
    response = up["ollama"].post("/api/chat", stream_body("ollama"))
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.text.endswith("\n") and "\n\n" not in response.text
    lines = [json.loads(line) for line in response.text.split("\n")[:-1]]
    assert all(line["message"]["role"] == "assistant" for line in lines)
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["done_reason"] == "stop" and lines[-1]["prompt_eval_count"] == scenarios.PROMPT_TOKENS
    thinking_done = max(i for i, line in enumerate(lines) if line["message"].get("thinking"))
    assert thinking_done < min(i for i, line in enumerate(lines) if line["message"]["content"])


def test_ollama_tool_call_ids_and_object_arguments(up):
    up["ollama"].fake.script("tool_call")
    message = up["ollama"].post("/api/chat", MINIMAL["ollama"]).json()["message"]
    call = message["tool_calls"][0]
    assert call["id"].startswith("call_") and len(call["id"]) == len("call_") + 8
    assert call["function"]["arguments"] == scenarios.WEATHER_ARGS


# -- awkward chunking ------------------------------------------------------------------


def capture(app, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, list[bytes]]:
    """Run the ASGI app in-process and keep every body message it sends, to
    see exactly where the fake cut its stream (TCP may merge chunks)."""
    path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {**headers, "content-type": "application/json"}.items()],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    request = {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    async def receive() -> dict[str, Any]:
        nonlocal request
        if request is not None:
            message, request = request, None
            return message
        await asyncio.Event().wait()  # no disconnect while the app answers
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, [m.get("body", b"") for m in sent if m["type"] == "http.response.body" and m.get("body")]


def cuts_inside_multibyte(chunks: list[bytes]) -> int:
    """How many chunk boundaries split a UTF-8 character."""
    return sum(1 for chunk in chunks[1:] if chunk and 0x80 <= chunk[0] < 0xC0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_streams_are_cut_awkwardly(protocol):
    fake = FakeUpstream(protocol, key=None)
    status, chunks = capture(fake.app, stream_path(protocol), stream_body(protocol), {"anthropic-version": "2023-06-01"})
    assert status == 200 and fake.violations == []
    data = b"".join(chunks)
    assert len(chunks) > 20 and max(len(c) for c in chunks) <= 13
    assert cuts_inside_multibyte(chunks) >= 1
    boundaries = {sum(map(len, chunks[:i])) for i in range(1, len(chunks))}
    if protocol == "gemini":
        assert any(data[b - 1 : b + 1] == b"\r\n" for b in boundaries), "a cut falls between \\r and \\n"
    if protocol != "ollama":
        assert any(data[b - 3 : b + 3] == b"data: " for b in boundaries), "a cut falls inside 'data: '"
    data.decode()  # the pieces join up into valid UTF-8


def test_awkward_chunks_forces_the_interesting_cuts():
    data = "data: {\"t\":\"é\"}\r\n\r\n".encode()
    chunks = awkward_chunks(data, sizes=(100,))
    assert b"".join(chunks) == data
    assert cuts_inside_multibyte(chunks) == 1
    assert any(chunk.startswith(b"\n") for chunk in chunks)
    assert chunks[0] == b"dat"


# -- routing, auth, scripting -----------------------------------------------------------


def test_routes_match_on_the_path_suffix(up):
    for protocol in PROTOCOLS:
        response = up[protocol].post("/any/prefix" + CHAT_PATHS[protocol], MINIMAL[protocol])
        assert response.status_code == 200, (protocol, response.text)
        assert up[protocol].fake.last.path == "/any/prefix" + CHAT_PATHS[protocol]


def test_unknown_route_is_a_404_and_a_violation(up):
    response = up["openai"].post("/v1/completions", {"model": "x", "prompt": "hi"})
    assert response.status_code == 404 and "error" in response.json()
    assert up["openai"].fake.violations == ["no such route: POST /v1/completions"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_or_missing_key_is_refused_like_the_real_api(up, protocol):
    served = up[protocol]
    auth_header = {"openai": "authorization", "claude": "x-api-key", "gemini": "x-goog-api-key", "ollama": "authorization"}[protocol]
    wrong = "Bearer nope" if auth_header == "authorization" else "nope"
    response = served.post(CHAT_PATHS[protocol], MINIMAL[protocol], headers={auth_header: wrong})
    expected_status = 400 if protocol == "gemini" else 401
    assert response.status_code == expected_status
    body = response.json()
    if protocol == "gemini":
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        assert body["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    elif protocol == "claude":
        assert body["error"]["type"] == "authentication_error"
    elif protocol == "openai":
        assert body["error"]["code"] == "invalid_api_key"
    headers = {"anthropic-version": "2023-06-01"} if protocol == "claude" else {}
    missing = httpx.post(served.url + CHAT_PATHS[protocol], json=MINIMAL[protocol], headers=headers)
    assert missing.status_code == expected_status
    assert len(served.fake.violations) == 2 and len(served.fake.requests) == 2


def test_gemini_key_in_the_query_and_claude_needs_a_version(up):
    gemini = up["gemini"]
    ok = httpx.post(gemini.url + CHAT_PATHS["gemini"] + f"?key={KEYS['gemini']}", json=MINIMAL["gemini"])
    assert ok.status_code == 200
    claude = up["claude"]
    response = httpx.post(claude.url + "/v1/messages", json=MINIMAL["claude"], headers={"x-api-key": KEYS["claude"]})
    assert response.status_code == 400 and claude.fake.violations == ["claude: no anthropic-version header"]


def test_requests_are_recorded_before_validation(up):
    served = up["openai"]
    served.post("/v1/chat/completions?x=1", {"model": "m"})
    recorded = served.fake.last
    assert (recorded.method, recorded.path, recorded.query, recorded.json) == ("POST", "/v1/chat/completions", {"x": "1"}, {"model": "m"})
    assert recorded.headers["authorization"] == f"Bearer {KEYS['openai']}"
    assert served.fake.violations == ["chat/completions: messages: field required"]


def test_script_is_fifo_then_text_and_reset_clears():
    fake = FakeUpstream("openai")
    fake.script("tool_call", "thinking")
    assert fake.queued == ["tool_call", "thinking"]
    with pytest.raises(ValueError):
        fake.script("no_such_scenario")
    with pytest.raises(TypeError):
        fake.script("text", retry_after=3)
    status, chunks = capture(fake.app, "/v1/chat/completions", MINIMAL["openai"], {})
    assert json.loads(b"".join(chunks))["choices"][0]["finish_reason"] == "tool_calls"
    status, chunks = capture(fake.app, "/v1/chat/completions", MINIMAL["openai"], {})
    assert json.loads(b"".join(chunks))["choices"][0]["message"]["reasoning_content"] == scenarios.THINKING
    status, chunks = capture(fake.app, "/v1/chat/completions", MINIMAL["openai"], {})
    assert json.loads(b"".join(chunks))["choices"][0]["message"]["content"] == scenarios.TEXT
    fake.script("rate_limit")
    fake.reset()
    assert (fake.requests, fake.violations, fake.queued) == ([], [], [])


def test_a_refused_request_does_not_consume_the_script(up):
    served = up["openai"]
    served.fake.script("tool_call")
    assert served.post(CHAT_PATHS["openai"], {"model": "m", "messages": []}).status_code == 400
    assert served.post(CHAT_PATHS["openai"], MINIMAL["openai"]).json()["choices"][0]["finish_reason"] == "tool_calls"


# -- strict validation --------------------------------------------------------------------


def _oa(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-x", "messages": list(messages), **extra}


def _call(call_id: str, arguments: Any = '{"city":"Paris"}') -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


USER = {"role": "user", "content": QUESTION}
OA_TOOLS = [{"type": "function", "function": TOOLS[0]}]


def _cl(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 4096, "messages": list(messages), **extra}


TOOL_USE = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
TOOL_RESULT = {"type": "tool_result", "tool_use_id": "toolu_01", "content": "22C"}
CL_TOOLS = [{"name": "get_weather", "input_schema": TOOLS[0]["parameters"]}]


def _gm(*contents: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"contents": list(contents), **extra}


GM_USER = {"role": "user", "parts": [{"text": QUESTION}]}


def _gm_tool(parameters: dict[str, Any]) -> dict[str, Any]:
    return _gm(GM_USER, tools=[{"functionDeclarations": [{"name": "get_weather", "parameters": parameters}]}])


def _gm_call(call: dict[str, Any], signature: str | None = "c2lnbmF0dXJl") -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return {"role": "model", "parts": [part]}


def _gm_answer(**response: Any) -> dict[str, Any]:
    return {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "22C"}, **response}}]}


def _ol(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "llama-x", "messages": list(messages), "stream": False, **extra}


# (protocol, body, a fragment of the expected violation)
INVALID: list[Any] = [
    # OpenAI
    pytest.param("openai", {"messages": [USER]}, "model: field required", id="oa-no-model"),
    pytest.param("openai", _oa(), "messages: must not be empty", id="oa-no-messages"),
    pytest.param("openai", _oa({"role": "model", "content": "x"}), "messages[0].role", id="oa-bad-role"),
    pytest.param("openai", _oa(USER, {"role": "assistant", "tool_calls": [_call("c" * 41)]}, {"role": "tool", "tool_call_id": "c" * 41, "content": "22C"}),
                 "string too long", id="oa-41-char-tool-id"),  # fmt: skip
    pytest.param("openai", _oa(USER, {"role": "assistant", "tool_calls": [_call("call_1", {"city": "Paris"})]}, {"role": "tool", "tool_call_id": "call_1", "content": "22C"}),
                 "arguments: must be a JSON-encoded string", id="oa-object-arguments"),  # fmt: skip
    pytest.param("openai", _oa(USER, {"role": "assistant", "tool_calls": [_call("call_1", "{city")]}, {"role": "tool", "tool_call_id": "call_1", "content": "x"}),
                 "is not valid JSON", id="oa-bad-json-arguments"),  # fmt: skip
    pytest.param("openai", _oa(USER, {"role": "tool", "tool_call_id": "call_x", "content": "22C"}), "must be a response to a preceding", id="oa-orphan-tool"),
    pytest.param("openai", _oa(USER, {"role": "assistant", "tool_calls": [_call("call_1")]}, USER), "must be followed by tool messages", id="oa-unanswered-call"),
    pytest.param("openai", _oa({"role": "user", "content": None}), "content: field required", id="oa-null-user-content"),
    pytest.param("openai", _oa({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}), "url: field required", id="oa-image-no-url"),
    pytest.param("openai", _oa(USER, tools=[{"type": "function", "function": {"name": "get weather!"}}]), "does not match", id="oa-bad-tool-name"),
    pytest.param("openai", _oa(USER, temperature=2.5), "temperature", id="oa-temperature"),
    pytest.param("openai", _oa(USER, stop=["a", "b", "c", "d", "e"]), "at most 4", id="oa-five-stops"),
    pytest.param("openai", _oa(USER, max_tokens=0), "max_tokens: must be >= 1", id="oa-max-tokens"),
    pytest.param("openai", _oa(USER, stream_options={"include_usage": True}), "only allowed when 'stream' is true", id="oa-stream-options"),
    pytest.param("openai", _oa(USER, thinking={"type": "enabled"}), "thinking: unrecognized request argument", id="oa-unknown-field"),
    pytest.param("openai", _oa(USER, tool_choice="auto"), "only allowed when 'tools'", id="oa-tool-choice-without-tools"),
    # Anthropic
    pytest.param("claude", {"model": "c", "messages": [USER]}, "max_tokens: field required", id="cl-no-max-tokens"),
    pytest.param("claude", _cl({"role": "system", "content": "x"}, USER), "messages[0].role", id="cl-system-role"),
    pytest.param("claude", _cl({"role": "assistant", "content": "hi"}, USER), "first message must use the 'user' role", id="cl-assistant-first"),
    pytest.param("claude", _cl({"role": "user", "content": [{"type": "text", "text": ""}]}), "text content blocks must be non-empty", id="cl-empty-text"),
    pytest.param("claude", _cl({"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}]}),
                 "media_type", id="cl-bad-media-type"),  # fmt: skip
    pytest.param("claude", _cl(USER, {"role": "assistant", "content": [{**TOOL_USE, "id": "call:1|x"}]}, {"role": "user", "content": [{**TOOL_RESULT, "tool_use_id": "call:1|x"}]}),
                 "String should match pattern", id="cl-bad-tool-id"),  # fmt: skip
    pytest.param("claude", _cl(USER, {"role": "assistant", "content": [TOOL_USE]}, USER), "without `tool_result` blocks immediately after", id="cl-missing-result"),
    pytest.param("claude", _cl(USER, {"role": "assistant", "content": [TOOL_USE]}, {"role": "user", "content": [{**TOOL_RESULT, "tool_use_id": "toolu_99"}]}),
                 "unexpected `tool_use_id`", id="cl-wrong-result-id"),  # fmt: skip
    pytest.param("claude", _cl({"role": "user", "content": [TOOL_USE]}), "only allowed in assistant messages", id="cl-tool-use-in-user"),
    pytest.param("claude", _cl(USER, {"role": "assistant", "content": [{**TOOL_USE, "input": '{"city":"Paris"}'}]}, {"role": "user", "content": [TOOL_RESULT]}),
                 "input: must be an object", id="cl-string-input"),  # fmt: skip
    pytest.param("claude", _cl(USER, temperature=1.5), "temperature", id="cl-temperature"),
    pytest.param("claude", _cl(USER, thinking={"type": "enabled", "budget_tokens": 512}), "budget_tokens: must be >= 1024", id="cl-small-budget"),
    pytest.param("claude", _cl(USER, max_tokens=1024, thinking={"type": "enabled", "budget_tokens": 1024}), "must be greater than thinking.budget_tokens", id="cl-budget-vs-max"),
    pytest.param("claude", _cl(USER, temperature=0.5, thinking={"type": "enabled", "budget_tokens": 1024}), "temperature: may only be set to 1", id="cl-thinking-temperature"),
    pytest.param("claude", _cl(USER, tools=CL_TOOLS, tool_choice={"type": "any"}, thinking={"type": "enabled", "budget_tokens": 1024}),
                 "forces tool use", id="cl-thinking-forced-tool"),  # fmt: skip
    pytest.param("claude", _cl(USER, {"role": "assistant", "content": [TOOL_USE]}, {"role": "user", "content": [TOOL_RESULT]}, tools=CL_TOOLS,
                               thinking={"type": "enabled", "budget_tokens": 1024}), "Expected `thinking` or `redacted_thinking`", id="cl-thinking-needs-block"),  # fmt: skip
    pytest.param("claude", _cl(USER, {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}, TOOL_USE]}, {"role": "user", "content": [TOOL_RESULT]}),
                 "signature: field required", id="cl-unsigned-thinking"),  # fmt: skip
    pytest.param("claude", _cl(USER, tool_choice={"type": "auto"}), "may only be specified while providing tools", id="cl-tool-choice-without-tools"),
    pytest.param("claude", _cl(USER, tools=[{"name": "get_weather", "input_schema": {"type": "string"}}]), "Input should be 'object'", id="cl-schema-not-object"),
    pytest.param("claude", _cl(USER, tools=[{"name": "get_weather"}]), "input_schema: field required", id="cl-no-input-schema"),
    pytest.param("claude", _cl(USER, max_completion_tokens=5), "Extra inputs are not permitted", id="cl-unknown-field"),
    pytest.param("claude", _cl(USER, system=[{"type": "text", "text": ""}]), "non-empty", id="cl-empty-system-block"),
    # Gemini
    pytest.param("gemini", {}, "contents: field required", id="gm-no-contents"),
    pytest.param("gemini", _gm({"role": "assistant", "parts": [{"text": "x"}]}), "valid role", id="gm-bad-role"),
    pytest.param("gemini", _gm({"role": "user", "parts": [{"text": "a", "inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}), "exactly one data field", id="gm-two-data-fields"),
    pytest.param("gemini", _gm({"role": "user", "parts": [{"thought": True}]}), "exactly one data field", id="gm-no-data-field"),
    pytest.param("gemini", _gm({"role": "user", "parts": [{"inline_data": {"mime_type": "image/png", "data": "data:image/png;base64,AAAA"}}]}), "must be base64", id="gm-data-url"),
    pytest.param("gemini", _gm(GM_USER, _gm_call({"name": "get_weather", "args": '{"city":"Paris"}'}), _gm_answer()), "args: must be an object", id="gm-string-args"),
    pytest.param("gemini", _gm(GM_USER, _gm_call({"name": "get_weather", "args": {}}), {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": "22C"}}]}),
                 "response: must be an object", id="gm-string-response"),  # fmt: skip
    pytest.param("gemini", _gm(GM_USER, _gm_call({"name": "get_weather", "args": {}}), {"role": "user", "parts": [{"functionResponse": {"response": {}}}]}),
                 "name: field required", id="gm-response-without-name"),  # fmt: skip
    pytest.param("gemini", _gm(GM_USER, _gm_call({"name": "get_weather", "args": {}}, signature=None), _gm_answer()), "missing a thought_signature", id="gm-missing-signature"),
    pytest.param("gemini", _gm(GM_USER, _gm_call({"name": "get_weather", "args": {}}, signature="not base64!"), _gm_answer()), "not valid base64", id="gm-bad-signature"),
    pytest.param("gemini", _gm(GM_USER, _gm_call({"id": "fc1", "name": "get_weather", "args": {}}), _gm_answer(id="fc2")), "does not match functionCall.id", id="gm-id-mismatch"),
    pytest.param("gemini", _gm(GM_USER, _gm_call({"id": "fc1", "name": "get_weather", "args": {}}), _gm_answer()), "does not match functionCall.id", id="gm-id-dropped"),
    pytest.param("gemini", _gm(GM_USER, _gm_answer()), "function response turn comes immediately after", id="gm-orphan-response"),
    pytest.param("gemini", _gm_tool({"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": False}), 'Unknown name "additionalProperties"', id="gm-additional-properties"),
    pytest.param("gemini", _gm_tool({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}), 'Unknown name "$schema"', id="gm-dollar-schema"),
    pytest.param("gemini", _gm_tool({"type": "object", "properties": {"u": {"const": "c"}}}), 'Unknown name "const"', id="gm-const"),
    pytest.param("gemini", _gm_tool({"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}}}), 'Unknown name "exclusiveMinimum"', id="gm-exclusive-minimum"),
    pytest.param("gemini", _gm_tool({"type": "object", "properties": {"u": {"oneOf": [{"type": "string"}]}}}), 'Unknown name "oneOf"', id="gm-one-of"),
    pytest.param("gemini", _gm_tool({"type": "object", "properties": {"u": {"type": ["string", "null"]}}}), "use nullable", id="gm-type-array"),
    pytest.param("gemini", _gm_tool({"type": "object", "properties": {"n": {"type": "integer", "enum": [1, 2]}}}), "TYPE_STRING", id="gm-int-enum"),
    pytest.param("gemini", _gm_tool({"type": "object", "items": {"type": "object", "propertyNames": {"pattern": "a"}}}), 'Unknown name "propertyNames"', id="gm-nested-property-names"),
    pytest.param("gemini", _gm(GM_USER, tools=[{"functionDeclarations": [{"name": "f", "parameters": {"type": "object"}, "parametersJsonSchema": {"type": "object"}}]}]),
                 "mutually exclusive", id="gm-both-parameter-forms"),  # fmt: skip
    pytest.param("gemini", _gm(GM_USER, generationConfig={"max_tokens": 10}), 'Unknown name "maxTokens"', id="gm-unknown-generation-config"),
    pytest.param("gemini", _gm(GM_USER, generationConfig={"stopSequences": ["a", "b", "c", "d", "e", "f"]}), "at most 5", id="gm-six-stops"),
    pytest.param("gemini", _gm(GM_USER, toolConfig={"functionCallingConfig": {"mode": "REQUIRED"}}), "mode", id="gm-bad-mode"),
    pytest.param("gemini", _gm(GM_USER, systemInstruction={"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}), "must be text parts", id="gm-system-not-text"),
    pytest.param("gemini", _gm(GM_USER, system="be terse"), "Unknown name", id="gm-unknown-top-level"),
    # Ollama
    pytest.param("ollama", {"messages": [USER]}, "model: field required", id="ol-no-model"),
    pytest.param("ollama", _ol({"role": "user", "content": "x", "images": ["data:image/png;base64,iVBORw0KGgo="]}), "without a data: URL prefix", id="ol-data-url-image"),
    pytest.param("ollama", _ol({"role": "user", "content": "x", "images": ["https://example.com/a.png"]}), "image URLs are not supported", id="ol-url-image"),
    pytest.param("ollama", _ol(USER, {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}),
                 "must be a JSON object", id="ol-string-arguments"),  # fmt: skip
    pytest.param("ollama", _ol({"role": "developer", "content": "x"}), "role", id="ol-bad-role"),
    pytest.param("ollama", _ol(USER, tools=[{"type": "custom", "function": {"name": "f"}}]), "type", id="ol-bad-tool-type"),
    pytest.param("ollama", _ol(USER, options={"max_tokens": 5}), "invalid option", id="ol-bad-option"),
    pytest.param("ollama", _ol(USER, max_tokens=5), "silently ignore", id="ol-unknown-field"),
    pytest.param("ollama", _ol(USER, think="extreme"), "think", id="ol-bad-think"),
    pytest.param("ollama", _ol(USER, format="xml"), "format", id="ol-bad-format"),
]


@pytest.mark.parametrize("protocol,body,expected", INVALID)
def test_violations_are_caught(up, protocol, body, expected):
    served = up[protocol]
    response = served.post(CHAT_PATHS[protocol], body)
    assert response.status_code == 400, response.text
    violations = served.fake.violations
    assert any(expected in v for v in violations), violations
    error = response.json()
    if protocol == "openai":
        assert error["error"]["type"] == "invalid_request_error"
    elif protocol == "claude":
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    elif protocol == "gemini":
        assert error["error"]["code"] == 400 and error["error"]["status"] == "INVALID_ARGUMENT"
    else:
        assert isinstance(error["error"], str) and error["error"]


VALID: list[Any] = [
    pytest.param("openai", _oa({"role": "developer", "content": [{"type": "text", "text": "be terse"}]}, USER,
                               {"role": "assistant", "content": None, "tool_calls": [_call("call_1"), {**_call("call_2"), "function": {"name": "get_time", "arguments": "{}"}}]},
                               {"role": "tool", "tool_call_id": "call_1", "content": "22C"}, {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                               tools=OA_TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}, stop="END", max_completion_tokens=10),
                 id="oa-parallel-round-trip"),  # fmt: skip
    pytest.param("claude", _cl(USER, {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"}, TOOL_USE]},
                               {"role": "user", "content": [TOOL_RESULT, {"type": "text", "text": "thanks"}]},
                               system=[{"type": "text", "text": "be terse", "cache_control": {"type": "ephemeral"}}], tools=CL_TOOLS,
                               tool_choice={"type": "auto"}, thinking={"type": "enabled", "budget_tokens": 1024}),
                 id="cl-thinking-round-trip"),  # fmt: skip
    pytest.param("gemini", _gm(GM_USER, _gm_call({"id": "fc1", "name": "get_weather", "args": {"city": "Paris"}}), _gm_answer(id="fc1"),
                               system_instruction={"role": "user", "parts": [{"text": "be terse"}]},
                               tools=[{"function_declarations": [{"name": "get_weather", "parameters_json_schema": {"type": "object", "additionalProperties": False}}]}],
                               tool_config={"function_calling_config": {"mode": "ANY", "allowed_function_names": ["get_weather"]}},
                               generation_config={"thinking_config": {"include_thoughts": True, "thinking_budget": 1024}, "max_output_tokens": 64}),
                 id="gm-snake-case-and-json-schema"),  # fmt: skip
    pytest.param("gemini", _gm(GM_USER, _gm_call({"name": "get_weather", "args": {}}, signature="skip_thought_signature_validator"),
                               {"role": "function", "parts": [{"function_response": {"name": "get_weather", "response": {"output": "22C"}}}]},
                               tools=[{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {"u": {"type": "string", "nullable": True, "enum": ["a"]}}, "required": ["u"]}}]}]),
                 id="gm-sentinel-and-function-role"),  # fmt: skip
    pytest.param("ollama", _ol({"role": "system", "content": "be terse"}, USER, {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                               {"role": "tool", "content": "22C", "tool_name": "get_weather"}, tools=[], think="high", format={"type": "object"}, options={"num_predict": 5, "stop": ["x"]}),
                 id="ol-round-trip"),  # fmt: skip
]


@pytest.mark.parametrize("protocol,body", VALID)
def test_valid_requests_pass(up, protocol, body):
    response = up[protocol].post(CHAT_PATHS[protocol], body)
    assert up[protocol].fake.violations == []
    assert response.status_code == 200, response.text
