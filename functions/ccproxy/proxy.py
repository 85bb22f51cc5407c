"""The proxy's logic: one client call in, the upstream called, one answer out.

Knows nothing of Starlette or Lambda: handlers hand in a `Call` and get an
`Answer` (a JSON body, raw bytes, or a stream of bytes) to write back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

import httpx
from pydantic import ValidationError

from . import routing, telemetry
from .compat import CompatStream, parse_response, rewrite_request
from .config import Config, Provider, Target
from .errors import ProxyError
from .exchange import Capture, Exchange
from .jsonutil import dumpb, loads
from .keys import KeyRing, fingerprint, scrub
from .pipeline import UNREADABLE, CheckedDecoder, Relay, convert_stream, relay_stream, upstream_decoded
from .protocols import upstream_codec
from .protocols.base import ClientCodec, ClientContext, RecordDecoder, Route, StreamDecoder, UpstreamCodec
from .protocols.common import estimate_tokens, request_text
from .rotation import Entry, Rotation
from .stores.state import MemoryStateStore, StateStore
from .unified import Accumulator, Document, Image, Request, StreamError, StreamEvent, ToolResult, Usage
from .upstream import MAX_ANSWER_BYTES, TooLarge, UnsupportedEncoding, UpstreamClient, inflater, timeout

log = logging.getLogger("ccproxy")

# Statuses after which the same request may succeed on another key or target:
# rate limits, bad credentials, timeouts and any server error.
RETRYABLE = frozenset({401, 403, 408, 429})


def retryable(error: ProxyError) -> bool:
    return error.status in RETRYABLE or error.status >= 500


@dataclass(slots=True)
class Call:
    codec: ClientCodec
    route: Route
    ctx: ClientContext
    group: str
    compat_prefix: bool
    body: Any
    headers: Mapping[str, str]
    exchange: Exchange | None = None  # filled when research logging is on
    # Where the call went, for the access log: the alias its model matched
    # and the target that answered (or was tried last).
    alias: str | None = None
    target: str | None = None


@dataclass(slots=True)
class Answer:
    status: int = 200
    json: Any = None
    raw: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # Work that must not delay the answer (usage counters, logs): run once
    # the last byte is out.
    after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@dataclass(slots=True)
class Attempt:
    """One upstream the call may go to."""

    target: Target
    provider_id: str
    provider: Provider
    codec: UpstreamCodec
    key: str | None
    entry: Entry | None = None


def use_compat(group_mode: str, compat_prefix: bool, provider: Provider) -> bool:
    """A group's native or compat wins; under auto, the
    compat prefix turns it on, else the provider's own tool_mode decides."""
    if group_mode != "auto":
        return group_mode == "compat"
    return compat_prefix or provider.tool_mode == "compat"


