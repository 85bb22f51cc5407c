"""Upstream answers of any shape never make a 500.

The strict fakes' good answers (text, a tool call, thinking and a call,
parallel calls; whole and streamed) are broken in seeded ways by the same
mutations as the client-input fuzz (a field deleted, retyped, emptied,
nested deep, made huge, injected, given twice) and, for streams, records
dropped, repeated or cut off at the end. A fuzz upstream serves each broken
answer, streams in awkward chunks, and every client protocol asks for it
through the proxy, same protocol and converted. Each answer must be:

- a 200 that is JSON, or a streamed 200 that ends the protocol's proper way
  or with its error event;
- or an error in the client's own shape, never a 500 (a 502 is the
  upstream's fault said as such);
- with nothing logged as an unexpected failure, and the provider key
  nowhere.

    CCPROXY_FUZZ_ANSWERS   cases per client, upstream and whole/streamed (default 3; `make fuzz` sets more)
    CCPROXY_FUZZ_SEED      the seed, shared with the client-input fuzz
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Any, AsyncIterator

import httpx
import pytest
from ccproxy.app import Settings, create_app
from ccproxy.config import parse
from ccproxy.protocols import CODECS
from ccproxy.stores.secrets import NoSecrets
from ccproxy.unified import Message, Request, Text, Tool
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.fakes import FakeUpstream
from tests.support.server import BackgroundServer

from .strategies import encode, mutate
from .test_client_input import SHAPES, ServerLog, server_errors, stream_problem

PROTOCOLS = ("openai", "claude", "gemini", "ollama", "responses")
SCENARIOS = ("text", "tool_call", "thinking_tool_call", "parallel_tools")
CASES = int(os.environ.get("CCPROXY_FUZZ_ANSWERS") or 3)
SEED = int(os.environ.get("CCPROXY_FUZZ_SEED") or 20250611)
SECRET = "sk-fuzz-upstream-secret-0123456789"
BASE_PATHS = {"openai": "/v1", "claude": "/v1", "gemini": "/v1beta", "ollama": "", "responses": "/v1"}
STREAM_TYPES = {"ollama": "application/x-ndjson"}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
# Field names and values that answers carry, for the injecting mutation.
VOCABULARY: dict[str, tuple[Any, ...]] = {
    "error": (None, {"message": "x"}, "x", {"type": "overloaded_error", "message": "busy"}),
    "usage": ({}, None, {"input_tokens": -1}),
    "content": (None, [], "x", [{"type": "text"}]),
    "choices": ([], None, [{}]),
    "candidates": ([], None, [{"content": {}}]),
    "type": ("error", "x", "message_stop", "response.completed"),
    "finish_reason": ("length", None, "tool_calls"),
    "finishReason": ("SAFETY", "MAX_TOKENS", None),
    "stop_reason": ("tool_use", None, "max_tokens"),
    "arguments": ("{", {}, None, "[]"),
    "args": ("x", None, []),
    "tool_calls": ([], None, [{"function": {}}]),
    "index": (-1, 99, None, "0"),
    "delta": ({}, None, "x"),
    "done": (True, False, None, "yes"),
    "id": (None, "", 5),
    "status": ("failed", "incomplete", None),
}


# ---------------------------------------------------------------- good answers


def upstream_request(protocol: str, stream: bool) -> tuple[str, dict[str, Any], dict[str, str]]:
    """What ccproxy itself would send the upstream: (path, body, headers)."""
    codec = CODECS[protocol]
    request = Request(
        model="m",
        messages=[Message(role="user", content=[Text(text="Weather in Paris?")])],
        tools=[Tool(name="get_weather", parameters=WEATHER), Tool(name="get_time")],
        max_tokens=256,
        stream=stream,
    )
    path = BASE_PATHS[protocol] + codec.upstream_path("m", stream)
    return path, codec.encode_request(request, "m"), {**codec.auth_headers(None), **codec.upstream_headers(request)}


@pytest.fixture(scope="module")
def good_answers() -> dict[tuple[str, bool], list[bytes]]:
    """Each upstream's good answers, whole and streamed, from its strict fake."""
    answers: dict[tuple[str, bool], list[bytes]] = {}
    for protocol in PROTOCOLS:
        fake = FakeUpstream(protocol)
        with TestClient(fake.app) as client:
            for stream in (False, True):
                path, body, headers = upstream_request(protocol, stream)
                for scenario in SCENARIOS:
                    fake.script(scenario)
                    answer = client.post(path, json=body, headers=headers)
                    assert answer.status_code == 200 and fake.violations == [], (protocol, fake.violations)
                    answers.setdefault((protocol, stream), []).append(answer.content)
    return answers


