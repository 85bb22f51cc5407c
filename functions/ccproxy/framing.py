"""Incremental decoders for the two stream framings: SSE and NDJSON.

Both take raw network chunks, split anywhere, even inside a multibyte UTF-8
character: bytes are only decoded once a whole line has arrived, and a line
break byte never occurs inside a multibyte sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ProxyError
from .jsonutil import loads

# The most one record (an SSE event, an NDJSON line) may hold before it ends:
# a stream without record ends is an upstream fault, not a reason to buffer
# without limit.
MAX_RECORD_BYTES = 16 * 1024 * 1024


def _too_long(cap: int) -> ProxyError:
    return ProxyError(502, f"the upstream sent a stream record over {cap} bytes")


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEDecoder:
    """Server-sent events, per the WHATWG rules the SDKs follow: `event:` and
    `data:` fields, `:` comments, blank line dispatches, CRLF or LF."""

    def __init__(self, max_record: int = MAX_RECORD_BYTES) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._held = 0  # bytes of the event being gathered
        self.max_record = max_record

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        self._held += len(chunk)
        if self._held > self.max_record and len(self._buffer) + sum(map(len, self._data)) > self.max_record:
            raise _too_long(self.max_record)
        if b"\n" not in chunk and b"\r" not in chunk:
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        events: list[SSEEvent] = []
        for raw in lines:
            # The two lines nearly every event is made of, without the
            # general path's decoding and splitting (it runs per event).
            if raw.startswith(b"data: "):
                self._data.append(raw[6:].rstrip(b"\r").decode("utf-8", "replace"))
            elif raw == b"" or raw == b"\r":
                self._dispatch(events)
            else:
                self._line(raw.rstrip(b"\r").decode("utf-8", "replace"), events)
        return events

    def close(self) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._buffer:
            self._line(self._buffer.rstrip(b"\r").decode("utf-8", "replace"), events)
            self._buffer = b""
        self._line("", events)
        return events

    def _dispatch(self, events: list[SSEEvent]) -> None:
        """A blank line: the event gathered so far, if any, is complete."""
        if self._data or self._event is not None:
            events.append(SSEEvent(self._event, "\n".join(self._data)))
            self._event, self._data = None, []
        self._held = len(self._buffer)

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


class NDJSONDecoder:
    """One JSON value per line; blank lines are skipped."""

    def __init__(self, max_record: int = MAX_RECORD_BYTES) -> None:
        self._buffer = b""
        self.max_record = max_record

    def feed(self, chunk: bytes) -> list[Any]:
        self._buffer += chunk
        if b"\n" not in chunk:
            if len(self._buffer) > self.max_record:
                raise _too_long(self.max_record)
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        return [self._parse(line) for line in lines if line.strip()]

    def close(self) -> list[Any]:
        line, self._buffer = self._buffer, b""
        return [self._parse(line)] if line.strip() else []

    @staticmethod
    def _parse(line: bytes) -> Any:
        try:
            return loads(line)
        except ValueError:
            raise ProxyError(502, f"upstream sent a line that is not JSON: {line[:200]!r}") from None


def parse_json_data(data: str) -> Any:
    """The JSON in an SSE data field; a malformed one is an upstream fault."""
    try:
        return loads(data)
    except ValueError:
        raise ProxyError(502, f"upstream sent an event that is not JSON: {data[:200]!r}") from None