class Proxy:
    def __init__(
        self,
        config: Config,
        keys: KeyRing,
        http: UpstreamClient | None = None,
        state: StateStore | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.http = http or UpstreamClient()
        self.rotation = Rotation(keys, state or MemoryStateStore())
        self._turns: dict[str, int] = {}  # count_tokens and embeddings only

    async def handle(self, call: Call) -> Answer:
        operation = call.route.operation
        if operation == "generate":
            return await self.generate(call)
        if operation == "count_tokens":
            return await self.count_tokens(call)
        if operation == "embed":
            return await self.embed(call)
        names = routing.listed_models(routing.group_named(self.config, call.group))
        if operation == "list_models":
            return Answer(json=call.codec.encode_model_list(names))
        if operation == "get_model":
            model = call.ctx.model or ""
            if model not in names:
                raise ProxyError(
                    404, f"model {model!r} is not an alias of group {call.group!r}", code="model_not_found"
                )
            return Answer(json=call.codec.encode_model(model))
        return Answer(json=_decoded(lambda: call.codec.answer_locally(call.route.endpoint, call.body, names)))

    # ------------------------------------------------------------ generate

    async def generate(self, call: Call) -> Answer:
        """Decode, pick pool entries in turn, and try them until one answers
        (failover happens only before the client has seen a byte)."""
        client = call.codec
        request = _decoded(lambda: client.decode_request(call.body, call.ctx))
        resolution = routing.resolve(self.config, call.group, request.model)
        call.alias = resolution.alias
        exchange = call.exchange
        if exchange is not None:
            exchange.alias, exchange.model, exchange.stream = resolution.alias, request.model, request.stream
            exchange.group = resolution.group_name
            exchange.system, exchange.tools = request.system, [t.name for t in request.tools]
        targets = resolution.targets
        entries = self.rotation.entries(targets, [t.weight for t in targets])
        plan = await self.rotation.plan(f"{resolution.group_name}:{resolution.alias}", entries)
        deadline = time.monotonic() + self.config.deadline
        last_error: ProxyError | None = None
        for entry in plan[: 1 + self.config.retries]:
            if time.monotonic() >= deadline:
                break
            provider = self.config.providers[entry.target.provider]
            attempt = Attempt(
                entry.target, entry.target.provider, provider, upstream_codec(provider.protocol), entry.key, entry
            )
            compat = use_compat(resolution.group.tool_mode, call.compat_prefix, provider)
            passthrough = attempt.codec.protocol == client.protocol and call.route.passthrough and not compat
            call.target = str(entry.target)
            if exchange is not None:
                exchange.target = {
                    "provider": entry.target.provider,
                    "model": entry.target.model,
                    "protocol": provider.protocol,
                }
                exchange.key_fingerprint = fingerprint(entry.key) if entry.key else "keyless"
                exchange.compat, exchange.passthrough = compat, passthrough
            try:
                return await self._generate_once(call, request, attempt, passthrough, compat, deadline)
            except ProxyError as error:
                if exchange is not None:
                    exchange.attempt(
                        entry.target.provider,
                        entry.target.model,
                        exchange.key_fingerprint or "",
                        error.status,
                        error.message,
                    )
                telemetry.record(
                    entry.target.provider, entry.target.model, client.protocol, error.status, None, None, None
                )
                if not retryable(error):
                    raise
                await self.rotation.failed(entry, error, alternatives=len(plan) > 1)
                log.warning("%s failed with %s; trying the next in the pool", entry.target, error.status)
                last_error = error
        if last_error is None:
            raise ProxyError(504, "the request's deadline passed before any upstream answered", kind="timeout")
        raise last_error

    def _attempt(self, target: Target) -> Attempt:
        """The target on its provider's next key in turn (for count_tokens
        and embeddings, which never touch the shared counters)."""
        provider = self.config.providers[target.provider]
        keys = self.keys.provider_keys(target.provider)
        turn = self._turns.get(target.provider, 0)
        self._turns[target.provider] = turn + 1
        key = keys[turn % len(keys)]
        return Attempt(target, target.provider, provider, upstream_codec(provider.protocol), key)

    def _record_usage(
        self, call: Call, attempt: Attempt, latency_ms: float, usage: Callable[[], Usage]
    ) -> Callable[[], Awaitable[None]]:
        """Usage counters and metrics, once the answer is complete."""

        async def record() -> None:
            used = usage()
            telemetry.record(
                attempt.provider_id,
                attempt.target.model,
                call.codec.protocol,
                200,
                latency_ms,
                used.input_tokens,
                used.output_tokens,
            )
            if attempt.entry is None:
                return
            try:
                await self.rotation.used(attempt.entry, used.input_tokens, used.output_tokens)
            except Exception:  # counters must never fail a request that succeeded
                log.exception("could not record usage for %s", attempt.entry.name)

        return record

    async def _generate_once(
        self, call: Call, request: Request, attempt: Attempt, passthrough: bool, compat: bool, deadline: float
    ) -> Answer:
        upstream = attempt.codec
        model = attempt.target.model
        exchange = call.exchange
        left_out: list[str] = []
        if passthrough:
            body = upstream.passthrough_body(call.body, model)
            headers = _forwarded(upstream, call.headers)
        else:
            left_out = upstream.left_out(request)
            await self._prepare_media(request, attempt)
            body = _decoded(lambda: upstream.encode_request(rewrite_request(request) if compat else request, model))
            headers = upstream.upstream_headers(request)
        if exchange is not None:
            exchange.left_out = left_out
        url = attempt.provider.base_url + upstream.upstream_path(model, request.stream)
        sent = time.perf_counter()
        response = await self._send(attempt, url, body, headers, exchange, deadline)
        latency_ms = (time.perf_counter() - sent) * 1000
        if exchange is not None:
            exchange.mark_upstream_first_byte()
        if response.status_code >= 400:
            return await self._upstream_error(response, attempt, passthrough, deadline)
        # No protocol's answer has a place for what the upstream could not
        # take, so a header says it.
        answer_headers = {"x-ccproxy-left-out": "; ".join(left_out)} if left_out else {}

        if not request.stream:
            content = await _read(response, deadline, self.config.limits.answer_bytes)
            if exchange is not None:
                exchange.upstream_response.add(content)  # kept even when it cannot be read
            parsed = _parse_json(content)
            decoded = upstream_decoded(lambda: upstream.decode_response(parsed))
            if compat:
                decoded = parse_response(decoded, request.tools)
            if passthrough:
                upstream.rename_model(parsed, request.model)
                out = dumpb(parsed)
            else:
                out = dumpb(call.codec.encode_response(decoded, request))
            if exchange is not None:
                exchange.client_response.add(out)
                exchange.answered(decoded)
                exchange.mark_client_first_byte()
            return Answer(
                raw=out,
                headers=answer_headers,
                after=[self._record_usage(call, attempt, latency_ms, lambda: decoded.usage)],
            )

        _check_stream_type(response, upstream)
        accumulator = Accumulator()
        chunks = _iterate(response, deadline, self.config.limits.answer_bytes)
        if exchange is not None:
            chunks = _tee(chunks, exchange.upstream_response.add)
        if passthrough:
            secrets = self.keys.secrets()

            def error_event(error: ProxyError) -> bytes:
                error.message = scrub(error.message, secrets)  # its message reaches the client
                encoder = call.codec.stream_encoder(request)
                return encoder.feed(StreamError(error)) + encoder.close()

            relay = Relay(upstream, request.model, secrets, self.config.limits.record_bytes)
            stream = relay_stream(chunks, relay, self._stream_decoder(upstream), accumulator.add, error_event)
        else:

            def observe(event: StreamEvent) -> None:
                if isinstance(event, StreamError):  # its message reaches the client
                    event.error.message = scrub(event.error.message, self.keys.secrets())
                accumulator.add(event)

            stream = convert_stream(
                chunks,
                self._stream_decoder(upstream),
                call.codec.stream_encoder(request),
                observe,
                CompatStream(request.tools) if compat else None,
            )
        if exchange is not None:
            stream = _recorded(stream, exchange, accumulator)
        return Answer(
            stream=_closing(stream, response),
            media_type=call.codec.stream_media_type,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **answer_headers},
            after=[self._record_usage(call, attempt, latency_ms, lambda: accumulator.response.usage)],
        )

    def _stream_decoder(self, upstream: UpstreamCodec) -> StreamDecoder:
        decoder = upstream.stream_decoder()
        if isinstance(decoder, RecordDecoder):
            decoder.framing.max_record = self.config.limits.record_bytes
        return CheckedDecoder(decoder)

    async def _send(
        self,
        attempt: Attempt,
        url: str,
        body: Any,
        extra_headers: Mapping[str, str] | None,
        exchange: Exchange | None,
        deadline: float,
    ) -> httpx.Response:
        headers = {"content-type": "application/json", "accept-encoding": "identity", **(extra_headers or {})}
        headers.update(attempt.codec.auth_headers(attempt.key))
        headers.update(attempt.provider.headers)
        content = dumpb(body)
        if exchange is not None:
            exchange.upstream_request = Capture(exchange.limit)  # the attempt that answers is the one kept
            exchange.upstream_request.add(content)
        # Each attempt has what is left of the request's deadline, at most its
        # provider's own timeout.
        seconds = max(min(attempt.provider.timeout, deadline - time.monotonic()), 0.001)
        try:
            async with asyncio.timeout_at(deadline):
                return await self.http.send("POST", url, timeout(seconds), content, headers, attempt.provider)
        except (httpx.TimeoutException, TimeoutError):
            raise ProxyError(504, f"provider {attempt.provider_id!r} did not answer in time", kind="timeout") from None
        except httpx.HTTPError as exc:
            raise ProxyError(
                502, f"cannot reach provider {attempt.provider_id!r} ({type(exc).__name__})", kind="unavailable"
            ) from None

    async def _upstream_error(
        self, response: httpx.Response, attempt: Attempt, passthrough: bool, deadline: float
    ) -> Answer:
        content = await _read(response, deadline, self.config.limits.answer_bytes)
        error = _error_of(attempt.codec, response, content)
        error.status = response.status_code
        if retryable(error):
            raise error
        if passthrough:
            # Same protocol: the upstream's error is already in the client's shape.
            return Answer(
                status=response.status_code,
                raw=content,
                media_type=response.headers.get("content-type", "application/json"),
            )
        raise error

    async def _prepare_media(self, request: Request, attempt: Attempt) -> None:
        """Images and documents as the upstream can take them: fetched here
        where it cannot fetch a URL itself; a document type it cannot read at
        all is the client's to change (400, naming the upstream)."""
        upstream = attempt.codec
        for part in _media(request):
            if isinstance(part, Document):
                if part.text is not None:
                    continue
                if part.media_type not in upstream.document_types:
                    raise ProxyError(
                        400,
                        f"{request.model!r} routes to provider {attempt.provider_id!r}, whose protocol "
                        f"({upstream.protocol}) cannot read {part.media_type} documents; send the document's "
                        "text instead, or use a model that reads them",
                        param="messages",
                    )
                if part.data is None and not upstream.document_urls:
                    part.data, part.media_type, part.url = *await self._fetch(part.url or "", "document"), None
            elif part.data is None and part.url and upstream.needs_inline_images:
                part.data, part.media_type, part.url = *await self._fetch(part.url, "image"), None

    async def _fetch(self, url: str, what: str) -> tuple[str, str]:
        """The base64 content and media type at `url`, fetched under the
        config's guard (public addresses only, size and time caps)."""
        import base64

        from .fetch import FetchPolicy, fetch_media

        settings = self.config.fetch
        policy = FetchPolicy(max_bytes=settings.max_bytes, timeout=settings.timeout, allow=tuple(settings.allow))
        content, media_type = await fetch_media(self.http, url, policy, what)
        return base64.b64encode(content).decode(), media_type

    # ------------------------------------------------------------ count tokens and embeddings
    # One upstream call on the first target, never touching key health.

    async def count_tokens(self, call: Call) -> Answer:
        client = call.codec
        request = _decoded(lambda: client.decode_count_request(call.body, call.ctx))
        attempt = self._first_target(call, request.model)
        upstream, model = attempt.codec, attempt.target.model
        path = upstream.count_path(model)
        if path is None:
            return Answer(json=client.encode_count_response(estimate_tokens(request_text(request))))
        passthrough = upstream.protocol == client.protocol and call.route.passthrough
        if passthrough:
            body = upstream.passthrough_body(call.body, model)
            headers = _forwarded(upstream, call.headers)
        else:
            body = _decoded(lambda: upstream.encode_count_request(request, model))
            headers = upstream.upstream_headers(request)
        content = await self._call_once(attempt, path, body, headers)
        if passthrough:
            return Answer(raw=content)
        parsed = _parse_json(content)
        return Answer(
            json=client.encode_count_response(upstream_decoded(lambda: upstream.decode_count_response(parsed)))
        )

    async def embed(self, call: Call) -> Answer:
        client = call.codec
        request = _decoded(lambda: client.decode_embed_request(call.body, call.ctx))
        attempt = self._first_target(call, request.model)
        upstream, model = attempt.codec, attempt.target.model
        path = upstream.embed_path(model)
        if path is None:
            raise ProxyError(
                400,
                f"{request.model!r} routes to provider {attempt.provider_id!r}, whose protocol "
                f"({upstream.protocol}) has no embeddings",
            )
        passthrough = upstream.protocol == client.protocol and call.route.passthrough
        body = (
            upstream.passthrough_body(call.body, model)
            if passthrough
            else _decoded(lambda: upstream.encode_embed_request(request, model))
        )
        content = await self._call_once(attempt, path, body)
        if passthrough:
            return Answer(raw=content)
        parsed = _parse_json(content)
        embedded = upstream_decoded(lambda: upstream.decode_embed_response(parsed))
        return Answer(json=client.encode_embed_response(embedded, request))

    def _first_target(self, call: Call, model: str) -> Attempt:
        return self._attempt(routing.resolve(self.config, call.group, model).targets[0])

    async def _call_once(
        self, attempt: Attempt, path: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> bytes:
        deadline = time.monotonic() + self.config.deadline
        response = await self._send(attempt, attempt.provider.base_url + path, body, headers, None, deadline)
        content = await _read(response, deadline, self.config.limits.answer_bytes)
        if response.status_code >= 400:
            raise _error_of(attempt.codec, response, content)
        return content


T = TypeVar("T")


def _decoded(decode: Callable[[], T]) -> T:
    """The boundary where the client's body meets its codec, and where the
    request it became is written for the upstream. Whatever a codec trips
    over there came from the client, so it is the client's to fix: a 400 in
    its protocol's shape (an SDK retries a 5xx, sending the same bad request
    again)."""
    try:
        return decode()
    except ProxyError:
        raise
    except RecursionError:
        raise ProxyError(400, "invalid request: the body is nested too deeply", kind="invalid_request") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
        raise ProxyError(400, f"invalid request: {problems}", kind="invalid_request") from None
    except KeyError as exc:
        raise ProxyError(400, f"invalid request: the field {exc} is missing", kind="invalid_request") from None
    except (TypeError, AttributeError, IndexError, ValueError) as exc:
        raise ProxyError(
            400, f"invalid request: a field has the wrong type or value ({exc})", kind="invalid_request"
        ) from None


def _error_of(upstream: UpstreamCodec, response: httpx.Response, content: bytes) -> ProxyError:
    """The upstream's error answer as a ProxyError with its status, whatever
    the shape of its body."""
    try:
        return upstream.decode_error(response.status_code, content, response.headers)
    except UNREADABLE:
        return ProxyError(response.status_code, f"upstream error {response.status_code}")


def _forwarded(upstream: UpstreamCodec, headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that its protocol's upstream needs as they are."""
    return {name: headers[name] for name in upstream.forwarded_headers if name in headers}


# Stream media types a generic server may use besides its protocol's own.
_TOLERATED_STREAM_TYPES = frozenset({"", "text/plain", "application/octet-stream"})


def _check_stream_type(response: httpx.Response, upstream: UpstreamCodec) -> None:
    """A 200 that is not a stream (an HTML page from a gateway, a whole JSON
    answer) is refused before the client sees a byte, while its status can
    still say so."""
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != upstream.stream_media_type and media_type not in _TOLERATED_STREAM_TYPES:
        raise ProxyError(
            502, f"the upstream answered a stream request with {media_type}, not a stream", kind="unavailable"
        )


def _media(request: Request) -> list[Image | Document]:
    """Every image and document of the request, those in tool results too."""
    found: list[Image | Document] = []
    for message in request.messages:
        for part in message.content:
            if isinstance(part, (Image, Document)):
                found.append(part)
            elif isinstance(part, ToolResult):
                found.extend(p for p in part.content if isinstance(p, (Image, Document)))
    return found


async def _read(response: httpx.Response, deadline: float, cap: int = MAX_ANSWER_BYTES) -> bytes:
    """The whole body, decompressed under its cap, within the deadline."""
    pieces: list[bytes] = []
    try:
        body = inflater(response, cap)
        async with asyncio.timeout_at(deadline):
            async for chunk in response.aiter_raw():
                pieces.extend(body.feed(chunk))
    except (httpx.TimeoutException, TimeoutError):
        raise ProxyError(504, "the upstream stopped answering", kind="timeout") from None
    except httpx.HTTPError as exc:
        raise ProxyError(502, f"the upstream connection failed ({type(exc).__name__})") from None
    except (TooLarge, UnsupportedEncoding) as exc:
        raise ProxyError(502, f"the upstream's answer cannot be read: {exc}") from None
    finally:
        await response.aclose()
    return b"".join(pieces)


def _parse_json(content: bytes) -> Any:
    try:
        return loads(content)
    except ValueError:
        raise ProxyError(502, f"the upstream answered with something that is not JSON: {content[:200]!r}") from None


async def _iterate(response: httpx.Response, deadline: float, cap: int = MAX_ANSWER_BYTES) -> AsyncIterator[bytes]:
    """The body as it arrives, decompressed under the cap (an upstream asked
    for identity may compress all the same); it ends with the request's
    deadline too."""
    chunks = response.aiter_raw().__aiter__()
    try:
        body = inflater(response, cap)
        while True:
            async with asyncio.timeout_at(deadline):
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
            for out in body.feed(chunk):
                yield out
    except TimeoutError:
        raise ProxyError(504, "the request's deadline passed mid-stream", kind="timeout") from None
    except httpx.TimeoutException:
        raise ProxyError(504, "the upstream stopped sending mid-stream", kind="timeout") from None
    except httpx.HTTPError as exc:
        raise ProxyError(502, f"the upstream connection broke mid-stream ({type(exc).__name__})") from None
    except (TooLarge, UnsupportedEncoding) as exc:
        raise ProxyError(502, f"the upstream's stream cannot be read: {exc}") from None


async def _tee(chunks: AsyncIterator[bytes], keep: Callable[[bytes], None]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        keep(chunk)
        yield chunk


async def _recorded(stream: AsyncIterator[bytes], exchange: Exchange, accumulator: Accumulator) -> AsyncIterator[bytes]:
    """The client's stream, kept for the exchange record as it goes out."""
    async for piece in stream:
        exchange.mark_client_first_byte()
        exchange.client_response.add(piece)
        yield piece
    exchange.answered(accumulator.response)
    if accumulator.error is not None:
        exchange.error = {"status": accumulator.error.status, "message": accumulator.error.message}
    exchange.finish()


async def _closing(stream: AsyncIterator[bytes], response: httpx.Response) -> AsyncIterator[bytes]:
    """The stream, with the upstream response closed however it ends: at
    EOF, on error, or when a client that went away cancels it."""
    try:
        async for piece in stream:
            yield piece
    finally:
        await response.aclose()
