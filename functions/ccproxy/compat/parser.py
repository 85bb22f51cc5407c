"""The streaming parser: a model's text in, text and native tool-call events
out, whatever the chunking."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..ids import new_call_id
from ..jsonutil import dumps
from ..unified import StreamEvent, TextDelta, Tool, ToolCallDelta, ToolCallEnd, ToolCallStart
from .values import (
    CLOSE_TAG,
    FENCE,
    OPEN_TAG,
    arguments_of,
    body_arguments,
    decode_entities,
    json_body,
    parameters,
    parse_parameters,
    strip_partial,
)


class State(Enum):
    """Where the parser is in the model's text."""

    START = "start"  # nothing emitted yet: leading whitespace waits to see what follows
    TEXT = "text"  # prose, emitted as it arrives
    MAYBE_CALL = "maybe_call"  # holding a suffix that may begin a call (`<tool_c`, or a fence before one)
    IN_CALL = "in_call"  # inside a call, collecting its body up to `</tool_call>`
    AFTER_CALL = "after_call"  # after a call: whitespace and a closing fence are dropped


class _Match(Enum):
    NO = "no"
    PARTIAL = "partial"  # the buffer ends before it can tell
    YES = "yes"


@dataclass(slots=True)
class _Opener:
    """A recognised call opening: `[fence] <tool_call name="x">`."""

    end: int  # index just past the tag's `>`
    name: str | None  # canonical tool name; None for a Hermes-style `<tool_call>`
    fenced: bool
    self_closing: bool


@dataclass(slots=True)
class _OpenCall:
    raw_open: str  # the fence and tag as written, for passing an invalid call on as text
    name: str | None


_MAX_TAG = 400  # an opening tag longer than this is prose, not a call
_MAX_FENCE_LANG = 24
_CANDIDATE = re.compile(r"[<`]")
# The end of a call: `</tool_call>`, or the next call's opening. Whitespace
# is bounded so that a match is never longer than _MAX_CALL_END, which lets the
# scan of a growing body resume near its end.
_CALL_END = re.compile(r"</\s{0,16}tool_call\s{0,16}>|<tool_call(?=[\s>/])")
_MAX_CALL_END = 48
_FUNCTION_OPEN = re.compile(r"<function\s*=\s*[\"']?([^\s>\"']+)[\"']?\s*>")


