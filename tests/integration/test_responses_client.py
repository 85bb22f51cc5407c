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
