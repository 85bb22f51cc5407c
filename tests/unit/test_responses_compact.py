"""The rest of the Responses API surface: POST /v1/responses/compact and
POST /v1/responses/{id}/cancel, driven with the openai SDK against the app
in process, in front of two small fakes on loopback: a chat completions
upstream (which has no compaction: the proxy has the model summarize) and a
Responses upstream (whose own /responses/compact is used)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from ccproxy.app import Settings, create_app
from ccproxy.config import parse
from ccproxy.errors import ProxyError
from ccproxy.protocols import CODECS
from ccproxy.protocols.base import ClientContext
from ccproxy.protocols.responses.wire import MARK, SUMMARY_HEADING, mark_summary
from ccproxy.proxy import SUMMARY_INSTRUCTION
from ccproxy.stores.secrets import NoSecrets
from ccproxy.unified import Message, Request, Response, Text, Thinking
from openai.types.responses import CompactedResponse
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.support.server import serving

SUMMARY = "The user is building a CSV parser in parser.py; tests pass; next: quoted fields."
OPAQUE = "gAAAA-opaque-compaction-from-the-api"
LONG_INPUT = 2000  # tokens over which the test group routes to a long-context model


class Fake:
    """An upstream that records what it was sent: (path, headers, body)."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.received: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.app = Starlette(
            routes=[Route(path, self._handler(answer), methods=["POST"]) for path, answer in routes.items()]
        )

    def _handler(self, answer):
        async def handle(request: HTTPRequest) -> JSONResponse:
            body = await request.json()
            self.received.append((request.url.path, dict(request.headers), body))
            return JSONResponse(answer(body))

        return handle

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for where, _, body in self.received if where == path]


def chat_answer(body: dict[str, Any]) -> dict[str, Any]:
    asked_for_summary = SUMMARY_INSTRUCTION in json.dumps(body)
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": SUMMARY if asked_for_summary else "done"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
    }