class CompatParser:
    """Turns a model's text into text and native tool-call events, incrementally.

    Text outside calls streams out as it arrives; only a suffix that could be
    the start of a call (`<tool_c`..., or a code fence that may open one) is
    held back until the next piece decides it. Every decision depends only on
    the text seen, never on how it was split, so any chunking of the same
    answer yields the same text and the same calls.

    A call's events (ToolCallStart, one ToolCallDelta with the whole arguments
    JSON, ToolCallEnd) are emitted when the call is complete: a call is only
    known to be valid (known tool, readable body) at its end.
    """

    def __init__(self, tools: Sequence[Tool]) -> None:
        self._tools: dict[str, Tool] = {tool.name: tool for tool in tools}
        self._folded: dict[str, str | None] = {}
        for name in self._tools:
            key = name.casefold()
            self._folded[key] = None if key in self._folded else name  # None: ambiguous
        self.state = State.START
        self.next_index = 0  # index of the next call; CompatStream moves it past native calls
        self.calls = 0  # calls emitted so far
        self._buf = ""
        self._call: _OpenCall | None = None
        self._fence_open = False  # a fence was swallowed before the last call; its closer goes too
        self._body: list[str] = []  # IN_CALL: the body before `_buf`, where no call end can start

    # ------------------------------------------------------------ public

    def feed(self, text: str) -> list[StreamEvent]:
        """Events for this piece of the model's text (possibly none yet)."""
        if not text:
            return []
        self._buf += text
        return self._run(final=False)

    def close(self) -> list[StreamEvent]:
        """Events for whatever is held at the end of the answer.

        An unfinished call is completed with what it has (models often stop
        without `</tool_call>`); a held maybe-call turns out to be text. The
        parser is then ready for a new answer; call indexes keep counting.
        """
        events = self._run(final=True)
        if self.state is State.IN_CALL:
            events += self._finish_call(strip_partial(self._take_body(len(self._buf)), CLOSE_TAG), "")
        self._buf = ""
        self.state = State.START
        self._fence_open = False
        return events

    # ------------------------------------------------------------ machine

    def _run(self, final: bool) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        while True:
            state = self.state
            if state in (State.TEXT, State.MAYBE_CALL):
                progressed = self._scan_text(events, final)
            elif state is State.IN_CALL:
                progressed = self._scan_call(events)
            else:  # START, AFTER_CALL
                progressed = self._scan_between(events, final)
            if not progressed:
                return events

    def _scan_text(self, events: list[StreamEvent], final: bool) -> bool:
        """Emit prose up to the next call opening, then enter the call or hold
        a maybe-call suffix. Returns whether there is more to do (a call
        opened)."""
        buf = self._buf
        pos = 0
        while True:
            found = _CANDIDATE.search(buf, pos)
            if found is None:
                _emit_text(events, buf)
                self._buf = ""
                self.state = State.TEXT
                return False
            start = found.start()
            status, opener = self._match_opener(buf, start)
            if status is _Match.PARTIAL and not final:
                _emit_text(events, buf[:start])
                self._buf = buf[start:]
                self.state = State.MAYBE_CALL
                return False
            if status is _Match.YES:
                assert opener is not None
                _emit_text(events, buf[:start])
                self._open_call(buf[start : opener.end], opener)
                self._buf = buf[opener.end :]
                if opener.self_closing:
                    events += self._finish_call("", "")
                return True
            pos = start + 1

    def _scan_call(self, events: list[StreamEvent]) -> bool:
        """Look for the end of the call: `</tool_call>`, or (the model forgot
        to close it) the next `<tool_call`."""
        match = _CALL_END.search(self._buf)
        if match is None:
            # A match starting further back would be complete by now: only
            # the tail stays in the buffer, so a long body is not re-copied
            # and re-searched on every piece.
            keep = len(self._buf) - _MAX_CALL_END
            if keep > 0:
                self._body.append(self._buf[:keep])
                self._buf = self._buf[keep:]
            return False
        closed = match.group(0).startswith("</")
        closer = match.group(0) if closed else ""
        rest = self._buf[match.end() :] if closed else self._buf[match.start() :]
        body = self._take_body(match.start())
        self._buf = rest
        events += self._finish_call(body, closer)
        return True

    def _take_body(self, end: int) -> str:
        """The whole body of the current call, up to `_buf[end]`."""
        body = "".join(self._body) + self._buf[:end]
        self._body = []
        return body

    def _scan_between(self, events: list[StreamEvent], final: bool) -> bool:
        """At the start, or right after a call: whitespace waits to see what
        follows. Before a call it is layout and dropped; after a call it is
        dropped too, with the closing fence of a fenced call; at the start,
        prose keeps its leading whitespace."""
        buf = self._buf
        k = len(buf) - len(buf.lstrip())
        if k == len(buf):
            if final:
                self._buf = ""
            return False
        if self._fence_open and buf[k] == "`":
            if buf.startswith(FENCE, k):
                self._buf = buf[k + len(FENCE) :]
                self._fence_open = False
                return True
            if len(buf) - k < len(FENCE) and not final:
                return False
        status, _ = self._match_opener(buf, k)
        if status is _Match.PARTIAL and not final:
            return False
        if status is _Match.YES:
            self._buf = buf[k:]  # another call: an open fence may still close after it
        else:
            if self.state is State.AFTER_CALL:
                self._buf = buf[k:]
            self._fence_open = False
        self.state = State.TEXT
        return True

    # ------------------------------------------------------------ openings

    def _match_opener(self, buf: str, i: int) -> tuple[_Match, _Opener | None]:
        """Whether a call opens at `buf[i]`: an optional code fence
        (```` ``` ````, a language word, whitespace) and then
        `<tool_call` with attributes up to `>`, naming a known tool (or no
        name, for Hermes-style calls)."""
        fenced = buf[i] == "`"
        tag_start = _skip_fence(buf, i) if fenced else i
        if isinstance(tag_start, _Match):
            return tag_start, None
        k = _skip_tag_word(buf, tag_start)
        if isinstance(k, _Match):
            return k, None
        name: str | None = None
        while True:
            if k - tag_start > _MAX_TAG:
                return _Match.NO, None
            k = _skip_space(buf, k)
            if k == len(buf):
                return _Match.PARTIAL, None
            if buf[k] in ">/":
                end = _tag_end(buf, k)
                if isinstance(end, _Match):
                    return end, None
                return self._opener_named(name, end, fenced, self_closing=buf[k] == "/")
            attribute = _read_attribute(buf, k, tag_start)
            if isinstance(attribute, _Match):
                return attribute, None
            k, key, value = attribute
            if key.lower() == "name":
                name = decode_entities(value).strip()

    def _opener_named(
        self, name: str | None, end: int, fenced: bool, self_closing: bool
    ) -> tuple[_Match, _Opener | None]:
        if name is None:
            if self_closing:
                return _Match.NO, None
            return _Match.YES, _Opener(end, None, fenced, False)
        canonical = self._tool_named(name)
        if canonical is None:
            return _Match.NO, None  # an unknown tool: not a call, the text stays text
        return _Match.YES, _Opener(end, canonical, fenced, self_closing)

    def _tool_named(self, name: str) -> str | None:
        """The offered tool this name means: exactly, else case-insensitively
        when that is unambiguous."""
        if name in self._tools:
            return name
        return self._folded.get(name.casefold())

    # ------------------------------------------------------------ calls

    def _open_call(self, raw_open: str, opener: _Opener) -> None:
        self._call = _OpenCall(raw_open, opener.name)
        self._fence_open = self._fence_open or opener.fenced
        self._body = []
        self.state = State.IN_CALL

    def _finish_call(self, body: str, closer: str) -> list[StreamEvent]:
        """The call's events, or, if the body names no offered tool (a
        Hermes-style call) or cannot be read, its text as written."""
        call = self._call
        assert call is not None
        self._call = None
        parsed = self._parse_body(call.name, body)
        if parsed is None:
            self._fence_open = False
            self.state = State.TEXT
            return [TextDelta(call.raw_open + body + closer)]
        name, arguments = parsed
        index = self.next_index
        self.next_index += 1
        self.calls += 1
        self.state = State.AFTER_CALL
        return [
            ToolCallStart(index=index, id=new_call_id(), name=name),
            ToolCallDelta(index=index, arguments=dumps(arguments)),
            ToolCallEnd(index=index),
        ]

    def _parse_body(self, name: str | None, body: str) -> tuple[str, dict[str, Any]] | None:
        if name is None:
            return self._parse_unnamed(body)
        return name, body_arguments(self._tools[name], body)

    def _parse_unnamed(self, body: str) -> tuple[str, dict[str, Any]] | None:
        """A `<tool_call>` without a name attribute, in the formats models
        were trained on: Hermes/Qwen `{"name": "x", "arguments": {...}}`, or
        Qwen3-Coder `<function=x><parameter=key>value</parameter></function>`."""
        function = _FUNCTION_OPEN.search(body)
        if function is not None:
            name = self._tool_named(function.group(1))
            if name is None:
                return None
            properties, root = parameters(self._tools[name])
            return name, parse_parameters(properties, root, body, function.end())
        value = json_body(body)
        if not isinstance(value, dict):
            return None
        raw_name = value.get("name")
        function = value.get("function")
        if raw_name is None and isinstance(function, dict):  # OpenAI's shape
            value, raw_name = function, function.get("name")
        if not isinstance(raw_name, str):
            return None
        name = self._tool_named(raw_name.strip())
        if name is None:
            return None
        return name, arguments_of(value)


