"""A group's request shaping and routing by need, through the running proxy:
the official SDKs as clients, the strict fakes checking what arrives
upstream, and the exchange record naming what was done."""

from __future__ import annotations

import functools
import json
import re
import time
from typing import Any

import anthropic
import ollama
import openai
import pytest
from ccproxy.stores.logs import DirectorySink
from google import genai
from google.genai import types as gtypes

from tests.fakes import UPSTREAM_MODELS

from .conftest import PROTOCOLS, alias, proxy_config, serving
from .drivers import ACCESS_KEY, DRIVERS, QUESTION, TOOL_RESULT, TOOLS

SYSTEM = "You are Claude Code, a CLI for coding. Be helpful."
REPLACED_SYSTEM = "You are a coding agent, a CLI for coding. Be helpful."
# Markers the shaping adds, easy to find in any upstream's body.
SYSTEM_BEFORE, SYSTEM_AFTER = "SYSTEM-BEFORE", "SYSTEM-AFTER"
USER_BEFORE, USER_AFTER = "USER-BEFORE", "USER-AFTER"
GEMINI_ONLY = "GEMINI-ONLY"
SYSTEM_INSTEAD, USER_INSTEAD = "SYSTEM-INSTEAD", "USER-INSTEAD"

# Each upstream's extra_body: fields its strict fake accepts, mappings among
# them so that the merge into what the encoder wrote shows.
EXTRA_BODY: dict[str, dict[str, Any]] = {
    "openai": {"seed": 7, "user": "shaped-user"},
    "claude": {"metadata": {"user_id": "shaped-user"}},
    "gemini": {"generationConfig": {"seed": 7}},
    "ollama": {"options": {"num_ctx": 32768}, "keep_alive": "5m"},
    "responses": {"safety_identifier": "shaped-user", "metadata": {"team": "shaped"}},
}
HEADERS = {"X-Request-Id": "{request_id}", "X-Trace": "{uuid}", "X-Static": "fixed"}
# Routing by need: the rules, in order, then the alias globs.
ROUTE = [
    {"when": {"input_tokens_over": 2000}, "targets": ["up-gemini/gemini-long"]},
    {"when": "thinking", "targets": ["up-openai/gpt-thinker"]},
    {"when": "images", "targets": ["up-ollama/llama-vision"]},
    {"when": {"model": "claude-haiku-*"}, "targets": ["up-claude/claude-small"]},
]
ROUTED_MODELS = {"claude-*": ["up-responses/gpt-resp-default"], "*": ["up-openai/gpt-default"]}
# A one-pixel PNG.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAIB4rWoqQAAAABJRU5ErkJggg=="


def shaped_group(upstream: str) -> dict[str, Any]:
    """Every additive step at once (the replacing steps have a group of their own)."""
    return {
        "replace": [{"find": "You are Claude Code", "with": "You are a coding agent"}],
        "prompt": [
            {"mode": "prepend", "to": "system", "text": SYSTEM_BEFORE},
            {"mode": "append", "to": "system", "text": SYSTEM_AFTER},
            {"mode": "prepend", "to": "last_user", "text": USER_BEFORE},
            {"mode": "append", "to": "last_user", "text": USER_AFTER},
            {"mode": "append", "to": "system", "text": GEMINI_ONLY, "models": "gemini-*"},
        ],
        "tools": {"drop": ["get_t*"]},
        "temperature_ratio": 0.5,
        "defaults": {"temperature": 0.3, "top_p": 0.9},
        "limits": {"max_tokens": 300},
        "extra_body": EXTRA_BODY[upstream],
    }


