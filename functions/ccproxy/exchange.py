"""The research record of one exchange: what the client sent, what went
upstream, what came back, what the client got, with times and usage.

A `Recording` observes the request (see observe.py) and fills its
`Exchange` as the request goes; `record()` turns that into the stored
document (schema_version 1, one JSON line; the Glue table in template.yaml
has the same columns). Keys never reach it: auth headers are never captured,
and every known secret is replaced wherever it appears.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from .errors import ProxyError
from .jsonutil import dumps
from .observe import Observer
from .unified import Request, Response, Text, Thinking, ToolCall

SCHEMA_VERSION = 1


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000, 3)


class Capture:
    """A body or a stream, kept up to `limit` bytes."""

    __slots__ = ("limit", "parts", "size", "truncated")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, data: bytes) -> None:
        room = self.limit - self.size
        if room <= 0:
            self.truncated = self.truncated or bool(data)
            return
        if len(data) > room:
            data, self.truncated = data[:room], True
        self.parts.append(data)
        self.size += len(data)

    def text(self) -> str | None:
        if not self.parts:
            return None
        return b"".join(self.parts).decode("utf-8", "replace")


class Exchange:
    """Filled in by the proxy while it serves one request."""

    def __init__(self, *, route: str, client_protocol: str, group: str, limit: int) -> None:
        self.id = uuid.uuid4().hex
        self.started = time.time()
        self.clock = time.perf_counter()
        self.route = route
        self.client_protocol = client_protocol
        self.group = group
        self.limit = limit
        self.alias: str | None = None
        self.route_rule: str | None = None  # the group's route rule that chose the target, if one did
        self.shaping: list[str] = []  # the group's shaping steps that changed the request sent
        self.model: str | None = None
        self.stream = False
        self.target: dict[str, str] | None = None
        self.key_fingerprint: str | None = None
        self.access_key: str | None = None  # the client's access key, by name
        self.compat = False
        self.passthrough = False
        self.attempts: list[dict[str, Any]] = []
        self.status = 200
        self.error: dict[str, Any] | None = None
        self.usage: dict[str, Any] = {}
        self.system: str | None = None
        self.tools: list[str] = []
        # What of the client's request the upstream could not take (server
        # tools, betas), left out of what was sent.
        self.left_out: list[str] = []
        self.final: dict[str, Any] | None = None
        self.upstream_model: str | None = None  # as the upstream's answer named it
        self.client_request = Capture(limit)
        self.upstream_request = Capture(limit)
        self.upstream_response = Capture(limit)
        self.client_response = Capture(limit)
        self.upstream_first_byte: float | None = None
        self.client_first_byte: float | None = None
        self.done: float | None = None

    # ------------------------------------------------------------ filled by the proxy

    def mark_upstream_first_byte(self) -> None:
        if self.upstream_first_byte is None:
            self.upstream_first_byte = time.perf_counter()

    def mark_client_first_byte(self) -> None:
        if self.client_first_byte is None:
            self.client_first_byte = time.perf_counter()

    def attempt(self, provider: str, model: str, key_fingerprint: str, status: int | None, error: str | None) -> None:
        self.attempts.append(
            {"provider": provider, "model": model, "key_fingerprint": key_fingerprint, "status": status, "error": error}
        )

    def answered(self, response: Response) -> None:
        """The assembled final message and its usage."""
        tool_calls = [
            {"name": p.name, "arguments": dumps(p.arguments)} for p in response.content if isinstance(p, ToolCall)
        ]
        self.upstream_model = response.model
        self.final = {
            "text": "".join(p.text for p in response.content if isinstance(p, Text)),
            "thinking": "".join(p.text for p in response.content if isinstance(p, Thinking)),
            "tool_calls": tool_calls,
            "stop_reason": response.stop_reason,
        }
        self.usage = response.usage.model_dump()

    def failed(self, status: int, message: str) -> None:
        self.status = status
        self.error = {"status": status, "message": message}

    def finish(self) -> None:
        if self.done is None:
            self.done = time.perf_counter()

    # ------------------------------------------------------------ the stored document

    def record(self, secrets: Iterable[str] = ()) -> dict[str, Any]:
        self.finish()
        captures = {
            "client_request": self.client_request,
            "upstream_request": self.upstream_request,
            "upstream_response": self.upstream_response,
            "client_response": self.client_response,
        }
        received = datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc)
        document = {
            "schema_version": SCHEMA_VERSION,
            "id": self.id,
            "received": received.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "route": self.route,
            "client_protocol": self.client_protocol,
            "group": self.group,
            "alias": self.alias,
            "route_rule": self.route_rule,
            "model": self.model,
            "stream": self.stream,
            "target": self.target,
            "upstream_model": self.upstream_model,
            "key_fingerprint": self.key_fingerprint,
            "access_key": self.access_key,
            "compat": self.compat,
            "passthrough": self.passthrough,
            "attempts": self.attempts,
            "status": self.status,
            "error": self.error,
            "usage": self.usage,
            "timings": {
                "upstream_first_byte_ms": _ms(self.clock, self.upstream_first_byte),
                "client_first_byte_ms": _ms(self.clock, self.client_first_byte),
                "duration_ms": _ms(self.clock, self.done),
            },
            "system": self.system,
            "tools": self.tools,
            "left_out": self.left_out,
            "shaping": self.shaping,
            "final": self.final,
            **{name: capture.text() for name, capture in captures.items()},
            "truncated": [name for name, capture in captures.items() if capture.truncated],
        }
        return redact(document, secrets)


def redact(document: dict[str, Any], secrets: Iterable[str]) -> dict[str, Any]:
    """The document with every secret replaced, wherever it appears (a key a
    client pasted into a prompt, an upstream echoing one in an error)."""
    import json

    from .keys import scrub

    text = dumps(document)
    scrubbed = scrub(text, list(secrets))
    return document if scrubbed is text else json.loads(scrubbed)


class Recording(Observer):
    """The research record as an observer of the request: each report fills
    its part of the `Exchange`; `finish` writes the record (through `write`,
    off the request path) with every secret in `secrets()` replaced."""

    def __init__(
        self,
        exchange: Exchange,
        secrets: Callable[[], Iterable[str]],
        write: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.exchange = exchange
        self.secrets = secrets
        self.write = write

    def identified(self, access_key: str) -> None:
        self.exchange.access_key = access_key

    def client_request(self, body: bytes) -> None:
        self.exchange.client_request.add(body)

    def routed(self, group: str, alias: str, request: Request, rule: str | None) -> None:
        exchange = self.exchange
        exchange.group, exchange.alias, exchange.model, exchange.stream = group, alias, request.model, request.stream
        exchange.route_rule = rule
        exchange.system, exchange.tools = request.system, [tool.name for tool in request.tools]

    def attempt_started(
        self, provider: str, model: str, protocol: str, key_fingerprint: str, compat: bool, passthrough: bool
    ) -> None:
        exchange = self.exchange
        exchange.target = {"provider": provider, "model": model, "protocol": protocol}
        exchange.key_fingerprint = key_fingerprint
        exchange.compat, exchange.passthrough = compat, passthrough

    def shaped(self, steps: Sequence[str]) -> None:
        self.exchange.shaping = list(steps)

    def upstream_request(self, body: bytes, left_out: Sequence[str]) -> None:
        exchange = self.exchange
        exchange.upstream_request = Capture(exchange.limit)  # the attempt that answers is the one kept
        exchange.upstream_request.add(body)
        exchange.left_out = list(left_out)

    def upstream_answered(self) -> None:
        self.exchange.mark_upstream_first_byte()

    def upstream_chunk(self, chunk: bytes) -> None:
        self.exchange.upstream_response.add(chunk)

    def attempt_failed(self, provider: str, model: str, key_fingerprint: str, error: ProxyError) -> None:
        self.exchange.attempt(provider, model, key_fingerprint, error.status, error.message)

    def client_chunk(self, piece: bytes) -> None:
        self.exchange.mark_client_first_byte()
        self.exchange.client_response.add(piece)

    def answered(self, response: Response, error: ProxyError | None, upstream_latency_ms: float) -> None:
        self.exchange.answered(response)
        if error is not None:
            self.exchange.error = {"status": error.status, "message": error.message}

    def refused(self, error: ProxyError, body: bytes) -> None:
        self.exchange.failed(error.status, error.message)
        self.exchange.client_response.add(body)

    async def finish(self, status: int) -> None:
        self.exchange.status = status
        await self.write(self.exchange.record(self.secrets()))