def _emit_text(events: list[StreamEvent], text: str) -> None:
    if text:
        events.append(TextDelta(text))


# ====================================================================== opening tags
#
# The steps of `CompatParser._match_opener`: each reads one piece of the
# opening from `buf[k]` and returns the index just past it, or the verdict
# (NO, or PARTIAL when the buffer ends before it can tell).


def _skip_space(buf: str, k: int) -> int:
    n = len(buf)
    while k < n and buf[k].isspace():
        k += 1
    return k


def _skip_fence(buf: str, k: int) -> int | _Match:
    """A code fence with an optional language word, up to the `<` after it."""
    n = len(buf)
    for expected in FENCE:
        if k == n:
            return _Match.PARTIAL
        if buf[k] != expected:
            return _Match.NO
        k += 1
    lang_start = k
    while k < n and (buf[k].isalnum() or buf[k] in "_-+."):
        k += 1
    if k - lang_start > _MAX_FENCE_LANG:
        return _Match.NO
    k = _skip_space(buf, k)
    if k == n:
        return _Match.PARTIAL
    if buf[k] != "<":
        return _Match.NO
    return k


def _skip_tag_word(buf: str, k: int) -> int | _Match:
    """`<tool_call` as a whole word."""
    n = len(buf)
    have = buf[k : k + len(OPEN_TAG)]
    if not OPEN_TAG.startswith(have):
        return _Match.NO
    if len(have) < len(OPEN_TAG):
        return _Match.PARTIAL
    k += len(OPEN_TAG)
    if k == n:
        return _Match.PARTIAL
    if not (buf[k].isspace() or buf[k] in ">/"):
        return _Match.NO  # `<tool_calls>`, `<tool_call_id>`: other words
    return k