def responses_answer(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "resp_upstream",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": body["model"],
        "output": [
            {
                "id": "msg_upstream",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "fine", "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6},
    }


def compact_answer(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "resp_compacted",
        "object": "response.compaction",
        "created_at": 1,
        "output": [
            {
                "id": "msg_kept",
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": "build a parser"}],
            },
            {"id": "cmp_upstream", "type": "compaction", "encrypted_content": OPAQUE},
        ],
        "usage": {"input_tokens": 30, "output_tokens": 8, "total_tokens": 38},
    }


@pytest.fixture(scope="module")
def servers():
    chat = Fake({"/v1/chat/completions": chat_answer})
    responses = Fake({"/v1/responses": responses_answer, "/v1/responses/compact": compact_answer})
    with serving(chat.app) as chat_server, serving(responses.app) as responses_server:
        yield chat, responses, chat_server.url, responses_server.url


@pytest.fixture
def fakes(servers):
    chat, responses, _, _ = servers
    chat.received.clear()
    responses.received.clear()
    return chat, responses


@pytest.fixture
def http(servers, fakes):
    _, _, chat_url, responses_url = servers
    config = parse(
        {
            "providers": {
                "chat": {"protocol": "openai", "base_url": chat_url + "/v1", "keys": ["sk-chat-test"]},
                "resp": {"protocol": "responses", "base_url": responses_url + "/v1", "keys": ["sk-resp-test"]},
            },
            "groups": {
                "default": {
                    "route": [{"when": {"input_tokens_over": LONG_INPUT}, "targets": ["chat/up-chat-long"]}],
                    "models": {"via-chat": ["chat/up-chat"], "via-responses": ["resp/up-resp"]},
                }
            },
        },
        "test",
    )
    app = create_app(Settings(config=config, secrets=NoSecrets(), open_when_no_keys=True))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def client(http):
    return openai.OpenAI(api_key="unused", base_url="http://testserver/v1", http_client=http, max_retries=0)


CONVERSATION: list[Any] = [
    {"role": "user", "content": "build a parser"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Writing parser.py."}]},
    {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": '{"command": ["pytest"]}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "3 passed"},
    {"role": "user", "content": [{"type": "input_text", "text": "now quoted fields"}]},
]


def items_of(compacted: CompactedResponse) -> list[dict[str, Any]]:
    """The compacted output as a client sends it back as input."""
    return [item.model_dump(exclude_none=True, warnings=False) for item in compacted.output]


def user_texts(compacted: CompactedResponse) -> list[str]:
    return [
        part["text"]
        for item in items_of(compacted)
        if item["type"] == "message" and item["role"] == "user"
        for part in item["content"]
    ]


# ---------------------------------------------------------------- compaction by summary (a chat upstream)


def test_compact_on_a_chat_upstream_answers_the_user_messages_then_one_compaction(client, fakes):
    chat, _ = fakes
    compacted = client.responses.compact(model="via-chat", input=CONVERSATION)
    assert isinstance(compacted, CompactedResponse)
    assert compacted.object == "response.compaction" and compacted.id.startswith("resp_")
    kinds = [item.type for item in compacted.output]
    assert kinds == ["message", "message", "compaction"]
    assert user_texts(compacted) == ["build a parser", "now quoted fields"]
    compaction = items_of(compacted)[-1]
    assert compaction["encrypted_content"] == mark_summary(SUMMARY) and compaction["id"].startswith("cmp_")
    assert (compacted.usage.input_tokens, compacted.usage.output_tokens, compacted.usage.total_tokens) == (40, 12, 52)
    # The model was asked once, whole, for a summary of the whole conversation.
    (asked,) = chat.bodies("/v1/chat/completions")
    assert asked["model"] == "up-chat" and not asked.get("stream")
    assert asked["messages"][-1] == {"role": "user", "content": SUMMARY_INSTRUCTION}
    assert "3 passed" in json.dumps(asked) and "Writing parser.py." in json.dumps(asked)


def test_a_long_conversation_is_compacted_by_the_target_its_route_rule_chooses(client, fakes):
    chat, _ = fakes
    long_turn = {"role": "user", "content": "Read this file carefully. " * 400}  # about 2600 tokens
    client.responses.compact(model="via-chat", input=[long_turn, *CONVERSATION])
    client.responses.compact(model="via-chat", input=CONVERSATION)
    assert [body["model"] for body in chat.bodies("/v1/chat/completions")] == ["up-chat-long", "up-chat"]


def test_a_lone_surrogate_in_a_user_turn_comes_back_escaped(http, fakes):
    # A truncated emoji: the compacted answer repeats the user's turns.
    body = b'{"model": "via-chat", "input": [{"role": "user", "content": "cut \\ud83d here"}]}'
    answer = http.post("/v1/responses/compact", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200
    assert b"cut \\ud83d here" in answer.content
    assert answer.json()["output"][0]["content"][0]["text"] == "cut \ud83d here"


def test_the_compacted_items_sent_back_reach_the_chat_upstream_with_the_summary(client, fakes):
    chat, _ = fakes
    compacted = client.responses.compact(model="via-chat", input=CONVERSATION)
    answer = client.responses.create(
        model="via-chat", input=items_of(compacted) + [{"role": "user", "content": "go on"}]
    )
    assert answer.output_text == "done"
    sent = chat.bodies("/v1/chat/completions")[-1]
    text = json.dumps(sent)
    assert SUMMARY in text and SUMMARY_HEADING in text and MARK not in text
    assert "build a parser" in text and "go on" in text
    assert "3 passed" not in text  # the compacted conversation is gone; its summary stands for it
    assert SUMMARY_INSTRUCTION not in text


def test_compacting_again_carries_the_earlier_summary_into_the_new_one(client, fakes):
    chat, _ = fakes
    first = client.responses.compact(model="via-chat", input=CONVERSATION)
    second = client.responses.compact(model="via-chat", input=items_of(first) + [{"role": "user", "content": "more"}])
    assert SUMMARY in json.dumps(chat.bodies("/v1/chat/completions")[-1])
    # The earlier summary is not a user message: it is not repeated beside the new one.
    assert user_texts(second) == ["build a parser", "now quoted fields", "more"]
    assert [item.type for item in second.output].count("compaction") == 1


def test_compact_continues_a_kept_conversation(client, fakes):
    chat, _ = fakes
    first = client.responses.create(model="via-chat", input="remember the number 7")
    compacted = client.responses.compact(model="via-chat", previous_response_id=first.id, input="and 8")
    asked = json.dumps(chat.bodies("/v1/chat/completions")[-1])
    assert "remember the number 7" in asked and "done" in asked and "and 8" in asked
    assert user_texts(compacted) == ["remember the number 7", "and 8"]


def test_compact_of_an_unknown_previous_response_is_a_400(client, fakes):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.compact(model="via-chat", previous_response_id="resp_nobody", input="x")
    assert caught.value.code == "previous_response_not_found"


# ---------------------------------------------------------------- the upstream's own compaction (same protocol)


def test_compact_on_a_responses_upstream_goes_to_its_compact_route_with_its_model_name(client, fakes):
    _, responses = fakes
    compacted = client.responses.compact(model="via-responses", input=CONVERSATION, instructions="be brief")
    assert items_of(compacted)[-1] == {"id": "cmp_upstream", "type": "compaction", "encrypted_content": OPAQUE}
    (path, headers, body), *_ = responses.received
    assert path == "/v1/responses/compact" and headers["authorization"] == "Bearer sk-resp-test"
    assert body == {"model": "up-resp", "input": CONVERSATION, "instructions": "be brief"}


def test_compact_of_a_kept_conversation_sends_the_responses_upstream_all_of_it(client, fakes):
    _, responses = fakes
    first = client.responses.create(model="via-responses", input="remember the number 7")
    client.responses.compact(model="via-responses", previous_response_id=first.id, input="and 8")
    body = responses.bodies("/v1/responses/compact")[-1]
    assert body["model"] == "up-resp" and "previous_response_id" not in body
    texts = [part["text"] for item in body["input"] for part in item["content"]]
    assert texts == ["remember the number 7", "fine", "and 8"]


def test_the_apis_own_compaction_goes_back_to_a_responses_upstream_only(client, fakes):
    chat, responses = fakes
    compacted = client.responses.compact(model="via-responses", input=CONVERSATION)
    follow_up = items_of(compacted) + [{"role": "user", "content": "go on"}]
    # Kept (store is on): converted, the compaction written back where it was.
    client.responses.create(model="via-responses", input=follow_up)
    sent = responses.bodies("/v1/responses")[-1]["input"]
    assert [item["type"] for item in sent] == ["message", "compaction", "message"]
    assert sent[1] == {"type": "compaction", "encrypted_content": OPAQUE}
    # No other upstream can read it: it is left out.
    answer = client.responses.create(model="via-chat", input=follow_up)
    assert answer.output_text == "done"
    sent_chat = json.dumps(chat.bodies("/v1/chat/completions")[-1])
    assert OPAQUE not in sent_chat and "build a parser" in sent_chat and "go on" in sent_chat


def test_our_compaction_passed_through_to_a_responses_upstream_becomes_its_summary(client, fakes):
    _, responses = fakes
    compacted = client.responses.compact(model="via-chat", input=CONVERSATION)
    follow_up = items_of(compacted) + [{"role": "user", "content": "go on"}]
    client.responses.create(model="via-responses", input=follow_up, store=False)
    sent = responses.bodies("/v1/responses")[-1]
    assert sent["model"] == "up-resp" and MARK not in json.dumps(sent)
    summary = sent["input"][2]
    assert summary["role"] == "system" and SUMMARY in summary["content"][0]["text"]


# ---------------------------------------------------------------- cancel


def test_cancelling_a_kept_response_is_refused_as_the_api_refuses_a_synchronous_one(client, fakes):
    kept = client.responses.create(model="via-chat", input="hi")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel(kept.id, extra_body={})
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "invalid_request_error"
    assert "synchronous" in caught.value.body["message"]


def test_cancelling_an_unknown_response_is_a_404(client, fakes):
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.cancel("resp_nobody", extra_body={})
    assert "resp_nobody" in caught.value.body["message"]


def test_a_cancel_without_a_body_reaches_the_handler(client, fakes):
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_nobody")


# ---------------------------------------------------------------- the codec alone


def decoded(items: list[Any]) -> Request:
    return CODECS["responses"].decode_request({"model": "m", "input": items}, ClientContext())


@pytest.mark.parametrize("kind", ["compaction", "compaction_summary"])
def test_a_marked_compaction_is_decoded_as_a_system_turn_with_its_summary(kind):
    request = decoded([{"role": "user", "content": "a"}, {"type": kind, "encrypted_content": mark_summary("S")}])
    assert [m.role for m in request.messages] == ["user", "system"]
    assert request.messages[1].content == [Text(text=f"{SUMMARY_HEADING}\n\nS")]


def test_an_opaque_compaction_crosses_as_redacted_thinking_of_its_protocol():
    request = decoded([{"type": "compaction", "id": "cmp_1", "encrypted_content": OPAQUE}])
    assert request.messages == [
        Message(role="assistant", content=[Thinking(signature=OPAQUE, redacted=True, origin="responses")])
    ]


@pytest.mark.parametrize("protocol", ["openai", "claude", "gemini", "ollama"])
def test_every_other_upstream_leaves_an_opaque_compaction_out(protocol):
    request = decoded(
        [
            {"role": "user", "content": "a"},
            {"type": "compaction", "encrypted_content": OPAQUE},
            {"role": "user", "content": "b"},
        ]
    )
    body = json.dumps(CODECS[protocol].encode_request(request, "m"))
    assert OPAQUE not in body


def test_a_compaction_item_without_its_content_is_a_400_naming_it():
    with pytest.raises(ProxyError) as caught:
        decoded([{"type": "compaction"}])
    assert caught.value.status == 400 and caught.value.param == "input.0.encrypted_content"


def test_kept_input_lists_an_opaque_compaction_as_the_item_it_was():
    request = decoded([{"type": "compaction", "encrypted_content": OPAQUE}])
    listed = CODECS["responses"].encode_kept_input(request.messages, "resp_1")
    assert [(item["type"], item.get("encrypted_content")) for item in listed["data"]] == [("compaction", OPAQUE)]


def test_the_routes_take_compact_and_cancel():
    routes = {(r.method, r.operation): r for r in CODECS["responses"].routes}
    assert routes[("POST", "compact")].compiled().match("/v1/responses/compact")
    cancel = routes[("POST", "cancel_kept")]
    assert cancel.compiled().match("/v1/responses/resp_1/cancel") and cancel.body is False


def test_a_summary_with_no_text_is_a_502():
    with pytest.raises(ProxyError) as caught:
        CODECS["responses"].encode_compacted(Response(content=[Text(text="  ")]), Request(model="m"))
    assert caught.value.status == 502
