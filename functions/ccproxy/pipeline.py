"""Joins two codecs: an upstream answer in, the client's answer out.

Pure conversion, no I/O: the caller hands in the upstream's bytes (an async
iterator of network chunks for streams) and gets the client's bytes back.
Each upstream chunk is converted and handed on at once; nothing is held but
what a codec's own state machine must hold.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Protocol, Sequence, TypeVar

from .errors import ProxyError
from .framing import MAX_RECORD_BYTES
from .jsonutil import dumpb, loads
from .protocols.base import ClientCodec, StreamDecoder, StreamEncoder, UpstreamCodec
from .unified import (
    Finish,
    RedactedThinking,
    Request,
    Start,
    StreamError,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)

Observer = Callable[[StreamEvent], None]


class LastPiece(bytes):
    """The stream's closing bytes: whoever writes them may end the response
    in the same write."""


def convert_response(upstream: UpstreamCodec, client: ClientCodec, body: Any, request: Request) -> dict[str, Any]:
    """A whole upstream answer as the client's whole answer."""
    return client.encode_response(upstream.decode_response(body), request)


# What a codec's decoder raises when an answer is not of the shape it reads
# (a JSON array where an object belongs, "error": null): the upstream's fault.
UNREADABLE = (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError)
T = TypeVar("T")


def upstream_decoded(decode: Callable[[], T]) -> T:
    """The boundary where an upstream's answer meets its codec: an answer of
    a shape the codec cannot read is the upstream's fault, a 502."""
    try:
        return decode()
    except ProxyError:
        raise
    except UNREADABLE as exc:
        raise ProxyError(502, f"the upstream's answer could not be read ({type(exc).__name__}: {exc})"[:500]) from None


class CheckedDecoder(StreamDecoder):
    """A stream decoder whose every surprise is a ProxyError 502, so that a
    stream of the wrong shape ends with the client's error event like any
    other upstream failure."""

    def __init__(self, decoder: StreamDecoder) -> None:
        self.decoder = decoder

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        return _typed(upstream_decoded(lambda: self.decoder.feed(chunk)))

    def close(self) -> list[StreamEvent]:
        return _typed(upstream_decoded(self.decoder.close))


_OPTIONAL_TEXT = (str, type(None))
# What each event's fields hold. A decoder copies values out of the upstream's
# JSON as they come (stream events are plain dataclasses, for speed): a number
# where text belongs would only fail later, inside an encoder, once the
# stream is half sent.
_FIELD_TYPES: dict[type, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    Start: (("id", _OPTIONAL_TEXT), ("model", _OPTIONAL_TEXT)),
    TextDelta: (("text", str),),
    ThinkingDelta: (("text", str),),
    ThinkingSignature: (("signature", str),),
    RedactedThinking: (("data", str),),
    ToolCallStart: (("index", int), ("id", str), ("name", str), ("signature", _OPTIONAL_TEXT)),
    ToolCallDelta: (("index", int), ("arguments", str)),
    ToolCallEnd: (("index", int),),
    Finish: (("stop_reason", str), ("stop_sequence", _OPTIONAL_TEXT)),
}


def _typed(events: list[StreamEvent]) -> list[StreamEvent]:
    """The events, once each field is of its type; else the upstream's stream
    is unreadable (a 502, said by the client's error event)."""
    for event in events:
        for name, kind in _FIELD_TYPES.get(type(event), ()):
            value = getattr(event, name)
            if not isinstance(value, kind):
                raise ProxyError(
                    502,
                    f"the upstream's stream could not be read ({type(event).__name__}.{name} "
                    f"is {type(value).__name__})",
                )
    return events


class EventFilter(Protocol):
    """Rewrites unified events between decoder and encoder (compat mode
    turns text calls into tool calls here)."""

    def feed(self, event: StreamEvent) -> list[StreamEvent]: ...

    def close(self) -> list[StreamEvent]: ...


async def convert_stream(
    chunks: AsyncIterator[bytes],
    decoder: StreamDecoder,
    encoder: StreamEncoder,
    observe: Observer | None = None,
    transform: EventFilter | None = None,
) -> AsyncIterator[bytes]:
    """The upstream's stream as the client's, chunk by chunk.

    A ProxyError raised while reading (the caller turns transport failures
    into one) ends the client's stream with its protocol's in-stream error.
    """
    out = b""
    try:
        async for chunk in chunks:
            out, errored = _convert(_filtered(coalesce(decoder.feed(chunk)), transform), encoder, observe)
            if errored:
                break
            if out:
                yield out
                out = b""
        else:
            events = _filtered(decoder.close(), transform)
            if transform is not None:
                events += transform.close()
            out, _ = _convert(events, encoder, observe)
    except ProxyError as error:
        event = StreamError(error)
        if observe is not None:
            observe(event)
        out = encoder.feed(event)
    yield LastPiece(out + encoder.close())


def coalesce(events: list[StreamEvent]) -> list[StreamEvent]:
    """Runs of text, thinking or one call's argument deltas that arrived
    together, as one delta each: what a burst of upstream events costs then
    does not grow with their number, and the client parses fewer events.
    Nothing waits for more: only what one upstream read brought is joined."""
    if len(events) < 2:
        return events
    out: list[StreamEvent] = []
    run: list[str] = []  # the texts of the delta run at out[-1]
    for event in events:
        kind = type(event)
        last = out[-1] if out else None
        if run and kind is type(last) and (kind is not ToolCallDelta or event.index == last.index):  # type: ignore[union-attr]
            run.append(event.arguments if kind is ToolCallDelta else event.text)  # type: ignore[union-attr]
            continue
        if len(run) > 1:
            out[-1] = _joined(out[-1], run)
        run = []
        out.append(event)
        if kind is TextDelta or kind is ThinkingDelta:
            run = [event.text]  # type: ignore[union-attr]
        elif kind is ToolCallDelta:
            run = [event.arguments]  # type: ignore[union-attr]
    if len(run) > 1:
        out[-1] = _joined(out[-1], run)
    return out


