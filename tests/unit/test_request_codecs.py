"""Requests across protocols: what each upstream receives, and what clients'
mistakes turn into."""

from __future__ import annotations

import pytest
from ccproxy.errors import ProxyError
from ccproxy.ids import for_openai
from ccproxy.protocols import CODECS
from ccproxy.protocols.base import ClientContext
from ccproxy.protocols.gemini.schema import to_gemini
from ccproxy.unified import Response, Text, ToolCall, Usage

openai, claude, gemini, ollama = (CODECS[p] for p in ("openai", "claude", "gemini", "ollama"))

PARALLEL_HISTORY = {
    "model": "alias",
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call:1.a|b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call:1.a|b", "content": "22C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "Thanks. And tomorrow?"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
    ],
}


def from_openai(body=PARALLEL_HISTORY):
    return openai.decode_request(body, ClientContext())


def test_parallel_results_become_one_claude_user_turn_with_results_first():
    sent = claude.encode_request(from_openai(), "claude-x")
    assert sent["system"] == "Be terse.\n\nUse tools."
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    calls = [b for b in sent["messages"][1]["content"] if b["type"] == "tool_use"]
    assert [c["id"] for c in calls] == ["call_1_a_b", "call_2"]
    last = sent["messages"][2]["content"]
    assert [b["type"] for b in last] == ["tool_result", "tool_result", "text"]
    assert [b["tool_use_id"] for b in last[:2]] == ["call_1_a_b", "call_2"]
    assert [b["content"] for b in last[:2]] == ["22C", "noon"]
    assert sent["max_tokens"] > 0


def test_parallel_results_become_one_gemini_user_content_with_names():
    sent = gemini.encode_request(from_openai(), "gemini-x")
    assert sent["systemInstruction"] == {"parts": [{"text": "Be terse.\n\nUse tools."}]}
    roles = [c["role"] for c in sent["contents"]]
    assert roles == ["user", "model", "user"]
    calls = sent["contents"][1]["parts"]
    assert calls[0]["thoughtSignature"] == "skip_thought_signature_validator"
    responses = [p["functionResponse"] for p in sent["contents"][2]["parts"] if "functionResponse" in p]
    assert [(r["name"], r["response"]) for r in responses] == [("get_weather", {"output": "22C"}), ("get_time", {"output": "noon"})]
    assert [r["id"] for r in responses] == [c["functionCall"]["id"] for c in calls]
    # a tool with no parameters declares none: Gemini rejects empty objects
    declarations = sent["tools"][0]["functionDeclarations"]
    assert "parameters" in declarations[0] and "parameters" not in declarations[1]


@pytest.mark.parametrize("depth", [200, 201, 5000])
def test_a_gemini_tool_result_of_json_goes_as_its_object_and_too_deep_json_as_text(depth):
    deep = '{"a":' * depth + "1" + "}" * depth
    body = {**PARALLEL_HISTORY, "messages": [*PARALLEL_HISTORY["messages"]]}
    body["messages"][4] = {"role": "tool", "tool_call_id": "call:1.a|b", "content": deep}
    sent = gemini.encode_request(from_openai(body), "gemini-x")
    response = next(p["functionResponse"]["response"] for p in sent["contents"][2]["parts"] if "functionResponse" in p)
    assert (response == {"output": deep}) == (depth > 200)
    if depth <= 200:
        assert "a" in response


def test_results_become_ollama_tool_messages_with_names():
    sent = ollama.encode_request(from_openai(), "llama")
    tools = [m for m in sent["messages"] if m["role"] == "tool"]
    assert [(m["tool_name"], m["content"]) for m in tools] == [("get_weather", "22C"), ("get_time", "noon")]
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}


def test_a_long_id_holding_a_lone_surrogate_is_shortened_too():
    shortened = for_openai("call_" + "\ud800" * 50)
    assert shortened.startswith("call_") and len(shortened) <= 40
    assert shortened == for_openai("call_" + "\ud800" * 50) != for_openai("call_" + "\udc00" * 50)


def test_long_ids_are_shortened_the_same_way_for_openai():
    long_id = "toolu_" + "x" * 60
    request = claude.decode_request(
        {
            "model": "a",
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": long_id, "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": long_id, "content": "ok", "is_error": True}]},
            ],
        },
        ClientContext(),
    )
    sent = openai.encode_request(request, "gpt")
    call_id = sent["messages"][1]["tool_calls"][0]["id"]
    assert len(call_id) <= 40
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call_id, "content": "Error: ok"}


