"""What a protocol package provides: a codec in two halves.

The *client* half (`ClientCodec`) serves clients that speak the protocol: its
routes, the client's request decoded into the unified form, and unified
answers (whole, streamed, or errors) encoded back. The *upstream* half
(`UpstreamCodec`) talks to servers of the protocol: a unified request encoded
for the upstream, its answer (whole or streamed) and its errors decoded into
the unified form. What differs between protocols is declared on the halves
as capabilities, which the core reads; it never names a protocol.

Codecs are pure: no I/O, no framework, no AWS. The pipeline does the I/O.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

from ..errors import ProxyError
from ..unified import (
    EmbedRequest,
    EmbedResponse,
    Message,
    Request,
    Response,
    StreamError,
    StreamEvent,
)

Operation = Literal[
    "generate",  # chat / messages / generateContent: the main route
    "count_tokens",
    "embed",
    "list_models",
    "get_model",
    "local",  # answered by the codec alone (Ollama's /api/version, /api/show)
    "get_kept",  # a kept answer, by the id in the path (the Responses API's GET /v1/responses/{id})
    "delete_kept",  # forget a kept answer
    "kept_input",  # what the request that made a kept answer added to its conversation
    "cancel_kept",  # stop a kept answer (the proxy runs none in the background: refused)
    "compact",  # a conversation made short for its continuation (the Responses API's /v1/responses/compact)
]


_PERMANENT = frozenset({400, 401, 403, 404, 413, 422})


@dataclass(frozen=True, slots=True)
class Route:
    """A client-facing route. `path` is a regular expression matched against
    the whole path after any group/compat prefix; its named groups (`model`)
    are handed to the codec. `stream` fixes streaming for routes that imply it
    (Gemini's :streamGenerateContent). `endpoint` names the route to the
    codec where one codec serves several (Ollama chat vs generate). `header`
    is a header the request must carry for the route to apply.
    `passthrough` is False for routes whose body an upstream of the same
    protocol cannot take as it is (it must be converted even then).
    `body` is False for a POST route that takes no body (the SDKs send a
    cancel with none)."""

    method: str
    path: str
    operation: Operation
    stream: bool | None = None
    endpoint: str = ""
    header: str | None = None
    passthrough: bool = True
    body: bool = True

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.path + r"\Z")


@dataclass(slots=True)
class ClientContext:
    """What the route tells the codec beyond the body."""

    model: str | None = None  # from the path (Gemini)
    stream: bool | None = None  # from the path (Gemini)
    endpoint: str = ""  # from the route (Ollama generate)
    resource: str | None = None  # an id from the path (a kept answer's)
    headers: Mapping[str, str] = field(default_factory=dict)  # the client's (Anthropic's betas)


class StreamEncoder(ABC):
    """Turns unified events into the client protocol's stream bytes.

    `feed` is called once per event and returns what must be written at once
    (possibly b""). `close` is called once when the upstream stream has ended
    (after Finish, or after a StreamError) and returns the trailing bytes.
    A StreamError event must be encoded as the protocol's in-stream error;
    nothing but `close` follows it.
    """

    @abstractmethod
    def feed(self, event: StreamEvent) -> bytes: ...

    @abstractmethod
    def close(self) -> bytes: ...


class StreamDecoder(ABC):
    """Turns the upstream's raw stream bytes, split anywhere, into unified events.

    `close` is called at EOF; a stream that ended before its protocol's
    finish marker yields a StreamError (status 502) there.
    An in-stream error from the upstream becomes a StreamError event.
    """

    @abstractmethod
    def feed(self, chunk: bytes) -> list[StreamEvent]: ...

    @abstractmethod
    def close(self) -> list[StreamEvent]: ...


class RecordDecoder(StreamDecoder):
    """A StreamDecoder over a framing (SSE events or NDJSON lines): each
    whole record goes to `_record`; at EOF, a stream that had not reached its
    protocol's end is reported as a 502 StreamError."""

    def __init__(self, framing: Any) -> None:
        self.framing = framing

    @abstractmethod
    def _record(self, record: Any, events: list[StreamEvent]) -> None: ...

    @abstractmethod
    def _ended(self) -> bool:
        """Whether the stream reached its finish (or an error) already."""

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for record in self.framing.feed(chunk):
            self._record(record, events)
        return events

    def close(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        try:
            for record in self.framing.close():
                self._record(record, events)
        except ProxyError:
            pass  # a record cut off by EOF: reported below as an early end
        if not self._ended():
            events.append(StreamError(ProxyError(502, "the upstream stream ended before it finished")))
        return events


class ClientCodec(ABC):
    """The protocol as clients speak it."""

    protocol: ClassVar[str]
    routes: ClassVar[tuple[Route, ...]]
    stream_media_type: ClassVar[str] = "text/event-stream"
    # Where this protocol's paths begin ("/api": itself and what is below it):
    # a path there that no route has is answered 404 in this protocol's shape
    # (the longest root wins).
    path_roots: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def decode_request(self, body: Any, ctx: ClientContext) -> Request:
        """The client's request body as a unified Request. Raises ProxyError
        (400, naming the field and what to fix) on malformed input."""

    @abstractmethod
    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        """A whole answer in the client's protocol. `request.model` is the
        model name the client asked for, which the answer reports."""

    @abstractmethod
    def stream_encoder(self, request: Request) -> StreamEncoder: ...

    @abstractmethod
    def encode_error(self, error: ProxyError) -> dict[str, Any]:
        """The error body; the HTTP status is `error.status`."""

    def error_headers(self, error: ProxyError) -> dict[str, str]:
        headers = {}
        if error.retry_after is not None:
            headers["retry-after"] = str(max(1, round(error.retry_after)))
        if error.status in _PERMANENT or error.code == "provider_key_missing":
            # The OpenAI and Anthropic SDKs retry 5xx and some 4xx by default;
            # this tells them a retry cannot help.
            headers["x-should-retry"] = "false"
        return headers

    # ------------------------------------------------------------ models

    @abstractmethod
    def encode_model_list(self, names: list[str]) -> dict[str, Any]: ...

    def encode_model(self, name: str) -> dict[str, Any]:
        raise ProxyError(404, f"{self.protocol} has no single-model route")

    def answer_locally(self, endpoint: str, body: Any, names: list[str]) -> dict[str, Any]:
        raise ProxyError(404, f"no such route: {endpoint}")

    # ------------------------------------------------------------ count tokens and embeddings

    def decode_count_request(self, body: Any, ctx: ClientContext) -> Request:
        raise ProxyError(404, f"{self.protocol} has no count-tokens route")

    def encode_count_response(self, tokens: int) -> dict[str, Any]:
        raise ProxyError(404, f"{self.protocol} has no count-tokens route")

    def decode_embed_request(self, body: Any, ctx: ClientContext) -> EmbedRequest:
        raise ProxyError(404, f"{self.protocol} has no embeddings route")

    def encode_embed_response(self, response: EmbedResponse, request: EmbedRequest) -> dict[str, Any]:
        raise ProxyError(404, f"{self.protocol} has no embeddings route")

    # ------------------------------------------------------------ kept conversations

    def unknown_kept(self, answer_id: str) -> ProxyError:
        """The error for an id no kept answer has."""
        return ProxyError(404, f"no kept answer has the id {answer_id!r}", kind="not_found")

    def encode_deleted(self, answer_id: str) -> dict[str, Any]:
        raise ProxyError(404, f"{self.protocol} keeps no answers")

    def encode_kept_input(self, messages: list[Message], answer_id: str) -> dict[str, Any]:
        raise ProxyError(404, f"{self.protocol} keeps no answers")

    def cancel_refusal(self, answer_id: str) -> ProxyError:
        """The error for cancelling a kept answer: the proxy runs no answer
        in the background, so every kept one has finished."""
        return ProxyError(400, f"the answer {answer_id!r} has finished; there is nothing to cancel")

    # ------------------------------------------------------------ compaction

    def decode_compact_request(self, body: Any, ctx: ClientContext) -> Request:
        """A request to make a conversation short, as a unified Request
        whose messages are the conversation."""
        raise ProxyError(404, f"{self.protocol} has no compaction route")

    def encode_compacted(self, summary: Response, request: Request) -> dict[str, Any]:
        """The conversation of `request` made short, where the upstream has
        no compaction of the client's protocol: `summary` is the target
        model's answer to a request for a summary of it, which the answer
        carries in a form this codec's request decoder reads back."""
        raise ProxyError(404, f"{self.protocol} has no compaction route")


class UpstreamCodec(ABC):
    """The protocol as the proxy speaks it to an upstream server."""

    protocol: ClassVar[str]
    stream_media_type: ClassVar[str] = "text/event-stream"

    # ------------------------------------------------------------ capabilities

    # The client's headers that an upstream of the same protocol needs to see
    # the request as the client meant it (never auth); sent on in pass-through.
    forwarded_headers: ClassVar[tuple[str, ...]] = ()
    # Whether the upstream understands Request.betas (through upstream_headers).
    takes_betas: ClassVar[bool] = False
    # Server tools (Request.server_tools kinds) the upstream runs itself.
    server_tools: ClassVar[frozenset[str]] = frozenset()
    # Document media types the upstream reads; plain-text documents become
    # text where it has no document input of their type.
    document_types: ClassVar[frozenset[str]] = frozenset()
    # Whether the upstream fetches a document given by URL itself.
    document_urls: ClassVar[bool] = False
    # Whether the upstream cannot fetch image URLs, so the proxy must.
    needs_inline_images: ClassVar[bool] = False
    # Whether the upstream takes custom tools (one free-form string in);
    # elsewhere each becomes a function tool with one string parameter.
    custom_tools: ClassVar[bool] = False
    # The key that names the model in answers and stream records; a stream
    # record without it is passed on as it came.
    model_key: ClassVar[str] = "model"
    # The stream's closing record, where the protocol has one apart from the
    # record that finishes the answer (OpenAI's `data: [DONE]`), and how the
    # upstream's own is known (the end of the record). A stream the upstream
    # ends after finishing its answer but before this record gets it in
    # pass-through, as a converted stream would end properly.
    stream_end: ClassVar[bytes | None] = None
    stream_end_mark: ClassVar[bytes] = b""

    # ------------------------------------------------------------ generate

    @abstractmethod
    def upstream_path(self, model: str, stream: bool) -> str:
        """Path (and query) appended to the provider's base_url."""

    @abstractmethod
    def auth_headers(self, key: str | None) -> dict[str, str]:
        """Headers that authenticate `key` (None: a keyless provider)."""

    @abstractmethod
    def encode_request(self, request: Request, model: str) -> dict[str, Any]:
        """The upstream request body for `model`, streaming if request.stream."""

    @abstractmethod
    def decode_response(self, body: Any) -> Response: ...

    @abstractmethod
    def stream_decoder(self) -> StreamDecoder: ...

    @abstractmethod
    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        """An upstream error answer as a ProxyError keeping `status` (unless
        the body shows it misleads: Gemini answers a bad key with 400); the
        message is the upstream's own where it has one; retry_after is read
        from headers (retry-after) or the body (Gemini RetryInfo)."""

    def upstream_headers(self, request: Request) -> dict[str, str]:
        """Headers the encoded request needs beyond auth (feature flags)."""
        return {}

    def left_out(self, request: Request) -> list[str]:
        """What of the client's request this upstream cannot carry and its
        encoding leaves out, in words for the exchange record and the
        answer's warning header."""
        missing = [f"server tool {t.name} ({t.kind})" for t in request.server_tools if t.kind not in self.server_tools]
        if request.betas and not self.takes_betas:
            missing += [f"beta {beta}" for beta in request.betas]
        return missing

    # ------------------------------------------------------------ same protocol

    def passthrough_body(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        """The client's body sent unchanged to an upstream of the same
        protocol, but for the model name."""
        return {**body, "model": model}

    def rename_model(self, answer: Any, model: str) -> None:
        """An upstream answer or stream record of this protocol, changed in
        place to name `model` (the client's name) wherever it names one:
        clients check that the answer is from the model they asked for."""
        if isinstance(answer, dict) and self.model_key in answer:
            answer[self.model_key] = model

    # ------------------------------------------------------------ count tokens

    def count_path(self, model: str) -> str | None:
        """The upstream's count-tokens path, or None where the protocol has
        none (the proxy then estimates)."""
        return None

    def encode_count_request(self, request: Request, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def decode_count_response(self, body: Any) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------ compaction

    def compact_path(self, model: str) -> str | None:
        """The upstream's compaction path, or None where the protocol has
        none (the proxy then asks the model for a summary). Its answer is in
        this protocol's own shape, so it serves clients of the protocol only."""
        return None

    def encode_compact_request(self, request: Request, model: str) -> dict[str, Any]:
        """A compaction body for a conversation the client did not send
        whole (one the proxy keeps)."""
        raise NotImplementedError

    # ------------------------------------------------------------ embeddings

    def embed_path(self, model: str) -> str | None:
        """The upstream's embeddings path, or None where it has none."""
        return None

    def encode_embed_request(self, request: EmbedRequest, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def decode_embed_response(self, body: Any) -> EmbedResponse:
        raise NotImplementedError


class Codec(ClientCodec, UpstreamCodec):
    """Both halves of one protocol, as its package's registry entry (and as
    tests drive a protocol in either role)."""