def _joined(delta: StreamEvent, run: list[str]) -> StreamEvent:
    if type(delta) is ToolCallDelta:
        return ToolCallDelta(delta.index, "".join(run))
    return type(delta)("".join(run))  # type: ignore[call-arg,arg-type]  # TextDelta or ThinkingDelta


def _filtered(events: list[StreamEvent], transform: EventFilter | None) -> list[StreamEvent]:
    if transform is None:
        return events
    out: list[StreamEvent] = []
    for event in events:
        out.extend(transform.feed(event))
    return out


def _convert(events: list[StreamEvent], encoder: StreamEncoder, observe: Observer | None) -> tuple[bytes, bool]:
    """The client's bytes for these events, and whether they ended in an error
    (after which the upstream is read no further)."""
    parts = []
    for event in events:
        if observe is not None:
            observe(event)
        parts.append(encoder.feed(event))
        if isinstance(event, StreamError):
            return b"".join(parts), True
    return b"".join(parts), False


class Relay:
    """Same protocol on both sides: the upstream's stream passed on record by
    record, each as soon as it is whole. A record that names the model is
    rewritten to name the client's; a record that holds a secret (an upstream
    error echoing its key) has it replaced; every other record goes out byte
    for byte as it came.

    States: the buffer holds the start of a record not yet whole; a record
    (an SSE event up to its blank line, or an NDJSON line) leaves it whole.
    Once the protocol's closing record (UpstreamCodec.stream_end) has gone
    by, the stream is ended; a stream that finished its answer without it
    is given it at the close."""

    def __init__(
        self, codec: UpstreamCodec, model: str, secrets: Sequence[str] = (), max_record: int = MAX_RECORD_BYTES
    ) -> None:
        self.codec = codec
        self.model = model
        self.sse = codec.stream_media_type == "text/event-stream"
        self.separator = b"\n\n" if self.sse else b"\n"
        self.key = f'"{codec.model_key}"'.encode()
        self.secrets = [s.encode() for s in secrets if s]
        self.max_record = max_record
        self.buffer = b""
        self.end, self.end_mark = codec.stream_end, codec.stream_end_mark
        self.ended = self.end is None

    def feed(self, chunk: bytes) -> bytes:
        buffer = self.buffer + chunk
        if self.sse and b"\r" in buffer:
            # A CR held back at the end may yet be half of a CRLF.
            keep = buffer.endswith(b"\r")
            buffer = (buffer[:-1] if keep else buffer).replace(b"\r\n", b"\n") + (b"\r" if keep else b"")
        *records, self.buffer = buffer.split(self.separator)
        if len(self.buffer) > self.max_record:
            raise ProxyError(502, f"the upstream sent a stream record over {self.max_record} bytes")
        if not records:
            return b""
        separator = self.separator
        if not self.ended:
            self.ended = any(record.rstrip().endswith(self.end_mark) for record in records)
        out = b"".join((self._renamed(r) if self.key in r else r) + separator for r in records)
        for secret in self.secrets:
            if secret in out:
                out = out.replace(secret, b"[redacted]")
        return out

    def close(self) -> bytes:
        """What is left at the end of a stream that finished its answer: the
        closing record if the upstream left it out (or sent it without its
        blank line). A record cut off is not passed on: the decoder beside
        reports a stream that ends before its answer does."""
        rest, self.buffer = self.buffer.rstrip(), b""
        if self.ended or self.end is None or (rest and not rest.endswith(self.end_mark)):
            return b""
        self.ended = True
        return (rest or self.end) + self.separator

    def _renamed(self, record: bytes) -> bytes:
        if not self.sse:
            return self._json_renamed(record) or record
        lines = record.split(b"\n")
        data = [line[6:] if line.startswith(b"data: ") else line[5:] for line in lines if line.startswith(b"data:")]
        renamed = self._json_renamed(b"\n".join(data))
        if renamed is None:
            return record
        kept = [line for line in lines if not line.startswith(b"data:")]
        return b"\n".join([*kept, b"data: " + renamed])

    def _json_renamed(self, text: bytes) -> bytes | None:
        try:
            value = loads(text)
        except ValueError:
            return None
        self.codec.rename_model(value, self.model)
        return dumpb(value)


async def relay_stream(
    chunks: AsyncIterator[bytes],
    relay: Relay,
    decoder: StreamDecoder,
    observe: Observer,
    error_event: Callable[[ProxyError], bytes],
) -> AsyncIterator[bytes]:
    """The upstream's stream through `relay`, checked by its own decoder as it
    goes: a record that does not parse, a connection that breaks, or a stream
    that stops before its end marker ends the client's stream with its
    protocol's error event (`error_event`), as a converted stream would. The
    decoder also lets usage and the answer be recorded.

    Each chunk is decoded before it is passed on, so nothing the decoder
    refuses reaches the client."""
    try:
        async for chunk in chunks:
            events = decoder.feed(chunk)
            for event in events:
                observe(event)
            out = relay.feed(chunk)
            if out:
                yield out
            if any(type(event) is StreamError for event in events):
                return  # the upstream's own error event went out with its record
        events = decoder.close()
        for event in events:
            observe(event)
        failure = next((event.error for event in events if type(event) is StreamError), None)
        if failure is not None:
            yield LastPiece(error_event(failure))
            return
        yield LastPiece(relay.close())
    except ProxyError as error:
        observe(StreamError(error))
        yield LastPiece(error_event(error))