def test_ollama_results_without_ids_answer_the_earliest_call_of_that_name():
    request = ollama.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "two cities"},
                {"role": "assistant", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
                {"role": "tool", "content": "22C", "tool_name": "get_weather"},
                {"role": "tool", "content": "25C", "tool_name": "get_weather"},
            ],
            "stream": False,
        },
        ClientContext(endpoint="chat"),
    )
    sent = claude.encode_request(request, "c")
    ids = [b["id"] for b in sent["messages"][1]["content"]]
    results = sent["messages"][2]["content"]
    assert len(set(ids)) == 2
    assert [(r["tool_use_id"], r["content"]) for r in results] == [(ids[0], "22C"), (ids[1], "25C")]


def test_gemini_requests_in_snake_case_with_function_role():
    request = gemini.decode_request(
        {
            "contents": [
                {"role": "user", "parts": [{"text": "look"}, {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}}]},
                {"role": "model", "parts": [{"function_call": {"name": "get_weather", "args": {"city": "Paris"}}, "thought_signature": "c2ln"}]},
                {"role": "function", "parts": [{"function_response": {"name": "get_weather", "response": {"output": "22C"}}}]},
            ],
            "system_instruction": {"parts": [{"text": "terse"}]},
            "generation_config": {"max_output_tokens": 99, "thinking_config": {"include_thoughts": True, "thinking_budget": 2048}},
        },
        ClientContext(model="g", stream=False),
    )
    assert request.system == "terse" and request.max_tokens == 99
    assert request.reasoning.budget_tokens == 2048 and request.reasoning.include_thoughts
    image = request.messages[0].content[1]
    assert (image.media_type, image.data) == ("image/png", "iVBORw0KGgo=")
    call = request.messages[1].content[0]
    assert (call.signature, call.origin) == ("c2ln", "gemini")
    result = request.messages[2].content[0]
    assert (result.id, result.name) == (call.id, "get_weather")
    # Back to Gemini, the model's own signature is echoed, not the sentinel.
    sent = gemini.encode_request(request, "g")
    assert sent["contents"][1]["parts"][0]["thoughtSignature"] == "c2ln"


def test_claude_thinking_is_disabled_when_tool_history_is_foreign():
    request = from_openai({**PARALLEL_HISTORY, "reasoning_effort": "high"})
    sent = claude.encode_request(request, "c")
    assert "thinking" not in sent


def test_claude_thinking_budget_stays_below_max_tokens_and_drops_sampling():
    request = openai.decode_request(
        {"model": "a", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high",
         "max_tokens": 2000, "temperature": 1.7, "top_p": 0.5},
        ClientContext(),
    )
    sent = claude.encode_request(request, "c")
    assert sent["thinking"]["type"] == "enabled"
    assert 1024 <= sent["thinking"]["budget_tokens"] < sent["max_tokens"]
    assert "temperature" not in sent and sent["top_p"] >= 0.95
    plain = claude.encode_request(request.model_copy(update={"reasoning": None}), "c")
    assert plain["temperature"] == 1.0 and plain["top_p"] == 0.5


def test_a_gemini_signature_survives_a_round_trip_through_a_claude_client():
    response = Response(content=[ToolCall(id="call_x", name="f", arguments={}, signature="c2ln", origin="gemini")])
    answer = claude.encode_response(response, claude.decode_request(
        {"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, ClientContext()))
    assert answer["content"][0] == {"type": "thinking", "thinking": "", "signature": "gemini:c2ln"}
    history = claude.decode_request(
        {"model": "a", "max_tokens": 5, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": answer["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_x", "content": "done"}]},
        ]},
        ClientContext(),
    )
    sent = gemini.encode_request(history, "g")
    part = sent["contents"][1]["parts"][0]
    assert part["thoughtSignature"] == "c2ln" and part["functionCall"]["name"] == "f"
    # ...and is never forwarded to Claude.
    to_claude = claude.encode_request(history, "c")
    assert all(b["type"] != "thinking" for b in to_claude["messages"][1]["content"])


def props_description(schema, name):
    return schema["properties"][name].get("description", "")


def test_gemini_schema_sanitising():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "mode": {"const": "fast"},
            "level": {"type": "integer", "enum": [1, 2, 3]},
            "note": {"type": ["string", "null"]},
            "count": {"type": "integer", "exclusiveMinimum": 0},
            "tags": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}},
            "ref": {"$ref": "#/$defs/Point"},
            "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
        },
        "required": ["mode", "ghost"],
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "additionalProperties": False}},
    }
    clean = to_gemini(schema)
    def keys(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                if key != "properties":
                    yield from keys(value)
                else:
                    for sub in value.values():
                        yield from keys(sub)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item)

    used = set(keys(clean))
    for banned in ("$schema", "additionalProperties", "const", "propertyNames", "exclusiveMinimum", "$ref", "$defs", "oneOf"):
        assert banned not in used, banned
    assert "> 0" in props_description(clean, "count")
    props = clean["properties"]
    assert props["mode"]["enum"] == ["fast"]
    assert props["level"]["enum"] == ["1", "2", "3"] and props["level"]["type"] == "string"
    assert props["note"] == {"type": "string", "nullable": True}
    assert props["ref"]["properties"]["x"]["type"] == "number"
    assert len(props["either"]["anyOf"]) == 2
    assert clean["required"] == ["mode"]


