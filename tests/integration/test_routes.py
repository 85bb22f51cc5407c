"""The rest of the contract's routes: model listings, count_tokens,
embeddings, prefixes and groups, auth and the proxy's own errors, each in the
client protocol's own shape and through the official SDKs where they have a
call for it."""

from __future__ import annotations

import json

import anthropic
import httpx
import ollama
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from tests.fakes import scenarios

from .conftest import PROTOCOLS, UPSTREAM_KEYS, alias
from .drivers import ACCESS_KEY, QUESTION

ALIASES = [alias(p) for p in PROTOCOLS]


def test_openai_lists_the_groups_aliases(proxy_url):
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ALIASES
    assert client.models.retrieve("via-gemini").id == "via-gemini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nothing-like-it")


def test_claude_lists_models_when_the_request_carries_anthropic_version(proxy_url):
    client = anthropic.Anthropic(base_url=proxy_url, api_key=ACCESS_KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ALIASES
    assert client.models.retrieve("via-ollama").id == "via-ollama"


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_gemini_lists_models_under_both_versions(proxy_url, version):
    client = genai.Client(api_key=ACCESS_KEY, http_options=gtypes.HttpOptions(base_url=proxy_url, api_version=version))
    names = [m.name for m in client.models.list()]
    assert names == [f"models/{a}" for a in ALIASES]


def test_ollama_tags_show_and_version(proxy_url):
    client = ollama.Client(host=proxy_url, headers={"Authorization": f"Bearer {ACCESS_KEY}"})
    assert [m.model for m in client.list().models] == ALIASES
    shown = client.show("via-claude")
    assert "tools" in (shown.capabilities or [])
    version = httpx.get(proxy_url + "/api/version", headers={"Authorization": f"Bearer {ACCESS_KEY}"}).json()
    assert version["version"]


def test_group_prefix_switch_and_group_at_alias(proxy_url, upstreams):
    headers = {"Authorization": f"Bearer {ACCESS_KEY}"}
    # /second and /switch (active_group: second) list the second group's aliases.
    for prefix in ("/second", "/switch", "/second/compat"):
        listed = httpx.get(proxy_url + prefix + "/v1/models", headers=headers).json()
        assert [m["id"] for m in listed["data"]] == ["only-*"], prefix
    client = openai.OpenAI(base_url=proxy_url + "/switch/v1", api_key=ACCESS_KEY, max_retries=0)
    upstreams["openai"].script("text")
    answer = client.chat.completions.create(model="only-this", messages=[{"role": "user", "content": QUESTION}])
    assert answer.choices[0].message.content == scenarios.TEXT
    # group@alias picks the group whatever the prefix says.
    upstreams["claude"].script("text")
    default = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    answer = default.chat.completions.create(model="default@via-claude", messages=[{"role": "user", "content": QUESTION}])
    assert answer.choices[0].message.content == scenarios.TEXT
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="via-claude", messages=[{"role": "user", "content": QUESTION}])
    assert "only-*" in caught.value.message


def test_claude_count_tokens_uses_the_upstreams_count_or_an_estimate(proxy_url, upstreams):
    client = anthropic.Anthropic(base_url=proxy_url, api_key=ACCESS_KEY, max_retries=0)
    messages = [{"role": "user", "content": QUESTION}]
    assert client.messages.count_tokens(model=alias("claude"), messages=messages).input_tokens == scenarios.COUNT_TOKENS
    assert upstreams["claude"].last.path.endswith("/messages/count_tokens")
    assert client.messages.count_tokens(model=alias("gemini"), messages=messages).input_tokens == scenarios.COUNT_TOKENS
    assert upstreams["gemini"].last.path.endswith(":countTokens")
    assert client.messages.count_tokens(model=alias("responses"), messages=messages).input_tokens == scenarios.COUNT_TOKENS
    assert upstreams["responses"].last.path.endswith("/responses/input_tokens")
    # OpenAI and Ollama cannot count: a careful estimate, never zero.
    estimate = client.messages.count_tokens(model=alias("openai"), messages=messages).input_tokens
    assert 0 < estimate < 50
    assert upstreams["openai"].requests == []


