"""What a Responses API client does beyond one request, on every upstream:
it continues a conversation the proxy keeps (`previous_response_id`, the
SDK's default `store`), reads a kept response back and deletes it. The
upstream always gets the whole conversation, its tool calls answered."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fakes import scenarios

from .conftest import PROTOCOLS, alias
from .drivers import ACCESS_KEY, QUESTION, TOOL_RESULT, TOOLS
from .test_pairs import STREAMING, tool_results_sent

WEATHER = {"type": "function", **TOOLS[0], "strict": False}


def client(proxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_previous_response_id_continues_the_conversation(upstream, stream, proxy_url, upstreams):
    upstreams[upstream].script("tool_call", "text")
    oa = client(proxy_url)
    first = oa.responses.create(model=alias(upstream), input=QUESTION, tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", scenarios.WEATHER_ARGS)
    follow_up = dict(model=alias(upstream), previous_response_id=first.id, tools=[WEATHER],
                     input=[{"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}])
    if stream:
        with oa.responses.stream(**follow_up) as events:
            second = events.get_final_response()
    else:
        second = oa.responses.create(**follow_up)
    assert second.output_text == scenarios.TEXT
    assert second.previous_response_id == first.id and second.id != first.id
    sent = upstreams[upstream].last.json
    assert QUESTION in json.dumps(sent, ensure_ascii=False), "the kept turns were not sent"
    assert tool_results_sent(upstream, sent) == [("get_weather", TOOL_RESULT)]


@pytest.mark.parametrize("upstream", ["claude", "responses"])
def test_a_kept_response_is_read_back_and_deleted(upstream, proxy_url, upstreams):
    upstreams[upstream].script("text")
    oa = client(proxy_url)
    created = oa.responses.create(model=alias(upstream), input=QUESTION, instructions="Be brief.")
    kept = oa.responses.retrieve(created.id)
    assert (kept.id, kept.output_text, kept.status) == (created.id, scenarios.TEXT, "completed")
    items = oa.responses.input_items.list(created.id)
    assert QUESTION in json.dumps([i.model_dump() for i in items.data], ensure_ascii=False)
    oa.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(created.id)


def test_a_response_not_stored_cannot_be_continued(proxy_url, upstreams):
    upstreams["openai"].script("text")
    oa = client(proxy_url)
    first = oa.responses.create(model=alias("openai"), input=QUESTION, store=False)
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as caught:
        oa.responses.create(model=alias("openai"), input="And tomorrow?", previous_response_id=first.id)
    assert first.id in caught.value.message
    assert len(upstreams["openai"].requests) == 1


# A custom tool (Codex's apply_patch is one): a free-form string in, no JSON.
CUSTOM = {"type": "custom", "name": "get_weather", "description": "The weather in a city, named in plain words."}


def _custom_tool_sent(upstream: str, body: dict) -> bool:
    """Whether the upstream was offered the custom tool as its protocol can
    take it: natively (Responses) or as a function taking one string."""
    if upstream == "responses":
        return any(t.get("type") == "custom" and t.get("name") == "get_weather" for t in body.get("tools") or [])
    if upstream == "gemini":
        declared = [f for t in body.get("tools") or [] for f in t.get("functionDeclarations") or []]
        schemas = [f.get("parameters") or f.get("parametersJsonSchema") or {} for f in declared if f["name"] == "get_weather"]
    elif upstream == "claude":
        schemas = [t["input_schema"] for t in body.get("tools") or [] if t.get("name") == "get_weather"]
    else:
        schemas = [t["function"]["parameters"] for t in body.get("tools") or [] if t.get("function", {}).get("name") == "get_weather"]
    return len(schemas) == 1 and list((schemas[0].get("properties") or {})) == ["input"]


@pytest.mark.parametrize("stream", STREAMING)
@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_a_custom_tool_is_called_on_every_upstream_and_its_result_goes_back(upstream, stream, proxy_url, upstreams):
    upstreams[upstream].script("tool_call", "text")
    oa = client(proxy_url)
    ask = {"model": alias(upstream), "input": QUESTION, "tools": [CUSTOM], "store": False}
    if stream:
        with oa.responses.stream(**ask) as events:
            answer = events.get_final_response()
    else:
        answer = oa.responses.create(**ask)
    calls = [item for item in answer.output if item.type == "custom_tool_call"]
    assert [c.name for c in calls] == ["get_weather"], answer.output
    assert isinstance(calls[0].input, str) and "Paris" in calls[0].input
    assert not [item for item in answer.output if item.type == "function_call"]
    assert _custom_tool_sent(upstream, upstreams[upstream].last.json)

    # The call and its output go back, and the upstream gets them as its own.
    call = calls[0]
    history = [
        {"role": "user", "content": QUESTION},
        {"type": "custom_tool_call", "call_id": call.call_id, "name": call.name, "input": call.input},
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": TOOL_RESULT},
    ]
    final = oa.responses.create(model=alias(upstream), input=history, tools=[CUSTOM], store=False)
    assert final.output_text == scenarios.TEXT
    assert TOOL_RESULT in json.dumps(upstreams[upstream].last.json, ensure_ascii=False)