# ---------------------------------------------------------------- broken answers


def records(protocol: str, content: bytes) -> list[bytes]:
    separator = b"\n" if protocol == "ollama" else b"\n\n"
    text = content.replace(b"\r\n", b"\n")
    return [record for record in text.split(separator) if record.strip()]


def broken_record(rng: random.Random, protocol: str, record: bytes, log: list[str]) -> bytes:
    """The record with its JSON broken; an SSE record keeps its event line."""
    if protocol == "ollama":
        head, data = b"", record
    else:
        lines = record.split(b"\n")
        data_lines = [line for line in lines if line.startswith(b"data:")]
        if not data_lines:
            return record
        head = b"".join(line + b"\n" for line in lines if not line.startswith(b"data:"))
        data = data_lines[0].removeprefix(b"data:").strip()
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # [DONE], or a record an earlier mutation nested too deep to read here
        return record
    try:
        body = encode(mutate(rng, value, VOCABULARY, log))
    except RecursionError:  # an earlier mutation of this record nested it too deep to copy or write here
        log.append("(left as it was: too deep to break again)")
        return record
    return body if protocol == "ollama" else head + b"data: " + body


def broken_answer(rng: random.Random, protocol: str, stream: bool, good: bytes, log: list[str]) -> bytes:
    if not stream:
        value = json.loads(good)
        for _ in range(rng.choice((1, 1, 2, 3))):
            try:
                value = mutate(rng, value, VOCABULARY, log)
            except RecursionError:  # nested too deep by an earlier mutation to copy here
                break
        try:
            return encode(value)
        except RecursionError:
            log.append("(too deep to write here: the good answer goes instead)")
            return good
    parts = records(protocol, good)
    kind = rng.choices(["record", "records", "drop", "repeat", "cut"], weights=[45, 20, 12, 8, 15])[0]
    if kind in ("record", "records"):
        for _ in range(1 if kind == "record" else rng.choice((2, 3))):
            index = rng.randrange(len(parts))
            log.append(f"record {index}:")
            parts[index] = broken_record(rng, protocol, parts[index], log)
    elif kind == "drop":
        index = rng.randrange(len(parts))
        log.append(f"record {index} dropped")
        del parts[index]
    elif kind == "repeat":
        index = rng.randrange(len(parts))
        log.append(f"record {index} sent twice")
        parts.insert(index, parts[index])
    else:
        keep = rng.randrange(1, len(parts)) if len(parts) > 1 else 0
        log.append(f"cut after record {keep} of {len(parts)}")
        parts = parts[:keep]
    separator = b"\n" if protocol == "ollama" else b"\n\n"
    return b"".join(part + separator for part in parts)


# ---------------------------------------------------------------- the servers


class FuzzUpstream:
    """Answers every request with the answer set for it, streams cut into
    awkward chunks."""

    def __init__(self) -> None:
        self.answer = b""
        self.media_type = "application/json"
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: HTTPRequest) -> Response:
        await request.body()
        body, media_type = self.answer, self.media_type
        if media_type == "application/json":
            return Response(body, media_type=media_type)
        rng = random.Random(len(body))
        cuts = sorted(rng.sample(range(1, len(body)), min(3, len(body) - 1))) if len(body) > 1 else []
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]

        async def chunks() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        return StreamingResponse(chunks(), media_type=media_type)