def test_gemini_count_tokens(proxy_url, upstreams):
    client = genai.Client(api_key=ACCESS_KEY, http_options=gtypes.HttpOptions(base_url=proxy_url, api_version="v1beta"))
    assert client.models.count_tokens(model=alias("claude"), contents=QUESTION).total_tokens == scenarios.COUNT_TOKENS
    assert client.models.count_tokens(model=alias("gemini"), contents=QUESTION).total_tokens == scenarios.COUNT_TOKENS


@pytest.mark.parametrize("upstream", ["openai", "gemini", "ollama"])
def test_embeddings_between_the_protocols_that_have_them(proxy_url, upstreams, upstream):
    oa = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    vectors = oa.embeddings.create(model=alias(upstream), input=["one", "two"]).data
    assert [list(v.embedding) == pytest.approx(scenarios.EMBEDDING) for v in vectors] == [True, True]
    ol = ollama.Client(host=proxy_url, headers={"Authorization": f"Bearer {ACCESS_KEY}"})
    assert ol.embed(model=alias(upstream), input="one").embeddings[0] == pytest.approx(scenarios.EMBEDDING)
    gc = genai.Client(api_key=ACCESS_KEY, http_options=gtypes.HttpOptions(base_url=proxy_url, api_version="v1beta"))
    embedded = gc.models.embed_content(model=alias(upstream), contents="one")
    assert embedded.embeddings[0].values == pytest.approx(scenarios.EMBEDDING)


@pytest.mark.parametrize("upstream", ["claude", "responses"])
def test_embeddings_to_a_protocol_without_them_is_a_clear_400(proxy_url, upstream):
    oa = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        oa.embeddings.create(model=alias(upstream), input="one")
    assert "no embeddings" in caught.value.message


@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_responses_input_tokens_on_every_upstream(proxy_url, upstreams, upstream):
    """The upstreams that count (Anthropic, Gemini, the Responses API) count;
    the others get a careful estimate, never zero."""
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    counted = client.responses.input_tokens.count(model=alias(upstream), input=QUESTION, instructions="Be brief.")
    if upstream in ("claude", "gemini", "responses"):
        assert counted.input_tokens == scenarios.COUNT_TOKENS
        assert "Be brief." in json.dumps(upstreams[upstream].last.json)
    else:
        assert 0 < counted.input_tokens < 50 and upstreams[upstream].requests == []


# ---------------------------------------------------------------- auth and errors


@pytest.mark.parametrize(
    "headers,query",
    [
        ({"Authorization": f"Bearer {ACCESS_KEY}"}, ""),
        ({"x-api-key": ACCESS_KEY}, ""),
        ({"x-goog-api-key": ACCESS_KEY}, ""),
        ({}, f"?key={ACCESS_KEY}"),
    ],
)
def test_access_key_in_any_of_four_places(proxy_url, headers, query):
    assert httpx.get(proxy_url + "/v1beta/models" + query, headers=headers).status_code == 200