def shaping_config(urls: dict[str, str]) -> dict[str, Any]:
    config = proxy_config(urls)
    for provider in config["providers"].values():
        provider["headers"] = dict(HEADERS)
    models = {alias(p): [f"up-{p}/{UPSTREAM_MODELS[p]}"] for p in PROTOCOLS}
    groups: dict[str, Any] = {
        "default": {"models": {**models, "twice": ["up-openai/gpt-first", "up-openai/gpt-second"]}},
        "replacing": {
            "shape": {
                "prompt": [
                    {"mode": "replace", "to": "system", "text": SYSTEM_INSTEAD},
                    {"mode": "replace", "to": "last_user", "text": USER_INSTEAD},
                ],
                "tools": {"keep": ["get_time"]},
                "overrides": {"temperature": 0.1, "top_p": 0.5},
            },
            "models": models,
        },
        "effort": {"shape": {"defaults": {"reasoning_effort": "high"}}, "models": models},
        "budget": {"shape": {"defaults": {"thinking_budget": 2048}}, "models": models},
        "routed": {"route": ROUTE, "models": ROUTED_MODELS},
        # A rule with a shape of its own: it replaces the group's for the requests the rule takes.
        "per-rule": {
            "shape": {"tools": {"drop": ["get_t*"]}},
            "route": [{"when": {"model": "claude-haiku-*"}, "targets": [f"up-ollama/{UPSTREAM_MODELS['ollama']}"],
                       "shape": {"tools": {"drop": ["*"]}, "prompt": [{"mode": "replace", "to": "system", "text": "BACKGROUND"}]}}],
            "models": {"*": [f"up-ollama/{UPSTREAM_MODELS['ollama']}"]},
        },
    }
    for protocol in PROTOCOLS:
        groups[f"shape-{protocol}"] = {"shape": shaped_group(protocol), "models": models}
    config["groups"], config["active_group"] = groups, "default"
    return config


@pytest.fixture(scope="module")
def stack():
    """This module's own proxy (shaping groups, route rules, provider
    headers) before five fakes; conftest's fixtures use it in this module."""
    with serving(shaping_config, "test-shaping") as served:
        yield served


@pytest.fixture
def sink(stack, upstreams, tmp_path):
    app = stack[2]
    app.state.recorder.sink = DirectorySink(tmp_path)
    yield DirectorySink(tmp_path)
    app.state.recorder.sink = None


def the_record(sink: DirectorySink, timeout: float = 10.0) -> dict[str, Any]:
    """The one record of the test's request (written after the answer)."""
    deadline = time.monotonic() + timeout
    while not sink.keys() and time.monotonic() < deadline:
        time.sleep(0.02)
    (key,) = sink.keys()
    return sink.read(key)


# ---------------------------------------------------------------- clients: one request, each SDK its own way


def optional(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


@functools.lru_cache(maxsize=None)
def sdk(protocol: str, base_url: str) -> Any:
    if protocol in ("openai", "responses"):
        return openai.OpenAI(base_url=base_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    if protocol == "claude":
        return anthropic.Anthropic(base_url=base_url, api_key=ACCESS_KEY, max_retries=0)
    if protocol == "gemini":
        return genai.Client(api_key=ACCESS_KEY, http_options=gtypes.HttpOptions(base_url=base_url, api_version="v1beta"))
    return ollama.Client(host=base_url, headers={"Authorization": f"Bearer {ACCESS_KEY}"})


def ask(client: str, base_url: str, model: str, *, system: str | None = SYSTEM, tool_round: bool = False,
        temperature: float | None = None, top_p: float | None = None, max_tokens: int = 4096, forced: bool = False) -> None:
    """One whole request with both tools: the question, or (tool_round) the
    question, a call of get_weather and its result; `forced`: get_weather
    must be called (where the protocol can say so)."""
    sender = {"openai": _ask_openai, "claude": _ask_claude, "gemini": _ask_gemini, "ollama": _ask_ollama,
              "responses": _ask_responses}[client]
    sampling = optional(temperature=temperature, top_p=top_p)
    sender(sdk(client, base_url), model, system, tool_round, sampling, max_tokens, forced)


def _ask_openai(sdk, model, system, tool_round, sampling, max_tokens, forced):
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": QUESTION})
    if tool_round:
        call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": "call_1", "content": TOOL_RESULT}]
    choice = {"type": "function", "function": {"name": "get_weather"}} if forced else None
    sdk.chat.completions.create(model=model, messages=messages, tools=[{"type": "function", "function": t} for t in TOOLS],
                                max_completion_tokens=max_tokens, **optional(tool_choice=choice), **sampling)


def _ask_claude(sdk, model, system, tool_round, sampling, max_tokens, forced):
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    if tool_round:
        messages += [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": TOOL_RESULT}]},
        ]
    tools = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in TOOLS]
    # This SDK's create() no longer names temperature and top_p; the API still takes them.
    choice = {"type": "tool", "name": "get_weather"} if forced else None
    sdk.messages.create(model=model, max_tokens=max_tokens, messages=messages, tools=tools,
                        **optional(system=system, tool_choice=choice), extra_body=sampling or None)


def _ask_gemini(sdk, model, system, tool_round, sampling, max_tokens, forced):
    contents = [gtypes.Content(role="user", parts=[gtypes.Part(text=QUESTION)])]
    if tool_round:
        call = gtypes.FunctionCall(id="call_1", name="get_weather", args={"city": "Paris"})
        answer = gtypes.FunctionResponse(id="call_1", name="get_weather", response={"output": TOOL_RESULT})
        contents += [gtypes.Content(role="model", parts=[gtypes.Part(function_call=call)]),
                     gtypes.Content(role="user", parts=[gtypes.Part(function_response=answer)])]
    calling = gtypes.FunctionCallingConfig(mode="ANY", allowed_function_names=["get_weather"]) if forced else None
    config = gtypes.GenerateContentConfig(
        system_instruction=system, max_output_tokens=max_tokens, automatic_function_calling={"disable": True},
        tools=[gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(**t) for t in TOOLS])],
        **optional(tool_config=gtypes.ToolConfig(function_calling_config=calling) if forced else None), **sampling)
    sdk.models.generate_content(model=model, contents=contents, config=config)