@pytest.mark.parametrize(
    "codec,body,field",
    [
        (openai, {"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (openai, {"model": "a", "messages": []}, "messages"),
        (openai, {"model": "a", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        (openai, {"model": "a", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        (claude, {"model": "a", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        (claude, {"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "nonsense"}]}]}, "messages.0.content.0"),
        (ollama, {"model": "a", "messages": [{"role": "user", "content": "hi", "images": ["https://x/y.png"]}]}, "messages.0.images"),
        (gemini, {"contents": []}, "contents"),
    ],
)
def test_bad_requests_name_the_field(codec, body, field):
    with pytest.raises(ProxyError) as caught:
        codec.decode_request(body, ClientContext(model="g", endpoint="chat"))
    assert caught.value.status == 400
    assert field in caught.value.message


STOPS = [
    # (upstream codec, whole upstream body, expected unified stop)
    (openai, {"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]}, "max_tokens"),
    (openai, {"choices": [{"message": {"content": None, "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}, "tool_use"),
    (openai, {"choices": [{"message": {"content": "x"}, "finish_reason": "content_filter"}]}, "refusal"),
    (claude, {"content": [{"type": "text", "text": "x"}], "stop_reason": "model_context_window_exceeded"}, "context_window"),
    (claude, {"content": [{"type": "text", "text": "x"}], "stop_reason": "stop_sequence", "stop_sequence": "END"}, "stop_sequence"),
    (gemini, {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP"}]}, "tool_use"),
    (gemini, {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "RECITATION"}]}, "refusal"),
    (gemini, {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "MALFORMED_FUNCTION_CALL"}]}, "end_turn"),
    (gemini, {"promptFeedback": {"blockReason": "SAFETY"}}, "refusal"),
    (ollama, {"message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}, "done_reason": "stop"}, "tool_use"),
    (ollama, {"message": {"role": "assistant", "content": "x"}, "done_reason": "length"}, "max_tokens"),
]


@pytest.mark.parametrize("codec,body,expected", STOPS)
def test_stop_reasons_from_each_upstream(codec, body, expected):
    assert codec.decode_response(body).stop_reason == expected


CLIENT_STOPS = {
    "max_tokens": ("length", "max_tokens", "MAX_TOKENS", "length"),
    "context_window": ("length", "model_context_window_exceeded", "MAX_TOKENS", "length"),
    "refusal": ("content_filter", "refusal", "SAFETY", "stop"),
    "stop_sequence": ("stop", "stop_sequence", "STOP", "stop"),
    "end_turn": ("stop", "end_turn", "STOP", "stop"),
}


@pytest.mark.parametrize("stop", CLIENT_STOPS)
def test_stop_reasons_to_each_client(stop):
    response = Response(content=[Text(text="x")], stop_reason=stop, usage=Usage(input_tokens=3, output_tokens=2))
    request = openai.decode_request({"model": "a", "messages": [{"role": "user", "content": "q"}]}, ClientContext())
    got = (
        openai.encode_response(response, request)["choices"][0]["finish_reason"],
        claude.encode_response(response, request)["stop_reason"],
        gemini.encode_response(response, request)["candidates"][0]["finishReason"],
        ollama.encode_response(response, request)["done_reason"],
    )
    assert got == CLIENT_STOPS[stop]


def test_errors_in_each_protocols_shape():
    error = ProxyError(429, "slow down", retry_after=7)
    assert openai.encode_error(error)["error"]["type"] == "rate_limit_error"
    assert claude.encode_error(error) == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    assert gemini.encode_error(error) == {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}
    assert ollama.encode_error(error) == {"error": "slow down"}
    assert openai.error_headers(error) == {"retry-after": "7"}


def test_gemini_retry_info_and_daily_quota_are_read():
    body = (
        b'{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":['
        b'{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},'
        b'{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"41s"}]}}'
    )
    error = gemini.decode_error(429, body, {})
    assert (error.status, error.retry_after, error.code, error.message) == (429, 41.0, "quota_per_day", "quota")


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def test_images_inline_and_by_url_in_each_upstream_shape():
    request = from_openai({
        "model": "a",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]}],
    })
    to_claude = claude.encode_request(request, "c")["messages"][0]["content"]
    assert to_claude[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert to_claude[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    to_gemini = gemini.encode_request(request, "g")["contents"][0]["parts"]
    assert to_gemini[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    to_ollama = ollama.encode_request(request, "o")["messages"][0]
    assert to_ollama["images"] == [PNG] and to_ollama["content"] == "what is this?"
    back = openai.encode_request(claude.decode_request(
        {"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": to_claude}]}, ClientContext()), "o")
    assert back["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}


def test_ollama_images_get_their_media_type_from_their_bytes():
    request = ollama.decode_request(
        {"model": "m", "messages": [{"role": "user", "content": "look", "images": [PNG]}]}, ClientContext(endpoint="chat"))
    sent = claude.encode_request(request, "c")["messages"][0]["content"]
    assert sent[1]["source"]["media_type"] == "image/png"


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}


def test_json_output_modes_in_each_upstream():
    request = from_openai({"model": "a", "messages": [{"role": "user", "content": "n?"}],
                           "response_format": {"type": "json_schema", "json_schema": {"name": "N", "schema": SCHEMA, "strict": True}}})
    assert openai.encode_request(request, "o")["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "N", "schema": SCHEMA, "strict": True}}
    config = gemini.encode_request(request, "g")["generationConfig"]
    assert config["responseMimeType"] == "application/json" and "additionalProperties" not in config["responseSchema"]
    assert claude.encode_request(request, "c")["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert ollama.encode_request(request, "l")["format"] == SCHEMA
    plain = from_openai({"model": "a", "messages": [{"role": "user", "content": "n?"}], "response_format": {"type": "json_object"}})
    assert ollama.encode_request(plain, "l")["format"] == "json"
    assert "JSON" in claude.encode_request(plain, "c")["system"]


@pytest.mark.parametrize(
    "choice,to_openai,to_claude,to_gemini",
    [
        ("auto", None, {"type": "auto"}, None),
        ("required", "required", {"type": "any"}, {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}},
         {"type": "tool", "name": "f"}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
        ("none", None, {"type": "none"}, {"mode": "NONE"}),
    ],
)
def test_every_form_of_tool_choice(choice, to_openai, to_claude, to_gemini):
    request = from_openai({"model": "a", "messages": [{"role": "user", "content": "go"}], "tool_choice": choice,
                           "tools": [{"type": "function", "function": {"name": "f", "parameters": SCHEMA}}]})
    sent = openai.encode_request(request, "o")
    assert sent.get("tool_choice") == to_openai and ("tools" in sent) == (choice != "none")
    assert claude.encode_request(request, "c").get("tool_choice") == to_claude
    assert gemini.encode_request(request, "g").get("toolConfig", {}).get("functionCallingConfig") == to_gemini
    assert ("tools" in ollama.encode_request(request, "l")) == (choice != "none")


def test_no_parallel_calls_reaches_claude_as_disable_parallel_tool_use():
    request = from_openai({"model": "a", "messages": [{"role": "user", "content": "go"}], "parallel_tool_calls": False,
                           "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert claude.encode_request(request, "c")["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert openai.encode_request(request, "o")["parallel_tool_calls"] is False


def test_sampling_limits_per_protocol():
    request = from_openai({"model": "a", "messages": [{"role": "user", "content": "go"}], "temperature": 1.8, "top_p": 0.9,
                           "stop": ["a", "b", "c", "d"], "max_completion_tokens": 77, "seed": 3})
    assert claude.encode_request(request, "c")["temperature"] == 1.0
    assert gemini.encode_request(request, "g")["generationConfig"] == {
        "maxOutputTokens": 77, "temperature": 1.8, "topP": 0.9, "stopSequences": ["a", "b", "c", "d"], "seed": 3}
    assert ollama.encode_request(request, "l")["options"] == {
        "num_predict": 77, "temperature": 1.8, "top_p": 0.9, "seed": 3, "stop": ["a", "b", "c", "d"]}
    many = request.model_copy(update={"stop": list("abcdefg")})
    assert len(gemini.encode_request(many, "g")["generationConfig"]["stopSequences"]) == 5
    assert len(openai.encode_request(many, "o")["stop"]) == 4