def test_wrong_or_missing_key_is_401_in_each_protocols_shape(proxy_url):
    bad = "ccp-wrong"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=proxy_url + "/v1", api_key=bad, max_retries=0).models.list()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=proxy_url + "/v1", api_key=bad, max_retries=0).responses.create(model="via-openai", input="hi")
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=proxy_url, api_key=bad, max_retries=0).messages.create(
            model="via-openai", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    from google.genai import errors

    gemini_client = genai.Client(api_key=bad, http_options=gtypes.HttpOptions(base_url=proxy_url, api_version="v1beta"))
    with pytest.raises(errors.ClientError) as caught:
        gemini_client.models.generate_content(model="via-openai", contents="hi")
    assert caught.value.code == 401 and caught.value.status == "UNAUTHENTICATED"
    with pytest.raises(ollama.ResponseError) as failed:
        ollama.Client(host=proxy_url, headers={"Authorization": "Bearer " + bad}).chat(
            model="via-openai", messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 401
    assert httpx.get(proxy_url + "/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "path,body,status,check",
    [
        ("/v1/chat/completions", b"{not json", 400, lambda b: "not valid JSON" in b["error"]["message"]),
        ("/v1/chat/completions", b'{"model":"via-openai"}', 400, lambda b: "messages" in b["error"]["message"]),
        ("/v1/chat/completions", b'{"model":"nope","messages":[{"role":"user","content":"hi"}]}', 404,
         lambda b: "nope" in b["error"]["message"] and b["error"]["code"] == "model_not_found"),
        ("/v1/messages", b'{"model":"via-openai","messages":[{"role":"user","content":"hi"}]}', 400,
         lambda b: b["type"] == "error" and "max_tokens" in b["error"]["message"]),
        ("/v1beta/models/via-openai:generateContent", b'{"contents":"hi"}', 400,
         lambda b: b["error"]["status"] == "INVALID_ARGUMENT" and "contents" in b["error"]["message"]),
        ("/api/chat", b'{"model":"via-openai","messages":[{"role":"wizard","content":"hi"}]}', 400,
         lambda b: "role" in b["error"]),
        ("/v1/nowhere", b"{}", 404, lambda b: "no route" in b["error"]["message"]),
        ("/v1/responses", b'{"model":"via-openai"}', 400, lambda b: "input" in b["error"]["message"]),
        ("/v1/responses", b'{"model":"via-openai","input":[{"role":"wizard","content":"hi"}]}', 400,
         lambda b: "role" in b["error"]["message"]),
        ("/v1/responses", b'{"model":"nope","input":"hi"}', 404,
         lambda b: "nope" in b["error"]["message"] and b["error"]["code"] == "model_not_found"),
    ],
)
def test_the_proxys_own_errors_say_what_to_fix(proxy_url, path, body, status, check):
    response = httpx.post(proxy_url + path, content=body, headers={"Authorization": f"Bearer {ACCESS_KEY}",
                                                                   "content-type": "application/json"})
    assert response.status_code == status
    assert check(response.json()), response.json()


@pytest.mark.parametrize("client", PROTOCOLS)
def test_an_upstream_server_error_keeps_its_status(client, upstreams, driver_for):
    upstreams["openai"].script("server_error")
    failure = driver_for(client).fail(alias("openai"), stream=False)
    assert failure.status == 500


def test_upstream_keys_never_reach_the_client(proxy_url, upstreams):
    upstreams["claude"].script("rate_limit")
    response = httpx.post(
        proxy_url + "/v1/chat/completions",
        json={"model": alias("claude"), "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {ACCESS_KEY}"},
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    for key in filter(None, UPSTREAM_KEYS.values()):
        assert key not in response.text
    sent = upstreams["claude"].last.headers
    assert sent["x-api-key"] == UPSTREAM_KEYS["claude"] and ACCESS_KEY not in str(sent)


def test_image_urls_are_fetched_for_upstreams_that_cannot(upstreams, proxy_url):
    import base64

    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.support.server import serving

    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )

    async def image(request):
        return Response(png, media_type="image/png")

    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    with serving(Starlette(routes=[Route("/cat.png", image)])) as images:
        for upstream in ("gemini", "ollama"):
            upstreams[upstream].script("text")
            client.chat.completions.create(model=alias(upstream), messages=[{"role": "user", "content": [
                {"type": "text", "text": QUESTION},
                {"type": "image_url", "image_url": {"url": images.url + "/cat.png"}},
            ]}])
        parts = upstreams["gemini"].last.json["contents"][0]["parts"]
        assert parts[1]["inlineData"] == {"mimeType": "image/png", "data": base64.b64encode(png).decode()}
        assert upstreams["ollama"].last.json["messages"][0]["images"] == [base64.b64encode(png).decode()]
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=alias("gemini"), messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": images.url + "/missing.png"}}]}])
        assert "cannot fetch image" in caught.value.message


@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_a_client_that_hangs_up_cancels_the_upstream_request(proxy_url, upstreams, upstream):
    import time

    upstreams[upstream].script("stall", seconds=20)
    body = {"model": alias(upstream), "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    headers = {"x-api-key": ACCESS_KEY, "anthropic-version": "2023-06-01"}
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", proxy_url + "/v1/messages", json=body, headers=headers) as response:
            first = next(response.iter_bytes())
            assert b"message_start" in first
    deadline = time.monotonic() + 5
    while upstreams[upstream].hung_up == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstreams[upstream].hung_up == 1, "the upstream kept streaming to nobody"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_ollama_generate_on_every_upstream(proxy_url, upstreams, upstream, stream):
    upstreams[upstream].script("text")
    client = ollama.Client(host=proxy_url, headers={"Authorization": f"Bearer {ACCESS_KEY}"})
    if stream:
        parts = list(client.generate(model=alias(upstream), prompt=QUESTION, system="Be brief.", stream=True))
        text = "".join(p.response for p in parts)
        final = parts[-1]
    else:
        final = client.generate(model=alias(upstream), prompt=QUESTION, system="Be brief.")
        text = final.response
    assert text == scenarios.TEXT
    assert final.done and final.done_reason == "stop"
    assert (final.prompt_eval_count, final.eval_count) == (scenarios.PROMPT_TOKENS, scenarios.OUTPUT_TOKENS)
    sent = json.dumps(upstreams[upstream].last.json, ensure_ascii=False)
    assert QUESTION in sent and "Be brief." in sent


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_sdk_default_api_version(proxy_url, upstreams, stream):
    upstreams["claude"].script("text")
    client = genai.Client(api_key=ACCESS_KEY, http_options=gtypes.HttpOptions(base_url=proxy_url))
    if stream:
        text = "".join(c.text or "" for c in client.models.generate_content_stream(model=alias("claude"), contents=QUESTION))
    else:
        text = client.models.generate_content(model=alias("claude"), contents=QUESTION).text
    assert text == scenarios.TEXT


def test_gemini_chat_history_keeps_streamed_turns(proxy_url, upstreams):
    upstreams["openai"].script("text", "text")
    client = genai.Client(api_key=ACCESS_KEY, http_options=gtypes.HttpOptions(base_url=proxy_url, api_version="v1beta"))
    chat = client.chats.create(model=alias("openai"))
    for _ in chat.send_message_stream(QUESTION):
        pass
    for _ in chat.send_message_stream("And tomorrow?"):
        pass
    history = chat.get_history(curated=True)
    assert [c.role for c in history][:2] == ["user", "model"] and len(history) >= 4
    second = upstreams["openai"].last.json["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == scenarios.TEXT


@pytest.mark.parametrize("upstream", ["claude", "gemini", "openai", "ollama", "responses"])
def test_a_claude_code_style_request(proxy_url, upstreams, upstream):
    """What Claude Code sends: the beta surface (?beta=true, anthropic-beta),
    system blocks and tools with cache_control, metadata, thinking, a stream."""
    upstreams[upstream].script("tool_call")
    client = anthropic.Anthropic(base_url=proxy_url, api_key=ACCESS_KEY, max_retries=0)
    tools = [{"name": "get_weather", "description": "Weather", "cache_control": {"type": "ephemeral"},
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                               "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}}]
    with client.beta.messages.stream(
        model=alias(upstream), max_tokens=32000, betas=["interleaved-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14"],
        system=[{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION, "cache_control": {"type": "ephemeral"}}]}],
        tools=tools, metadata={"user_id": "user_abc"}, thinking={"type": "enabled", "budget_tokens": 4000},
    ) as stream:
        message = stream.get_final_message()
    calls = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert calls == [("get_weather", scenarios.WEATHER_ARGS)] and message.stop_reason == "tool_use"
    recorded = upstreams[upstream].last
    if upstream == "claude":
        assert recorded.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
    assert "You are Claude Code." in json.dumps(recorded.json)


def test_an_upstream_that_echoes_its_key_does_not_leak_it():
    from ccproxy.app import Settings, create_app
    from ccproxy.config import parse
    from ccproxy.stores.secrets import NoSecrets
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from tests.support.server import serving

    key = "sk-echoed-key-0123456789"

    async def chat(request):
        body = await request.json()
        if body.get("stream"):
            async def events():
                yield b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
                yield ('data: {"error":{"message":"stream broke for ' + key + '","type":"server_error"}}\n\n').encode()
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}},
                            status_code=400)

    with serving(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])) as upstream:
        config = parse({"providers": {"up": {"protocol": "openai", "base_url": upstream.url + "/v1", "keys": [key]}},
                        "groups": {"default": {"models": {"*": ["up/m"]}}}, "access_keys": [ACCESS_KEY]}, "test")
        with serving(create_app(Settings(config=config, secrets=NoSecrets()))) as proxy:
            client = anthropic.Anthropic(base_url=proxy.url, api_key=ACCESS_KEY, max_retries=0)
            with pytest.raises(anthropic.BadRequestError) as caught:
                client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
            assert key not in str(caught.value.body) and "[redacted]" in str(caught.value.body)
            with pytest.raises(anthropic.APIStatusError) as broke:
                with client.messages.stream(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]) as s:
                    s.get_final_message()
            assert key not in str(broke.value.body) and "stream broke" in str(broke.value.body)