@pytest.fixture(scope="module")
def stack():
    fake = FuzzUpstream()
    upstream = BackgroundServer(fake.app).start()
    providers = {
        f"fz-{p}": {"protocol": p, "base_url": upstream.url + BASE_PATHS[p], "keys": [SECRET]} for p in PROTOCOLS
    }
    models = {f"fz-{p}": [f"fz-{p}/m"] for p in PROTOCOLS}
    config = parse({"providers": providers, "groups": {"default": {"models": models}}, "retries": 0, "deadline": 10}, "fz")
    proxy = BackgroundServer(create_app(Settings(config=config, secrets=NoSecrets(), open_when_no_keys=True))).start()
    server_log = ServerLog()
    try:
        yield fake, proxy.url, server_log
    finally:
        server_log.detach()
        proxy.stop()
        upstream.stop()


def ask(url: str, client: str, model: str, stream: bool) -> httpx.Response:
    """The client's request, with a tool declared."""
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if client == "openai":
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream, "tools": [tool]}
        return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    if client == "claude":
        body = {"model": model, "max_tokens": 256, "messages": messages, "stream": stream,
                "tools": [{"name": "get_weather", "input_schema": WEATHER}]}  # fmt: skip
        return httpx.post(f"{url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}, timeout=30)
    if client == "responses":
        tool = {"type": "function", "name": "get_weather", "parameters": WEATHER}
        body = {"model": model, "input": "Weather in Paris?", "stream": stream, "tools": [tool]}
        return httpx.post(f"{url}/v1/responses", json=body, timeout=30)
    if client == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
                "tools": [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": WEATHER}]}]}  # fmt: skip
        return httpx.post(f"{url}/v1beta/models/{model}:{method}", json=body, timeout=30)
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
    body = {"model": model, "messages": messages, "stream": stream, "tools": [tool]}
    return httpx.post(f"{url}/api/chat", json=body, timeout=30)


def problem(client: str, stream: bool, response: httpx.Response) -> str | None:
    if SECRET in response.text:
        return "the provider key reached the client"
    status = response.status_code
    if status == 500 or not (status == 200 or 400 <= status < 600):
        return f"status {status}: {response.text[:300]}"
    if status >= 400:
        try:
            shape = SHAPES[client](response.json(), status)
        except ValueError:
            return f"{status} error that is not JSON: {response.text[:200]}"
        return None if shape is None else f"{status} error not in the {client} shape: {shape}"
    if stream:
        return stream_problem(client, response.content)
    try:
        body = response.json()
    except ValueError:
        return f"a whole 200 that is not JSON: {response.text[:200]}"
    return None if isinstance(body, dict) else f"a whole 200 that is not an object: {response.text[:200]}"


@dataclass
class Failure:
    client: str
    upstream: str
    stream: bool
    index: int
    mutations: list[str]
    what: str

    def __str__(self) -> str:
        how = "streamed" if self.stream else "whole"
        return (f"{self.client} client on a {self.upstream} upstream, {how}, case {self.index} "
                f"(CCPROXY_FUZZ_SEED={SEED}): {self.what}\n    mutations: {'; '.join(self.mutations)[:600]}")  # fmt: skip


@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_broken_upstream_answers_never_get_a_500(upstream, stack, good_answers):
    fake, url, server_log = stack
    server_log.attach()
    found: list[Failure] = []
    for client in PROTOCOLS:
        for stream in (False, True):
            for index in range(CASES):
                rng = random.Random(f"{SEED}:{client}:{upstream}:{stream}:{index}")
                log: list[str] = []
                good = rng.choice(good_answers[upstream, stream])
                fake.answer = broken_answer(rng, upstream, stream, good, log)
                fake.media_type = STREAM_TYPES.get(upstream, "text/event-stream") if stream else "application/json"
                response = ask(url, client, f"fz-{upstream}", stream)
                what = problem(client, stream, response)
                logged = server_errors(server_log.drain())
                if logged:
                    first = logged[0]
                    what = f"{what + '; ' if what else ''}logged: {first['log']}: {first['exception']} at {first['where']}"
                if what:
                    found.append(Failure(client, upstream, stream, index, log, what))
    assert not found, f"{len(found)} broken answers mishandled:\n" + "\n".join(str(f) for f in found[:12])

