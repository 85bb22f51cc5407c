"""Tool compatibility mode through the official SDKs: the upstream gets no
native tool fields and answers in text; every client gets native calls."""

from __future__ import annotations

import json

import pytest

from tests.fakes import scenarios

from .conftest import PROTOCOLS, alias
from .drivers import DRIVERS, QUESTION, TOOL_RESULT
from .test_pairs import CALLS_WITH_IDS, PAIRS, STOP_TOOLS, STREAMING

NATIVE_TOOL_FIELDS = ("tools", "tool_choice", "toolConfig", "functionDeclarations", "tool_calls", "functionCall",
                      "functionResponse", "tool_use", "tool_result", "function_call", "function_call_output",
                      "custom_tool_call", "custom_tool_call_output")


def sent_without_native_tools(recorded) -> str:
    text = json.dumps(recorded.json, ensure_ascii=False)
    found = [f for f in NATIVE_TOOL_FIELDS if f'"{f}"' in text]
    assert not found, f"native tool fields reached a compat upstream: {found}"
    assert "get_weather" in text and "<tool_call" in text, "the tools were not described in the prompt"
    return text


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("client,upstream", PAIRS)
def test_a_text_call_becomes_a_native_call(client, upstream, stream, upstreams, proxy_url):
    upstreams[upstream].script("compat_call")
    outcome = DRIVERS[client](proxy_url + "/compat").chat(alias(upstream), stream=stream, tools=True)
    assert outcome.calls == [("get_weather", scenarios.WEATHER_ARGS)]
    assert outcome.text.strip() == scenarios.COMPAT_PREAMBLE
    assert outcome.stop == STOP_TOOLS[client]
    if client in CALLS_WITH_IDS:
        assert all(outcome.call_ids)
    sent_without_native_tools(upstreams[upstream].last)


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("client,upstream", PAIRS)
def test_several_fenced_calls_in_one_answer(client, upstream, stream, upstreams, proxy_url):
    upstreams[upstream].script("compat_parallel")
    outcome = DRIVERS[client](proxy_url + "/compat").chat(alias(upstream), stream=stream, tools=True)
    assert outcome.calls == [("get_weather", scenarios.WEATHER_ARGS), ("get_time", scenarios.TIME_ARGS)]
    assert "```" not in outcome.text and "<tool_call" not in outcome.text


@pytest.mark.parametrize("client", PROTOCOLS)
@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_tool_results_go_upstream_as_text(client, upstream, upstreams, proxy_url):
    upstreams[upstream].script("text")
    outcome = DRIVERS[client](proxy_url + "/compat").round_trip(alias(upstream), "call_abc123", stream=False)
    assert outcome.text == scenarios.TEXT
    text = sent_without_native_tools(upstreams[upstream].last)
    assert "<tool_result" in text and TOOL_RESULT in text and QUESTION in text


def test_group_and_provider_switches(upstreams, proxy_url):
    # a group with tool_mode: compat needs no prefix...
    upstreams["openai"].script("compat_call")
    outcome = DRIVERS["claude"](proxy_url + "/textual").chat(alias("openai"), stream=True, tools=True)
    assert outcome.calls == [("get_weather", scenarios.WEATHER_ARGS)]
    sent_without_native_tools(upstreams["openai"].last)
    # ...and a group with tool_mode: native ignores the compat prefix.
    upstreams["openai"].script("tool_call")
    outcome = DRIVERS["claude"](proxy_url + "/native/compat").chat(alias("openai"), stream=False, tools=True)
    assert outcome.calls == [("get_weather", scenarios.WEATHER_ARGS)]
    assert "tools" in upstreams["openai"].last.json
