"""The protocol-independent machinery of the fake upstreams.

`FakeUpstream` records every request, checks it with the protocol's `Dialect`
(headers, then body), and answers with the next scripted `Scenario`. The
dialects (openai.py, claude.py, gemini.py, ollama.py, responses.py) only know
their wire format; everything about scripting, recording, hanging, breaking
streams and cutting them into awkward chunks lives here so all five behave alike.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .scenarios import PARTIAL_TURN, Scenario, Turn

ErrorKind = Literal["invalid", "auth", "not_found", "rate_limit", "server", "overloaded", "unavailable"]
EndpointKind = Literal["generate", "count", "embed", "compact"]

# Chunk sizes the streams are cut into, cycling. Small and coprime-ish so the
# cuts drift through every position of the records: inside JSON strings,
# inside "data: ", between \r and \n, inside multibyte UTF-8 characters.
CHUNK_SIZES = (1, 7, 3, 13)


@dataclass
class Recorded:
    """One request as the fake received it, before any validation."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    json: Any  # None when the body was empty or not JSON


@dataclass(frozen=True)
class Endpoint:
    """A matched route: what is asked (`kind`), of which model, streamed or not."""

    name: str
    kind: EndpointKind
    model: str | None = None  # from the path (Gemini); else from the body
    stream: bool = False  # decided by the route itself (Gemini)


@dataclass(frozen=True)
class Rejection:
    """A request refused before any scenario runs (auth, headers, JSON)."""

    status: int
    kind: ErrorKind
    message: str
    violation: str


@dataclass(frozen=True)
class Context:
    """Everything a dialect needs to render an answer."""

    endpoint: Endpoint
    request: Recorded
    body: dict[str, Any]
    stream: bool

    @property
    def model(self) -> str:
        return self.endpoint.model or str(self.body.get("model", ""))


@dataclass
class StreamPlan:
    """A stream as records (already framed bytes), in three parts, so that
    faults can be injected generically: `head` opens the answer, `body` carries
    content, `tail` holds the finish marker(s) a broken stream never sends."""

    head: list[bytes] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    tail: list[bytes] = field(default_factory=list)


def dumps(value: Any) -> str:
    """Compact JSON with raw UTF-8, as the real APIs send it (escaping
    non-ASCII would hide multibyte characters from the chunking)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def awkward_chunks(data: bytes, sizes: Sequence[int] = CHUNK_SIZES) -> list[bytes]:
    """Cut `data` at fixed awkward positions.

    The cycling sizes make the cuts land everywhere; on top of that the first
    CRLF, the first multibyte character and the first "data: " are always cut
    through, so each stream is guaranteed to exercise those decoder paths.
    """
    cuts: set[int] = set()
    position, i = 0, 0
    while position < len(data):
        position += sizes[i % len(sizes)]
        i += 1
        cuts.add(position)
    crlf = data.find(b"\r\n")
    if crlf >= 0:
        cuts.add(crlf + 1)
    multibyte = next((k for k, byte in enumerate(data) if byte >= 0xC0), -1)
    if multibyte >= 0:
        cuts.add(multibyte + 1)
    prefix = data.find(b"data: ")
    if prefix >= 0:
        cuts.add(prefix + 3)
    ordered = sorted(c for c in cuts if 0 < c < len(data))
    bounds = [0, *ordered, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


class BrokenStream(Exception):
    """Raised inside a stream to make the server drop the connection."""


async def _trickle(chunks: list[bytes], abort: bool) -> AsyncIterator[bytes]:
    """Yield chunks one by one, giving the event loop a turn between them so
    each goes out in its own write."""
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)
    if abort:
        raise BrokenStream("the fake drops the connection on purpose")


def stream_response(records: list[bytes], media_type: str, *, abort: bool = False) -> StreamingResponse:
    """A real streaming response of the records, cut into awkward chunks."""
    chunks = awkward_chunks(b"".join(records))
    return StreamingResponse(_trickle(chunks, abort), media_type=media_type, headers={"cache-control": "no-cache"})


class Dialect(ABC):
    """One protocol's wire format: routes, checks, answers and errors."""

    name: str
    stream_media_type = "text/event-stream"
    overloaded_status = 503

    @abstractmethod
    def match(self, method: str, path: str, query: dict[str, str]) -> Endpoint | None:
        """The endpoint a request is for, matched on the path *suffix* so the
        fake serves under any base-path prefix; None for unknown routes."""

    @abstractmethod
    def check_headers(self, request: Recorded, key: str | None) -> Rejection | None:
        """Auth (when `key` is set) and other required headers."""

    @abstractmethod
    def validate(self, endpoint: Endpoint, body: Any, request: Recorded) -> list[str]:
        """Every reason the real API would reject this body (empty: valid)."""

    @abstractmethod
    def wants_stream(self, endpoint: Endpoint, body: dict[str, Any]) -> bool:
        """Whether the client asked for a stream, the protocol's own way."""

    @abstractmethod
    def error_body(self, status: int, kind: ErrorKind, message: str, **extra: Any) -> Any:
        """The protocol's error JSON."""

    @abstractmethod
    def whole(self, ctx: Context, turn: Turn) -> Any:
        """A complete non-streamed answer JSON."""

    @abstractmethod
    def stream_plan(self, ctx: Context, turn: Turn) -> StreamPlan:
        """The streamed answer as framed records."""

    @abstractmethod
    def stream_error(self, message: str) -> bytes:
        """The protocol's in-stream error record."""

    def count_tokens(self, ctx: Context) -> Any:
        """The answer to a token-count request (only reached when `match`
        returns a "count" endpoint, so dialects without one need not override)."""
        raise NotImplementedError(f"{self.name} has no token-count route")

    def embed(self, ctx: Context) -> Any:
        """The answer to an embedding request (likewise only for "embed" routes)."""
        raise NotImplementedError(f"{self.name} has no embedding route")

    def compact(self, ctx: Context) -> Any:
        """The answer to a compaction request (likewise only for "compact" routes)."""
        raise NotImplementedError(f"{self.name} has no compaction route")

    def error_headers(self, kind: ErrorKind, **extra: Any) -> dict[str, str]:
        """Headers for an error answer; rate limits carry retry-after."""
        if kind == "rate_limit":
            return {"retry-after": str(extra.get("retry_after", 7))}
        return {}

    def error(self, status: int, kind: ErrorKind, message: str, **extra: Any) -> Response:
        # ASCII-escaped, as the real APIs quote a client's lone surrogate back
        # without failing on it.
        body = json.dumps(self.error_body(status, kind, message, **extra), ensure_ascii=True)
        return Response(body, status_code=status, headers=self.error_headers(kind, **extra), media_type="application/json")


