"""The proxy's logic: one client call in, the upstream called, one answer out.

Knows nothing of Starlette or Lambda: handlers hand in a `Call` and get an
`Answer` (a JSON body, raw bytes, or a stream of bytes) to write back.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

from pydantic import ValidationError

from . import routing
from .access import REVOCATION_VIEW_SECONDS, AccessControl
from .compat import CompatStream, parse_response, rewrite_request
from .config import Config, Limits, Provider, Shape, Target
from .conversations import Conversations
from .errors import ProxyError
from .jsonutil import dumpb, loads
from .keys import AccessKey, KeyRing, fingerprint, scrub
from .media import prepare_media
from .observe import NOBODY, Observer
from .pipeline import UNREADABLE, CheckedDecoder, LastPiece, Relay, convert_stream, relay_stream, upstream_decoded
from .protocols import upstream_codec
from .protocols.base import ClientCodec, ClientContext, RecordDecoder, Route, StreamDecoder, UpstreamCodec
from .protocols.common import custom_tools_as_functions, estimate_tokens, request_text
from .rotation import Entry, Rotation
from .shaping import merge_body, shape_request
from .stores.state import MemoryStateStore, StateStore
from .unified import Accumulator, Message, Request, Response, StreamError, StreamEvent, Text, ToolChoice, Usage
from .upstream import UpstreamClient, UpstreamReply

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
    config: Config  # what this call is served by, whatever reload happens meanwhile
    observer: Observer = NOBODY  # the research record and the metrics, where they listen
    # Where the call went, for the access log: the alias its model matched
    # and the target that answered (or was tried last).
    alias: str | None = None
    target: str | None = None
    # The access key the client presented (None where none is needed).
    access_key: AccessKey | None = None
    _request_id: str | None = None

    def request_id(self) -> str:
        """This call's id, the same on every attempt: made when a provider
        header first asks for it (`{request_id}`), not for every call."""
        if self._request_id is None:
            self._request_id = uuid.uuid4().hex
        return self._request_id


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
    config: Config
    entry: Entry | None = None
    # What the group changes in the request for this upstream.
    shape: Shape | None = None
    # The client request's id, for the `{request_id}` of provider headers.
    request_id: Callable[[], str] = lambda: ""

    def shaped(self, request: Request) -> tuple[Request, list[str]]:
        """The request as the group's shaping makes it for this upstream, and
        the steps that changed it."""
        if self.shape is None:
            return request, []
        return shape_request(request, self.shape, self.provider_id, self.target.model)


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
        *,
        revocation_view_seconds: float = REVOCATION_VIEW_SECONDS,
    ) -> None:
        self.keys = keys
        self.http = http or UpstreamClient()
        self.rotation = Rotation(keys, state or MemoryStateStore())
        self.access = AccessControl(self.rotation.state, revocation_view_seconds=revocation_view_seconds)
        self.conversations = Conversations(lambda: self.rotation.state, config.conversations.keep_days * 86400)
        self._turns: dict[str, int] = {}  # count_tokens and embeddings only

    def follow(self, config: Config) -> None:
        """A new config serves: what the proxy keeps beyond one call follows it."""
        self.conversations.keep_seconds = config.conversations.keep_days * 86400

    async def handle(self, call: Call) -> Answer:
        operation = call.route.operation
        if operation == "generate":
            return await self.generate(call)
        if operation == "count_tokens":
            return await self.count_tokens(call)
        if operation == "embed":
            return await self.embed(call)
        if operation in ("get_kept", "delete_kept", "kept_input", "cancel_kept"):
            return await self.kept(call)
        if operation == "compact":
            return await self.compact(call)
        names = routing.listed_models(routing.group_named(call.config, call.group))
        if call.access_key is not None:  # models outside the key's scope are not shown
            names = [name for name in names if call.access_key.allows_model(name)]
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
        client, config = call.codec, call.config
        request = _decoded(lambda: client.decode_request(call.body, call.ctx))
        AccessControl.check_model(call.access_key, request.model)
        added = await self.conversations.resume(request)
        resolution = routing.resolve(config, call.group, request.model, request)
        call.alias = resolution.alias
        observer = call.observer
        observer.routed(resolution.group_name, resolution.alias, request, resolution.rule)
        targets = resolution.targets
        entries = self.rotation.entries(targets, [t.weight for t in targets])
        plan = await self.rotation.plan(f"{resolution.group_name}:{resolution.alias}", entries)
        deadline = time.monotonic() + config.deadline
        last_error: ProxyError | None = None
        for entry in plan[: 1 + config.retries]:
            if time.monotonic() >= deadline:
                break
            provider = config.providers[entry.target.provider]
            attempt = Attempt(
                entry.target,
                entry.target.provider,
                provider,
                upstream_codec(provider.protocol),
                entry.key,
                config,
                entry,
                resolution.shape,
                call.request_id,
            )
            compat = use_compat(resolution.group.tool_mode, call.compat_prefix, provider)
            # A conversation the proxy keeps is rebuilt and recorded here, and
            # a shaped request is rebuilt too, so neither goes through untouched.
            rebuilt = request.store or request.continues or attempt.shape is not None
            passthrough = (
                attempt.codec.protocol == client.protocol and call.route.passthrough and not compat and not rebuilt
            )
            call.target = str(entry.target)
            key_fingerprint = fingerprint(entry.key) if entry.key else "keyless"
            observer.attempt_started(
                entry.target.provider, entry.target.model, provider.protocol, key_fingerprint, compat, passthrough
            )
            try:
                return await self._generate_once(call, request, added, attempt, passthrough, compat, deadline)
            except ProxyError as error:
                observer.attempt_failed(entry.target.provider, entry.target.model, key_fingerprint, error)
                if not retryable(error):
                    raise
                await self.rotation.failed(entry, error, alternatives=len(plan) > 1)
                log.warning("%s failed with %s; trying the next in the pool", entry.target, error.status)
                last_error = error
        if last_error is None:
            raise ProxyError(504, "the request's deadline passed before any upstream answered", kind="timeout")
        raise last_error

    def _first_attempt(self, call: Call, resolution: routing.Resolution) -> Attempt:
        """The resolution's first target on its provider's next key in turn
        (for compaction, count_tokens and embeddings, which never touch the
        shared counters)."""
        target, config = resolution.targets[0], call.config
        provider = config.providers[target.provider]
        keys = self.keys.provider_keys(target.provider)
        turn = self._turns.get(target.provider, 0)
        self._turns[target.provider] = turn + 1
        key = keys[turn % len(keys)]
        codec = upstream_codec(provider.protocol)
        return Attempt(target, target.provider, provider, codec, key, config, None, resolution.shape, call.request_id)

    def _count_usage(
        self, call: Call, model: str, attempt: Attempt, usage: Callable[[], Usage]
    ) -> Callable[[], Awaitable[None]]:
        """The provider key's usage counters and the access key's, once the
        answer is complete."""

        async def count() -> None:
            used = usage()
            if attempt.entry is not None:
                try:
                    await self.rotation.used(attempt.entry, used.input_tokens, used.output_tokens)
                except Exception:  # counters must never fail a request that succeeded
                    log.exception("could not record usage for %s", attempt.entry.name)
            if call.access_key is not None:
                try:
                    await self.access.used(call.access_key, model, used.input_tokens or 0, used.output_tokens or 0)
                except Exception:
                    log.exception("could not record usage for access key %s", call.access_key.name)

        return count

    async def _generate_once(
        self,
        call: Call,
        request: Request,
        added: int,
        attempt: Attempt,
        passthrough: bool,
        compat: bool,
        deadline: float,
    ) -> Answer:
        upstream, model, observer = attempt.codec, attempt.target.model, call.observer
        left_out: list[str] = []
        if passthrough:
            body = upstream.passthrough_body(call.body, model)
            headers = _forwarded(upstream, call.headers)
        else:
            outgoing, steps = attempt.shaped(request)
            observer.shaped(steps)
            left_out = upstream.left_out(outgoing)
            await prepare_media(outgoing, upstream, attempt.provider_id, call.config.fetch, self.http)
            body = self._encoded(outgoing, attempt, compat)
            headers = upstream.upstream_headers(outgoing)
        content = dumpb(body)
        observer.upstream_request(content, left_out)
        url = attempt.provider.base_url + upstream.upstream_path(model, request.stream)
        sent = time.perf_counter()
        reply = await self._send(attempt, url, content, headers, deadline)
        latency_ms = (time.perf_counter() - sent) * 1000
        observer.upstream_answered()
        if reply.status >= 400:
            return await self._upstream_error(reply, attempt, passthrough)
        # No protocol's answer has a place for what the upstream could not
        # take, so a header says it.
        answer_headers = {"x-ccproxy-left-out": _header_text("; ".join(left_out))} if left_out else {}
        if request.stream:
            return self._stream_answer(
                call, request, added, attempt, reply, passthrough, compat, latency_ms, answer_headers
            )
        return await self._whole_answer(
            call, request, added, attempt, reply, passthrough, compat, latency_ms, answer_headers
        )

    async def _whole_answer(
        self,
        call: Call,
        request: Request,
        added: int,
        attempt: Attempt,
        reply: UpstreamReply,
        passthrough: bool,
        compat: bool,
        latency_ms: float,
        headers: dict[str, str],
    ) -> Answer:
        upstream, observer = attempt.codec, call.observer
        content = await reply.read(call.config.limits.answer_bytes)
        observer.upstream_chunk(content)  # kept even when it cannot be read
        parsed = _parse_json(content)
        decoded = upstream_decoded(lambda: upstream.decode_response(parsed))
        if compat:
            decoded = parse_response(decoded, request.tools)
        if passthrough:
            upstream.rename_model(parsed, request.model)
            answer = parsed
        else:
            answer = call.codec.encode_response(decoded, request)
        # Kept before the client has its answer: its next request may continue it at once.
        await self.conversations.keep(request, added, decoded, answer)
        out = dumpb(answer)
        observer.client_chunk(out)
        observer.answered(decoded, None, latency_ms)
        return Answer(
            raw=out, headers=headers, after=[self._count_usage(call, request.model, attempt, lambda: decoded.usage)]
        )

    def _stream_answer(
        self,
        call: Call,
        request: Request,
        added: int,
        attempt: Attempt,
        reply: UpstreamReply,
        passthrough: bool,
        compat: bool,
        latency_ms: float,
        headers: dict[str, str],
    ) -> Answer:
        upstream, observer = attempt.codec, call.observer
        _check_stream_type(reply, upstream)
        accumulator = Accumulator()
        limits = call.config.limits
        chunks = reply.chunks(limits.answer_bytes, observer.upstream_chunk)
        if passthrough:
            secrets = self.keys.secrets()

            def error_event(error: ProxyError) -> bytes:
                error.message = scrub(error.message, secrets)  # its message reaches the client
                encoder = call.codec.stream_encoder(request)
                return encoder.feed(StreamError(error)) + encoder.close()

            relay = Relay(upstream, request.model, secrets, limits.record_bytes)
            stream = relay_stream(chunks, relay, self._stream_decoder(upstream, limits), accumulator.add, error_event)
        else:

            def observe(event: StreamEvent) -> None:
                if isinstance(event, StreamError):  # its message reaches the client
                    event.error.message = scrub(event.error.message, self.keys.secrets())
                accumulator.add(event)

            stream = convert_stream(
                chunks,
                self._stream_decoder(upstream, limits),
                call.codec.stream_encoder(request),
                observe,
                CompatStream(request.tools) if compat else None,
            )

        async def keep() -> None:
            response = accumulator.response
            await self.conversations.keep(request, added, response, call.codec.encode_response(response, request))

        return Answer(
            stream=_delivered(stream, reply, observer, accumulator, latency_ms, keep if request.store else None),
            media_type=call.codec.stream_media_type,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers},
            after=[self._count_usage(call, request.model, attempt, lambda: accumulator.response.usage)],
        )

    @staticmethod
    def _encoded(request: Request, attempt: Attempt, compat: bool) -> dict[str, Any]:
        """The request in the upstream's protocol: its custom tools as
        functions where it has none, its tools described in the prompt in
        compat mode, and the group's extra body fields merged in."""
        upstream, model = attempt.codec, attempt.target.model
        shaped = request if upstream.custom_tools else custom_tools_as_functions(request)
        body = _decoded(lambda: upstream.encode_request(rewrite_request(shaped) if compat else shaped, model))
        if attempt.shape is not None and attempt.shape.extra_body:
            merge_body(body, attempt.shape.extra_body)
        return body

    def _stream_decoder(self, upstream: UpstreamCodec, limits: Limits) -> StreamDecoder:
        decoder = upstream.stream_decoder()
        if isinstance(decoder, RecordDecoder):
            decoder.framing.max_record = limits.record_bytes
        return CheckedDecoder(decoder)

    async def _send(
        self,
        attempt: Attempt,
        url: str,
        content: bytes,
        extra_headers: Mapping[str, str] | None,
        deadline: float,
    ) -> UpstreamReply:
        headers = {"content-type": "application/json", "accept-encoding": "identity", **(extra_headers or {})}
        headers.update(attempt.codec.auth_headers(attempt.key))
        if attempt.provider.headers:
            headers.update(_filled(attempt.provider.headers, attempt.request_id))
        # Each attempt has what is left of the request's deadline, at most its
        # provider's own timeout.
        seconds = max(min(attempt.provider.timeout, deadline - time.monotonic()), 0.001)
        return await self.http.post(url, content, headers, attempt.provider, seconds, deadline, attempt.provider_id)

    async def _upstream_error(self, reply: UpstreamReply, attempt: Attempt, passthrough: bool) -> Answer:
        content = await reply.read(attempt.config.limits.answer_bytes)
        error = _error_of(attempt.codec, reply, content)
        if retryable(error):
            raise error
        if passthrough:
            # Same protocol: the upstream's error is already in the client's shape.
            return Answer(
                status=reply.status,
                raw=content,
                media_type=reply.headers.get("content-type", "application/json"),
            )
        raise error

    # ------------------------------------------------------------ kept conversations

    async def kept(self, call: Call) -> Answer:
        """A kept answer as the client received it, forgotten, or what its
        request added to the conversation; a kept answer cannot be cancelled
        (it has finished)."""
        client, answer_id = call.codec, call.ctx.resource or ""
        if call.route.operation == "delete_kept":
            if not await self.conversations.delete(answer_id):
                raise client.unknown_kept(answer_id)
            return Answer(json=client.encode_deleted(answer_id))
        kept = await self.conversations.get(answer_id)
        if kept is None:
            raise client.unknown_kept(answer_id)
        if call.route.operation == "kept_input":
            return Answer(json=client.encode_kept_input(kept.added, answer_id))
        if call.route.operation == "cancel_kept":
            raise client.cancel_refusal(answer_id)
        return Answer(json=kept.answer)

    # ------------------------------------------------------------ compaction
    # One upstream call on the first target, never touching key health.

    async def compact(self, call: Call) -> Answer:
        """A conversation made short for its continuation: by the upstream's
        own compaction where it speaks the client's protocol, else by a
        summary the target model writes, which the client's codec carries."""
        client = call.codec
        request = _decoded(lambda: client.decode_compact_request(call.body, call.ctx))
        AccessControl.check_model(call.access_key, request.model)
        await self.conversations.resume(request)
        # The rules see the whole conversation, the kept one included: a long
        # one is where a rule on input tokens matters most.
        resolution = routing.resolve(call.config, call.group, request.model, request)
        attempt = self._first_attempt(call, resolution)
        call.alias, call.target = resolution.alias, str(attempt.target)
        upstream, model = attempt.codec, attempt.target.model
        path = upstream.compact_path(model)
        if path is not None and upstream.protocol == client.protocol and call.route.passthrough:
            if request.continues:
                # The upstream keeps nothing: the conversation the proxy kept goes whole.
                body = _decoded(lambda: upstream.encode_compact_request(request, model))
                headers = upstream.upstream_headers(request)
            else:
                body, headers = upstream.passthrough_body(call.body, model), _forwarded(upstream, call.headers)
            return Answer(raw=await self._call_once(attempt, path, body, headers))
        compat = use_compat(resolution.group.tool_mode, call.compat_prefix, attempt.provider)
        asked = _summary_request(request)
        left_out = upstream.left_out(asked)
        summary = await self._summary(asked, attempt, compat)
        headers = {"x-ccproxy-left-out": "; ".join(left_out)} if left_out else {}
        return Answer(json=client.encode_compacted(summary, request), headers=headers)

    async def _summary(self, asked: Request, attempt: Attempt, compat: bool) -> Response:
        """The target model's answer to `asked`, whole, encoded as a generate
        request is."""
        upstream, model = attempt.codec, attempt.target.model
        asked, _ = attempt.shaped(asked)
        await prepare_media(asked, upstream, attempt.provider_id, attempt.config.fetch, self.http)
        body = self._encoded(asked, attempt, compat)
        path = upstream.upstream_path(model, False)
        content = await self._call_once(attempt, path, body, upstream.upstream_headers(asked))
        parsed = _parse_json(content)
        summary = upstream_decoded(lambda: upstream.decode_response(parsed))
        return parse_response(summary, asked.tools) if compat else summary

    # ------------------------------------------------------------ count tokens and embeddings
    # One upstream call on the first target, never touching key health.

    async def count_tokens(self, call: Call) -> Answer:
        client = call.codec
        request = _decoded(lambda: client.decode_count_request(call.body, call.ctx))
        AccessControl.check_model(call.access_key, request.model)
        attempt = self._first_target(call, request.model, request)
        upstream, model = attempt.codec, attempt.target.model
        request, _ = attempt.shaped(request)  # counted as the upstream will receive it
        path = upstream.count_path(model)
        if path is None:
            return Answer(json=client.encode_count_response(estimate_tokens(request_text(request))))
        passthrough = upstream.protocol == client.protocol and call.route.passthrough and attempt.shape is None
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
        AccessControl.check_model(call.access_key, request.model)
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

    def _first_target(self, call: Call, model: str, request: Request | None = None) -> Attempt:
        return self._first_attempt(call, routing.resolve(call.config, call.group, model, request))

    async def _call_once(
        self, attempt: Attempt, path: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> bytes:
        config = attempt.config
        deadline = time.monotonic() + config.deadline
        reply = await self._send(attempt, attempt.provider.base_url + path, dumpb(body), headers, deadline)
        content = await reply.read(config.limits.answer_bytes)
        if reply.status >= 400:
            raise _error_of(attempt.codec, reply, content)
        return content


# What the model is asked where the upstream has no compaction of its own.
SUMMARY_INSTRUCTION = (
    "Summarize the conversation so far for its continuation: the goals, the decisions taken and why, "
    "the files and commands touched, the state of the work, and what remains to be done. "
    "Write it so that the work can be continued from this summary alone, without the conversation. "
    "Answer with the summary only; call no tools."
)


def _summary_request(request: Request) -> Request:
    """The conversation with a request for its summary as a last user turn
    of its own (upstreams that take no two user turns in a row merge it with
    the one before), asked whole. The tools stay (an upstream may refuse
    calls in the history of a request without them) but none may be called;
    server tools go."""
    asked = request.model_copy(deep=True)
    asked.stream, asked.store, asked.continues, asked.answer_id = False, False, None, None
    asked.server_tools, asked.response_format = [], None
    asked.tool_choice = ToolChoice(mode="none") if asked.tools else None
    asked.messages.append(Message(role="user", content=[Text(text=SUMMARY_INSTRUCTION)]))
    return asked


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


def _error_of(upstream: UpstreamCodec, reply: UpstreamReply, content: bytes) -> ProxyError:
    """The upstream's error answer as a ProxyError with its status, whatever
    the shape of its body."""
    try:
        return upstream.decode_error(reply.status, content, reply.headers)
    except UNREADABLE:
        return ProxyError(reply.status, f"upstream error {reply.status}")


def _filled(headers: Mapping[str, str], request_id: Callable[[], str]) -> dict[str, str]:
    """A provider's extra headers with their placeholders filled: `{uuid}` a
    new one each time, `{request_id}` the client request's (the same on
    every attempt)."""
    filled = {}
    for name, value in headers.items():
        if "{request_id}" in value:
            value = value.replace("{request_id}", request_id())
        if "{uuid}" in value:
            value = value.replace("{uuid}", str(uuid.uuid4()))
        filled[name] = value
    return filled


def _forwarded(upstream: UpstreamCodec, headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that its protocol's upstream needs as they are."""
    return {name: headers[name] for name in upstream.forwarded_headers if name in headers}


# Stream media types a generic server may use besides its protocol's own.
_TOLERATED_STREAM_TYPES = frozenset({"", "text/plain", "application/octet-stream"})


def _check_stream_type(reply: UpstreamReply, upstream: UpstreamCodec) -> None:
    """A 200 that is not a stream (an HTML page from a gateway, a whole JSON
    answer) is refused before the client sees a byte, while its status can
    still say so."""
    media_type = reply.media_type
    if media_type != upstream.stream_media_type and media_type not in _TOLERATED_STREAM_TYPES:
        raise ProxyError(
            502, f"the upstream answered a stream request with {media_type}, not a stream", kind="unavailable"
        )


# A header value made of the client's words (a tool type it named): bounded,
# and ASCII, which every HTTP stack carries.
MAX_HEADER_TEXT = 1024


def _header_text(text: str) -> str:
    safe = "".join(c if " " <= c <= "~" else "?" for c in text[:MAX_HEADER_TEXT])
    return safe + ("..." if len(text) > MAX_HEADER_TEXT else "")


def _parse_json(content: bytes) -> Any:
    try:
        return loads(content)
    except ValueError:
        raise ProxyError(502, f"the upstream answered with something that is not JSON: {content[:200]!r}") from None


async def _delivered(
    stream: AsyncIterator[bytes],
    reply: UpstreamReply,
    observer: Observer,
    accumulator: Accumulator,
    latency_ms: float,
    before_end: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """The client's stream as it goes out, shown to the observer piece by
    piece and, once it ends, as the assembled answer; `before_end` runs
    before the closing piece goes out (a kept conversation is kept before
    the client can continue it). The upstream reply is closed however the
    stream ends: at EOF, on error, or when a client that went away cancels
    it."""
    try:
        async for piece in stream:
            if before_end is not None and type(piece) is LastPiece and accumulator.error is None:
                await before_end()
            observer.client_chunk(piece)
            yield piece
        observer.answered(accumulator.response, accumulator.error, latency_ms)
    finally:
        await reply.aclose()