def _tag_end(buf: str, k: int) -> int | _Match:
    """`>` or `/>`; the index just past it."""
    if buf[k] == "/":
        if k + 1 == len(buf):
            return _Match.PARTIAL
        if buf[k + 1] != ">":
            return _Match.NO
        k += 1
    return k + 1


def _read_attribute(buf: str, k: int, tag_start: int) -> tuple[int, str, str] | _Match:
    """`key=value`, the value quoted or bare: the index past it, the key and
    the value as written."""
    n = len(buf)
    attr_start = k
    while k < n and (buf[k].isalnum() or buf[k] in "_-:."):
        k += 1
    if k == attr_start:
        return _Match.NO
    attribute = buf[attr_start:k]
    k = _skip_space(buf, k)
    if k == n:
        return _Match.PARTIAL
    if buf[k] != "=":
        return _Match.NO
    k = _skip_space(buf, k + 1)
    if k == n:
        return _Match.PARTIAL
    value = _read_value(buf, k, tag_start)
    if isinstance(value, _Match):
        return value
    end, text = value
    return end, attribute, text


def _read_value(buf: str, k: int, tag_start: int) -> tuple[int, str] | _Match:
    """An attribute's value: the index past it and its text."""
    n = len(buf)
    if buf[k] in "\"'":
        end = buf.find(buf[k], k + 1)
        if end < 0:
            return _Match.NO if n - tag_start > _MAX_TAG else _Match.PARTIAL
        return end + 1, buf[k + 1 : end]
    value_start = k
    while k < n and not (buf[k].isspace() or buf[k] in ">\"'" or buf.startswith("/>", k)):
        k += 1
    if k == n or (buf[k] == "/" and k + 1 == n):
        return _Match.PARTIAL
    return k, buf[value_start:k]