class FakeUpstream:
    """A strict fake of one upstream LLM API, as a Starlette app.

    Every request is recorded in `requests` first. Then, like the real API, a
    request with bad auth, bad headers or a body the real API would refuse is
    answered with the protocol's error (400/401) -- and, unlike the real API,
    the reason is also appended to `violations` so a test can assert that the
    proxy sent nothing a real upstream would reject. A valid request consumes
    the next scripted scenario (FIFO; "text" when none is queued).
    """

    def __init__(self, protocol: str, key: str | None = None) -> None:
        from . import DIALECTS  # the dialect modules import this one

        if protocol not in DIALECTS:
            raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(DIALECTS)}")
        self.protocol = protocol
        self.key = key
        self.dialect: Dialect = DIALECTS[protocol]()
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        # Streams that ended because the client (the proxy) hung up.
        self.hung_up = 0
        self._queue: deque[Scenario] = deque()
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    def __repr__(self) -> str:
        return f"FakeUpstream({self.protocol!r}, requests={len(self.requests)}, violations={len(self.violations)})"

    # -- the test-facing API -------------------------------------------------

    def script(self, *names: str, **kwargs: Any) -> "FakeUpstream":
        """Queue scenario(s) for the next valid requests, in order. Keyword
        arguments (e.g. retry_after=3, seconds=0.5) apply to each of them."""
        if not names:
            raise TypeError("script() needs at least one scenario name")
        self._queue.extend(Scenario.make(name, **kwargs) for name in names)
        return self

    @property
    def queued(self) -> list[str]:
        """Names of the scenarios still waiting, next first."""
        return [s.name for s in self._queue]

    @property
    def last(self) -> Recorded:
        if not self.requests:
            raise AssertionError(f"the {self.protocol} fake received no request")
        return self.requests[-1]

    def reset(self) -> None:
        self._queue.clear()
        self.requests.clear()
        self.violations.clear()
        self.hung_up = 0

    # -- serving ---------------------------------------------------------------

    def _next_scenario(self) -> Scenario:
        return self._queue.popleft() if self._queue else Scenario("text")

    def _reject(self, rejection: Rejection) -> Response:
        self.violations.append(rejection.violation)
        return self.dialect.error(rejection.status, rejection.kind, rejection.message)

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            parsed: Any = json.loads(raw) if raw else None
            bad_json = False
        except ValueError:
            parsed, bad_json = None, True
        recorded = Recorded(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=parsed,
        )
        self.requests.append(recorded)
        dialect = self.dialect

        endpoint = dialect.match(recorded.method, recorded.path, recorded.query)
        if endpoint is None:
            where = f"{recorded.method} {recorded.path}"
            return self._reject(Rejection(404, "not_found", f"Unknown route {where}", f"no such route: {where}"))
        rejection = dialect.check_headers(recorded, self.key)
        if rejection is not None:
            return self._reject(rejection)
        if bad_json or not isinstance(parsed, dict):
            what = "not valid JSON" if bad_json else f"a JSON {type(parsed).__name__}, not an object"
            return self._reject(Rejection(400, "invalid", f"Request body is {what}", f"{endpoint.name}: body is {what}"))
        problems = dialect.validate(endpoint, parsed, recorded)
        if problems:
            self.violations.extend(f"{endpoint.name}: {p}" for p in problems)
            return dialect.error(400, "invalid", "; ".join(problems))

        ctx = Context(endpoint, recorded, parsed, dialect.wants_stream(endpoint, parsed))
        return await self._answer(ctx, self._next_scenario(), request)

    async def _answer(self, ctx: Context, scenario: Scenario, request: Request) -> Response:
        dialect, options = self.dialect, scenario.options
        if scenario.name == "hang":
            if await _sleep_unless_disconnected(request, float(options["seconds"])):
                return Response(status_code=499)  # nobody is listening any more
        elif scenario.name == "rate_limit":
            retry = int(options["retry_after"])
            return dialect.error(429, "rate_limit", "Rate limit exceeded, please retry later.", retry_after=retry)
        elif scenario.name == "server_error":
            return dialect.error(500, "server", "The server had an error while processing your request.")
        elif scenario.name == "overloaded":
            return dialect.error(dialect.overloaded_status, "overloaded", "The service is overloaded, try again later.")
        elif scenario.name == "midstream_error" and not (ctx.stream and ctx.endpoint.kind == "generate"):
            return dialect.error(503, "unavailable", "The service is temporarily unavailable.")

        if ctx.endpoint.kind == "count":
            return self._json(dialect.count_tokens(ctx), scenario)
        if ctx.endpoint.kind == "embed":
            return self._json(dialect.embed(ctx), scenario)
        if ctx.endpoint.kind == "compact":
            return self._json(dialect.compact(ctx), scenario)
        if not ctx.stream:
            return self._json(dialect.whole(ctx, scenario.turn), scenario)

        if scenario.name == "midstream_error":
            plan = dialect.stream_plan(ctx, PARTIAL_TURN)
            records = plan.head + plan.body + [dialect.stream_error("The model is overloaded. Please try again later.")]
            return stream_response(records, dialect.stream_media_type)
        if scenario.name == "stall":
            plan = dialect.stream_plan(ctx, scenario.turn)
            return StreamingResponse(
                self._stall(plan.head + plan.body[:1], float(options["seconds"])), media_type=dialect.stream_media_type
            )
        if scenario.name == "truncated":
            plan = dialect.stream_plan(ctx, PARTIAL_TURN)
            return stream_response(plan.head + plan.body, dialect.stream_media_type, abort=bool(options["abort"]))
        plan = dialect.stream_plan(ctx, scenario.turn)
        return stream_response(plan.head + plan.body + plan.tail, dialect.stream_media_type)

    async def _stall(self, records: list[bytes], seconds: float) -> AsyncIterator[bytes]:
        """Send the first records, then go quiet; a client that hangs up
        cancels this generator, which is counted in `hung_up`."""
        try:
            for record in records:
                yield record
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.hung_up += 1
            raise

    @staticmethod
    def _json(value: Any, scenario: Scenario) -> Response:
        """A whole JSON answer; "truncated" cuts it in half, as if the
        connection dropped mid-body. A lone surrogate an answer echoes from
        the request (the Responses API echoes its tools) goes back as its
        JSON escape."""
        data = dumps(value).encode("utf-8", "backslashreplace")
        if scenario.name == "truncated":
            data = data[: len(data) // 2]
        return Response(data, media_type="application/json")


async def _sleep_unless_disconnected(request: Request, seconds: float) -> bool:
    """Sleep `seconds`, waking early if the client hangs up (so a hang does not
    outlive the test that scripted it). True when the client went away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(0.05, remaining))
        if await request.is_disconnected():
            return True
    return False