def _ask_ollama(sdk, model, system, tool_round, sampling, max_tokens, forced):  # Ollama cannot force a tool
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": QUESTION})
    if tool_round:
        messages += [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                     {"role": "tool", "content": TOOL_RESULT, "tool_name": "get_weather"}]
    sdk.chat(model=model, messages=messages, tools=[{"type": "function", "function": t} for t in TOOLS],
             options={**sampling, "num_predict": max_tokens})


def _ask_responses(sdk, model, system, tool_round, sampling, max_tokens, forced):
    items: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    if tool_round:
        items += [{"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                  {"type": "function_call_output", "call_id": "call_1", "output": TOOL_RESULT}]
    sdk.responses.create(model=model, input=items, tools=[{"type": "function", **t, "strict": False} for t in TOOLS],
                         max_output_tokens=max_tokens, **sampling,
                         **optional(instructions=system, tool_choice={"type": "function", "name": "get_weather"} if forced else None))


# ---------------------------------------------------------------- what an upstream received, whatever its protocol


def sent_model(upstream: str, recorded) -> str:
    if upstream == "gemini":
        return recorded.path.rsplit("/models/", 1)[1].split(":", 1)[0]
    return recorded.json["model"]


def _texts(content: Any, *types: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content or [] if part.get("type", "text") in types and "text" in part]


def system_sent(upstream: str, body: dict) -> str:
    if upstream == "claude":
        return "\n\n".join(_texts(body.get("system"), "text"))
    if upstream == "gemini":
        return "\n\n".join(p["text"] for p in (body.get("systemInstruction") or {}).get("parts", []))
    if upstream == "responses":
        items = [i for i in body["input"] if i.get("role") in ("system", "developer")] if isinstance(body["input"], list) else []
        return "\n\n".join([*filter(None, [body.get("instructions")]), *(t for i in items for t in _texts(i["content"], "input_text"))])
    return "\n\n".join(t for m in body["messages"] if m["role"] in ("system", "developer") for t in _texts(m["content"], "text"))


def last_user_sent(upstream: str, body: dict) -> list[str]:
    """What follows the last assistant turn, in order: tool results as
    "[result] ...", text as it is."""
    pieces: list[str] = []
    if upstream in ("openai", "ollama"):
        messages = body["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
        for message in messages[last + 1:]:
            if message["role"] == "tool":
                pieces.append(f"[result] {''.join(_texts(message['content'], 'text'))}")
            elif message["role"] == "user":
                pieces += _texts(message["content"], "text")
    elif upstream == "claude":
        messages = body["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
        for message in messages[last + 1:]:
            for block in [{"type": "text", "text": message["content"]}] if isinstance(message["content"], str) else message["content"]:
                if block["type"] == "tool_result":
                    pieces.append(f"[result] {''.join(_texts(block['content'], 'text'))}")
                elif block["type"] == "text":
                    pieces.append(block["text"])
    elif upstream == "gemini":
        contents = body["contents"]
        last = max((i for i, c in enumerate(contents) if c.get("role") == "model"), default=-1)
        for content in contents[last + 1:]:
            for part in content["parts"]:
                if "functionResponse" in part:
                    pieces.append(f"[result] {part['functionResponse']['response'].get('output')}")
                elif "text" in part:
                    pieces.append(part["text"])
    else:
        items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
        last = max((i for i, item in enumerate(items) if item.get("type") == "function_call" or item.get("role") == "assistant"),
                   default=-1)
        for item in items[last + 1:]:
            if item.get("type") == "function_call_output":
                pieces.append(f"[result] {''.join(_texts(item['output'], 'input_text'))}")
            elif item.get("role") == "user":
                pieces += _texts(item["content"], "input_text")
    return pieces


def tools_sent(upstream: str, body: dict) -> list[str]:
    if upstream == "gemini":
        return [d["name"] for tool in body.get("tools", []) for d in tool.get("functionDeclarations", [])]
    if upstream in ("openai", "ollama"):
        return [tool["function"]["name"] for tool in body.get("tools", [])]
    return [tool["name"] for tool in body.get("tools", [])]


def sampling_sent(upstream: str, body: dict) -> dict[str, Any]:
    """(temperature, top_p, the output limit) as the upstream got them."""
    if upstream == "gemini":
        config = body.get("generationConfig", {})
        return {"temperature": config.get("temperature"), "top_p": config.get("topP"), "max_tokens": config.get("maxOutputTokens")}
    if upstream == "ollama":
        options = body.get("options", {})
        return {"temperature": options.get("temperature"), "top_p": options.get("top_p"), "max_tokens": options.get("num_predict")}
    limit = {"openai": "max_completion_tokens", "claude": "max_tokens", "responses": "max_output_tokens"}[upstream]
    return {"temperature": body.get("temperature"), "top_p": body.get("top_p"), "max_tokens": body.get(limit)}


def thinking_sent(upstream: str, body: dict) -> Any:
    """The request's thinking in the upstream's own form."""
    if upstream == "openai":
        return body.get("reasoning_effort")
    if upstream == "responses":
        return (body.get("reasoning") or {}).get("effort")
    if upstream == "claude":
        return body.get("thinking")
    if upstream == "gemini":
        return body.get("generationConfig", {}).get("thinkingConfig", {}).get("thinkingBudget")
    return body.get("think")


def extra_body_arrived(upstream: str, body: dict) -> None:
    """The group's extra_body is in the body, merged into what the encoder wrote."""
    if upstream == "openai":
        assert (body["seed"], body["user"]) == (7, "shaped-user")
    elif upstream == "claude":
        assert body["metadata"] == {"user_id": "shaped-user"}
    elif upstream == "gemini":
        assert body["generationConfig"]["seed"] == 7 and "temperature" in body["generationConfig"]
    elif upstream == "ollama":
        assert body["options"]["num_ctx"] == 32768 and "temperature" in body["options"]
        assert body["keep_alive"] == "5m"
    else:
        assert (body["safety_identifier"], body["metadata"]) == ("shaped-user", {"team": "shaped"})


# ---------------------------------------------------------------- 1. shaping, on every upstream

# Claude Code's protocol on every upstream, and each upstream's own protocol
# (where a group that shapes must not pass the request through untouched).
SHAPED_PAIRS = [pytest.param("claude", u, id=f"claude-on-{u}") for u in PROTOCOLS] + [
    pytest.param(u, u, id=f"{u}-on-{u}") for u in PROTOCOLS if u != "claude"
]


def received(upstreams, upstream: str) -> dict:
    recorded = upstreams[upstream].last
    assert sent_model(upstream, recorded) == UPSTREAM_MODELS[upstream]
    return recorded.json


@pytest.mark.parametrize("client,upstream", SHAPED_PAIRS)
def test_every_step_reaches_the_upstream(client, upstream, proxy_url, upstreams, sink):
    ask(client, f"{proxy_url}/shape-{upstream}", alias(upstream), temperature=0.8, max_tokens=4096)
    record = the_record(sink)  # first: a record left unread would land in the next test's sink
    body = received(upstreams, upstream)
    everything = json.dumps(body, ensure_ascii=False)
    gemini_only = [GEMINI_ONLY] if upstream == "gemini" else []
    assert system_sent(upstream, body) == "\n\n".join([SYSTEM_BEFORE, REPLACED_SYSTEM, SYSTEM_AFTER, *gemini_only])
    assert "Claude Code" not in everything
    assert GEMINI_ONLY not in everything or upstream == "gemini", "the injection's models glob names only gemini-*"
    assert "\n\n".join(last_user_sent(upstream, body)) == "\n\n".join([USER_BEFORE, QUESTION, USER_AFTER])
    assert tools_sent(upstream, body) == ["get_weather"]
    # temperature 0.8 times 0.5 (the default 0.3 does not replace what the
    # client gave); top_p from the defaults; max_tokens 4096 clamped.
    assert sampling_sent(upstream, body) == {"temperature": pytest.approx(0.4), "top_p": 0.9, "max_tokens": 300}
    extra_body_arrived(upstream, body)
    assert record["passthrough"] is False and record["route_rule"] is None
    prompts = [f"prompt[{i}]" for i in range(5 if upstream == "gemini" else 4)]
    assert record["shaping"] == ["replace", *prompts, "tools", "temperature_ratio", "defaults", "limits", "extra_body"]


@pytest.mark.parametrize("client,upstream", SHAPED_PAIRS)
def test_text_added_to_a_turn_of_tool_results_follows_them(client, upstream, proxy_url, upstreams):
    ask(client, f"{proxy_url}/shape-{upstream}", alias(upstream), system=None, tool_round=True)
    body = received(upstreams, upstream)
    assert "\n\n".join(last_user_sent(upstream, body)) == "\n\n".join([f"[result] {TOOL_RESULT}", USER_BEFORE, USER_AFTER])
    # A client without a system prompt gets the injected one; without a
    # temperature, the group's default (the ratio has nothing to scale).
    assert system_sent(upstream, body) == "\n\n".join([SYSTEM_BEFORE, SYSTEM_AFTER, *([GEMINI_ONLY] if upstream == "gemini" else [])])
    assert sampling_sent(upstream, body)["temperature"] == pytest.approx(0.3)


@pytest.mark.parametrize("client,upstream", SHAPED_PAIRS)
def test_replaced_prompts_kept_tools_and_overrides(client, upstream, proxy_url, upstreams):
    # The client forces get_weather, which the group's tools leave out: the
    # choice goes too (the strict fakes refuse a choice of no declared tool).
    ask(client, f"{proxy_url}/replacing", alias(upstream), temperature=0.8, top_p=0.95, forced=True)
    body = received(upstreams, upstream)
    assert system_sent(upstream, body) == SYSTEM_INSTEAD
    assert last_user_sent(upstream, body) == [USER_INSTEAD]
    everything = json.dumps(body, ensure_ascii=False)
    assert QUESTION not in everything and "Claude Code" not in everything and "get_weather" not in everything
    assert tools_sent(upstream, body) == ["get_time"]
    sampling = sampling_sent(upstream, body)
    assert (sampling["temperature"], sampling["top_p"]) == (pytest.approx(0.1), 0.5)


# The default thinking in each upstream's form: effort "high" (16384 tokens
# where a budget is needed), a budget of 2048 (effort "low" where a level is).
# The clients ask for 20000 tokens, room for either budget (and the most the
# anthropic SDK sends without streaming).
THINKING_DEFAULTS = {
    "effort": {"openai": "high", "responses": "high", "claude": {"type": "enabled", "budget_tokens": 16384},
               "gemini": 16384, "ollama": True},
    "budget": {"openai": "low", "responses": "low", "claude": {"type": "enabled", "budget_tokens": 2048},
               "gemini": 2048, "ollama": True},
}


@pytest.mark.parametrize("group", ["effort", "budget"])
@pytest.mark.parametrize("client,upstream", SHAPED_PAIRS)
def test_thinking_defaults_arrive_in_each_upstreams_form(client, upstream, group, proxy_url, upstreams):
    ask(client, f"{proxy_url}/{group}", alias(upstream), max_tokens=20000)
    body = received(upstreams, upstream)
    assert thinking_sent(upstream, body) == THINKING_DEFAULTS[group][upstream]


# What the client asked (thinking with 1024 tokens) in each upstream's form.
CLIENT_THINKING = {"openai": "low", "responses": "low", "claude": {"type": "enabled", "budget_tokens": 1024},
                   "gemini": 1024, "ollama": True}


@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_thinking_defaults_leave_what_the_client_asked(upstream, proxy_url, upstreams):
    sdk("claude", f"{proxy_url}/effort").messages.create(
        model=alias(upstream), max_tokens=20000, messages=[{"role": "user", "content": QUESTION}],
        thinking={"type": "enabled", "budget_tokens": 1024})
    assert thinking_sent(upstream, received(upstreams, upstream)) == CLIENT_THINKING[upstream]


# ---------------------------------------------------------------- 2. answers are not shaped


@pytest.mark.parametrize("scenario", ["text", "tool_call", "thinking"])
@pytest.mark.parametrize("client,upstream", SHAPED_PAIRS)
def test_a_streamed_answer_is_the_same_through_a_shaping_group(client, upstream, scenario, proxy_url, upstreams):
    def streamed(prefix: str):
        upstreams[upstream].script(scenario)
        outcome = DRIVERS[client](proxy_url + prefix).chat(alias(upstream), stream=True, tools=True, thinking=scenario == "thinking")
        return outcome, upstreams[upstream].last.json

    shaped, shaped_body = streamed(f"/shape-{upstream}")
    plain, plain_body = streamed("")
    assert tools_sent(upstream, shaped_body) == ["get_weather"] and tools_sent(upstream, plain_body) == ["get_weather", "get_time"]
    assert (shaped.text, shaped.thinking, shaped.calls, shaped.stop) == (plain.text, plain.thinking, plain.calls, plain.stop)
    assert (shaped.input_tokens, shaped.output_tokens) == (plain.input_tokens, plain.output_tokens)
    assert shaped.text or shaped.calls


# ---------------------------------------------------------------- 3. routing by need

LONG = "Read this file carefully. " * 400  # about 2600 tokens by the estimate
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}}
THINKING = {"type": "enabled", "budget_tokens": 1024}


ROUTES = [
    # (client model, long prompt, thinking, image) -> (upstream, its model, rule, alias)
    pytest.param(("claude-sonnet-4-6", LONG, False, False), ("gemini", "gemini-long", "route.0: input_tokens_over 2000", "route.0"), id="long"),
    pytest.param(("claude-sonnet-4-6", QUESTION, False, False), ("responses", "gpt-resp-default", None, "claude-*"), id="short"),
    pytest.param(("claude-sonnet-4-6", QUESTION, True, False), ("openai", "gpt-thinker", "route.1: thinking", "route.1"), id="thinking"),
    pytest.param(("claude-sonnet-4-6", QUESTION, False, True), ("ollama", "llama-vision", "route.2: images", "route.2"), id="image"),
    pytest.param(("claude-haiku-4-5", QUESTION, False, False),
                 ("claude", "claude-small", "route.3: model claude-haiku-*", "route.3"), id="background"),
    # The first rule that matches wins.
    pytest.param(("claude-sonnet-4-6", LONG, True, True), ("gemini", "gemini-long", "route.0: input_tokens_over 2000", "route.0"),
                 id="long-thinking-image"),
    pytest.param(("claude-sonnet-4-6", QUESTION, True, True), ("openai", "gpt-thinker", "route.1: thinking", "route.1"),
                 id="thinking-image"),
    pytest.param(("claude-haiku-4-5", QUESTION, False, True), ("ollama", "llama-vision", "route.2: images", "route.2"),
                 id="background-image"),
    # No rule matches: the alias globs, in order.
    pytest.param(("gpt-4o", QUESTION, False, False), ("openai", "gpt-default", None, "*"), id="no-rule-other-model"),
]


@pytest.mark.parametrize("request_,expected", ROUTES)
def test_route_rules_choose_the_target(request_, expected, proxy_url, upstreams, sink):
    model, text, thinking, image = request_
    upstream, upstream_model, rule, alias_ = expected
    content: list[dict[str, Any]] = [*([IMAGE] if image else []), {"type": "text", "text": text}]
    sdk("claude", f"{proxy_url}/routed").messages.create(
        model=model, max_tokens=4096, messages=[{"role": "user", "content": content}], **optional(thinking=THINKING if thinking else None))
    record = the_record(sink)
    asked = [p for p, fake in upstreams.items() if fake.requests]
    assert asked == [upstream]
    assert sent_model(upstream, upstreams[upstream].last) == upstream_model
    assert (record["route_rule"], record["alias"], record["model"]) == (rule, alias_, model)
    assert record["target"]["model"] == upstream_model and record["shaping"] == []


def test_a_rules_own_shape_replaces_the_groups_for_what_it_takes(proxy_url, upstreams, sink):
    ask("claude", f"{proxy_url}/per-rule", "claude-haiku-4-5")
    background = received(upstreams, "ollama")
    record = the_record(sink)
    assert system_sent("ollama", background) == "BACKGROUND" and tools_sent("ollama", background) == []
    assert record["route_rule"] == "route.0: model claude-haiku-*" and record["shaping"] == ["prompt[0]", "tools"]
    ask("claude", f"{proxy_url}/per-rule", "claude-sonnet-4-6")
    main = received(upstreams, "ollama")
    assert system_sent("ollama", main) == SYSTEM and tools_sent("ollama", main) == ["get_weather"]
    deadline = time.monotonic() + 10
    while len(sink.keys()) < 2 and time.monotonic() < deadline:  # its record lands in this test's sink
        time.sleep(0.02)


# ---------------------------------------------------------------- 4. provider headers

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def placeholders(recorded) -> tuple[str, str]:
    headers = recorded.headers
    assert headers["x-static"] == "fixed"
    assert UUID.match(headers["x-trace"]), headers["x-trace"]
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), headers["x-request-id"]
    return headers["x-request-id"], headers["x-trace"]


@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_provider_headers_are_filled_per_request(upstream, proxy_url, upstreams):
    client = sdk("openai", proxy_url)  # pass-through on the openai upstream, converted on the others
    for _ in range(2):
        client.chat.completions.create(model=alias(upstream), messages=[{"role": "user", "content": QUESTION}])
    first, second = (placeholders(r) for r in upstreams[upstream].requests)
    assert first[0] != second[0] and first[1] != second[1]
    assert not [value for value in upstreams[upstream].last.headers.values() if "{" in value]


def test_a_failover_retry_keeps_the_request_id_and_takes_a_new_uuid(proxy_url, upstreams):
    upstreams["openai"].script("server_error", "text")
    answer = sdk("openai", proxy_url).chat.completions.create(model="twice", messages=[{"role": "user", "content": QUESTION}])
    assert answer.choices[0].message.content
    failed, retried = upstreams["openai"].requests
    assert {failed.json["model"], retried.json["model"]} == {"gpt-first", "gpt-second"}
    (failed_id, failed_uuid), (retried_id, retried_uuid) = placeholders(failed), placeholders(retried)
    assert failed_id == retried_id and failed_uuid != retried_uuid


@pytest.mark.parametrize("upstream", ["claude", "gemini"])
def test_a_token_count_counts_the_request_as_shaped(upstream, proxy_url, upstreams):
    """Claude Code counts its context before it sends it: the count is of
    what the upstream would receive (and a shaped group is never passed
    through, even to an upstream of the client's protocol)."""
    client = sdk("claude", f"{proxy_url}/shape-{upstream}")
    tools = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in TOOLS]
    counted = client.messages.count_tokens(model=alias(upstream), system=SYSTEM, tools=tools,
                                           messages=[{"role": "user", "content": QUESTION}])
    assert counted.input_tokens > 0
    recorded = upstreams[upstream].last
    assert recorded.path.endswith("count_tokens") or recorded.path.endswith(":countTokens")
    body = recorded.json if upstream == "claude" else recorded.json["generateContentRequest"]
    gemini_only = [GEMINI_ONLY] if upstream == "gemini" else []
    assert system_sent(upstream, body) == "\n\n".join([SYSTEM_BEFORE, REPLACED_SYSTEM, SYSTEM_AFTER, *gemini_only])
    assert tools_sent(upstream, body) == ["get_weather"]