ERROR_SHAPES = {
    "openai": lambda body: isinstance(body["error"]["message"], str) and "type" in body["error"],
    "claude": lambda body: body["type"] == "error" and isinstance(body["error"]["message"], str),
    "gemini": lambda body: isinstance(body["error"]["code"], int) and isinstance(body["error"]["status"], str),
    "ollama": lambda body: isinstance(body["error"], str),
    "responses": lambda body: isinstance(body["error"]["message"], str) and "type" in body["error"],
}


@pytest.mark.parametrize("path,protocol", [
    ("/v1/nowhere", "openai"),
    ("/v1/messages/nowhere", "claude"),
    ("/v1beta/nowhere", "gemini"),
    ("/v1beta/models/m:noSuchMethod", "gemini"),
    ("/api/nowhere", "ollama"),
    ("/second/api/nowhere", "ollama"),
    ("/v1/responses/nowhere/x", "responses"),
])
def test_an_unknown_path_is_a_404_in_its_protocols_shape(path, protocol, proxy_url):
    response = httpx.post(proxy_url + path, json={}, headers={"authorization": f"Bearer {ACCESS_KEY}"})
    assert response.status_code == 404
    assert ERROR_SHAPES[protocol](response.json()), response.text


@pytest.mark.parametrize("method,path,protocol,allowed", [
    ("GET", "/v1/chat/completions", "openai", "POST"),
    ("PUT", "/v1/messages", "claude", "POST"),
    ("DELETE", "/v1beta/models/m:generateContent", "gemini", "POST"),
    ("GET", "/api/chat", "ollama", "POST"),
    ("POST", "/api/tags", "ollama", "GET"),
    ("GET", "/v1/responses", "responses", "POST"),
])
def test_a_wrong_method_is_a_405_in_its_protocols_shape(method, path, protocol, allowed, proxy_url):
    response = httpx.request(method, proxy_url + path, headers={"authorization": f"Bearer {ACCESS_KEY}"})
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert ERROR_SHAPES[protocol](response.json()), response.text
