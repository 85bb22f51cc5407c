"""Tool compatibility mode: function calling for models that lack it.

Some upstream models (small local ones, mostly) have no native function
calling. In compat mode the proxy describes the tools in the system prompt and
asks the model to write each call as text, in the format the README gives::

    <tool_call name="get_weather">
    <arg name="city">Paris</arg>
    <arg name="days">3</arg>
    </tool_call>

Two halves make this work, both pure (no I/O):

* `rewrite_request` turns a unified Request with tools into one without:
  the tools become prompt text, and past calls and results in the history
  become text in the same format, so the model sees a consistent story.
* `CompatParser` (streams, through `CompatStream`) and `parse_response`
  (whole answers) turn the model's text calls back into native unified tool
  calls, which the client's codec then encodes in its own protocol.

Weak models are sloppy, so the parser is lenient: code fences around calls,
a missing `</tool_call>`, raw `<` and `&` in values, JSON bodies, the
Hermes/Qwen `{"name": ..., "arguments": ...}` body and odd quoting all work.
A call to a tool the request does not offer is not a call: it stays text.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .ids import new_call_id
from .jsonutil import dumps, loads_object
from .unified import (
    Document,
    Finish,
    Image,
    Message,
    Part,
    Request,
    Response,
    ServerToolUse,
    StreamError,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolChoice,
    ToolResult,
)

__all__ = [
    "CompatParser",
    "CompatStream",
    "State",
    "format_call",
    "format_result",
    "parse_response",
    "rewrite_request",
    "tool_instructions",
    "wrap_stream",
]

TAG = "tool_call"
OPEN_TAG = "<" + TAG
CLOSE_TAG = "</" + TAG + ">"
FENCE = "```"

# Stop reasons that mean "the model simply stopped": after a text call they
# become tool_use, as a native upstream would have said. max_tokens and the
# rest say something the client must still hear.
_NATURAL_STOPS = frozenset({"end_turn", "stop_sequence"})

# ====================================================================== values
#
# Shared by the parser (text -> arguments) and the history renderer
# (arguments -> text), so that rendering can check it round-trips.

_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot|apos)|#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6}));")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
# An `&` that the decoder would read as the start of an entity.
_ENTITY_AMP = re.compile(r"&(?=(?:lt|gt|amp|quot|apos|#\d{1,7}|#[xX][0-9a-fA-F]{1,6});)")
# A `<` that the parser would read as the start of one of its own tags.
_TAG_LT = re.compile(r"<(?=/?\s*(?:tool_call|arg|argument|param|parameter)\b)")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PY_LITERALS: dict[str, Any] = {"True": True, "False": False, "None": None}
_MISSING: Any = object()
_JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")


def _decode_entities(text: str) -> str:
    """Decode the few entities models use when they escape XML.

    Deliberately not `html.unescape`: that also decodes `&copy` without a
    semicolon and friends, which would corrupt raw `&` in URLs and code.
    """

    def replace(match: re.Match[str]) -> str:
        named, decimal, hexa = match.groups()
        if named:
            return _NAMED_ENTITIES[named]
        code = int(decimal) if decimal else int(hexa, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return match.group(0)
        return chr(code)

    return _ENTITY.sub(replace, text) if "&" in text else text


def _trim_newline(text: str) -> str:
    """One newline off each end: the model's line breaks around a value that
    sits on its own lines belong to the layout, not to the value."""
    if text.startswith("\n"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    return text


def _schema_types(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> set[str]:
    """The JSON types a schema allows (empty when it does not say)."""
    if not isinstance(schema, dict) or depth > 8:
        return set()
    schema = _resolve(schema, root)
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    types: set[str] = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            types |= _schema_types(sub, root, depth + 1)
    if types:
        return types
    if "properties" in schema:
        return {"object"}
    if "items" in schema:
        return {"array"}
    values = schema.get("enum") or ([schema["const"]] if "const" in schema else [])
    return {_json_type(v) for v in values}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _resolve(schema: dict[str, Any], root: dict[str, Any] | None) -> dict[str, Any]:
    """Follow a local `$ref` (`#/$defs/X`, `#/definitions/X`) one step at a time."""
    for _ in range(8):
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/") or root is None:
            return schema
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return schema
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _loads_lenient(text: str) -> Any:
    """JSON as models write it, or `_MISSING`.

    Tries the text as is, then with entities decoded, trailing commas removed
    and control characters allowed inside strings, then as a Python literal
    (`True`, `{'a': 1}`), which small models produce surprisingly often.
    """
    text = text.strip()
    if not text:
        return _MISSING
    candidates = [text]
    decoded = _decode_entities(text)
    if decoded != text:
        candidates.append(decoded)
    for candidate in candidates:
        for variant in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                return json.loads(variant, strict=False)
            except ValueError:
                pass
        if candidate in _PY_LITERALS:
            return _PY_LITERALS[candidate]
        if candidate[0] in "[{(":
            try:
                return ast.literal_eval(candidate)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
    return _MISSING


def _convert_arg(properties: dict[str, Any], root: dict[str, Any], key: str, raw: str) -> Any:
    """One `<arg>` value, read by the type the tool's schema gives it.

    String (or undeclared) parameters are the raw text; anything else is
    JSON, and text that is not JSON after all is kept as a string rather than
    lost.
    """
    types = _schema_types(properties.get(key), root)
    if not types or "string" in types:
        return _trim_newline(_decode_entities(raw))
    value = _loads_lenient(raw)
    if value is _MISSING:
        return _decode_entities(raw.strip())
    if isinstance(value, str):  # a quoted number or boolean: "3", "true"
        inner = _loads_lenient(value)
        if inner is not _MISSING and _fits(inner, types):
            value = inner
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float) and value.is_integer() and "integer" in types and "number" not in types:
        value = int(value)
    return value


def _fits(value: Any, types: set[str]) -> bool:
    kind = _json_type(value)
    return kind in types or (kind == "integer" and "number" in types)


def _parameters(tool: Tool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tool's `properties` and its whole parameter schema (for `$ref`)."""
    root = tool.parameters if isinstance(tool.parameters, dict) else {}
    properties = root.get("properties")
    return (properties if isinstance(properties, dict) else {}), root


# ====================================================================== parser


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
_ARG_OPEN = re.compile(r"<(?:arg|argument|param|parameter)\s+name\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>\"']+))\s*>")
_ARG_CLOSE = re.compile(r"</\s*(?:arg|argument|param|parameter)\s*>")
_FUNCTION_OPEN = re.compile(r"<function\s*=\s*[\"']?([^\s>\"']+)[\"']?\s*>")
_PARAMETER_OPEN = re.compile(r"<parameter\s*=\s*[\"']?([^\s>\"']+)[\"']?\s*>")
_PARAMETER_END = re.compile(r"</\s*parameter\s*>|(?=<parameter\s*=)|(?=</\s*function\s*>)")
_FENCED_BODY = re.compile(r"^\s*```[\w.+-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


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
            events += self._finish_call(_strip_partial(self._take_body(len(self._buf)), CLOSE_TAG), "")
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
        n = len(buf)
        k = i
        fenced = False
        if buf[i] == "`":
            for expected in FENCE:
                if k == n:
                    return _Match.PARTIAL, None
                if buf[k] != expected:
                    return _Match.NO, None
                k += 1
            lang_start = k
            while k < n and (buf[k].isalnum() or buf[k] in "_-+."):
                k += 1
            if k - lang_start > _MAX_FENCE_LANG:
                return _Match.NO, None
            while k < n and buf[k].isspace():
                k += 1
            if k == n:
                return _Match.PARTIAL, None
            if buf[k] != "<":
                return _Match.NO, None
            fenced = True
        tag_start = k
        have = buf[k : k + len(OPEN_TAG)]
        if not OPEN_TAG.startswith(have):
            return _Match.NO, None
        if len(have) < len(OPEN_TAG):
            return _Match.PARTIAL, None
        k += len(OPEN_TAG)
        if k == n:
            return _Match.PARTIAL, None
        if not (buf[k].isspace() or buf[k] in ">/"):
            return _Match.NO, None  # `<tool_calls>`, `<tool_call_id>`: other words
        name: str | None = None
        while True:
            if k - tag_start > _MAX_TAG:
                return _Match.NO, None
            while k < n and buf[k].isspace():
                k += 1
            if k == n:
                return _Match.PARTIAL, None
            char = buf[k]
            if char == ">" or char == "/":
                if char == "/":
                    if k + 1 == n:
                        return _Match.PARTIAL, None
                    if buf[k + 1] != ">":
                        return _Match.NO, None
                    k += 1
                return self._opener_named(name, k + 1, fenced, self_closing=char == "/")
            attr_start = k
            while k < n and (buf[k].isalnum() or buf[k] in "_-:."):
                k += 1
            if k == attr_start:
                return _Match.NO, None
            attribute = buf[attr_start:k]
            while k < n and buf[k].isspace():
                k += 1
            if k == n:
                return _Match.PARTIAL, None
            if buf[k] != "=":
                return _Match.NO, None
            k += 1
            while k < n and buf[k].isspace():
                k += 1
            if k == n:
                return _Match.PARTIAL, None
            if buf[k] in "\"'":
                end = buf.find(buf[k], k + 1)
                if end < 0:
                    return (_Match.NO, None) if n - tag_start > _MAX_TAG else (_Match.PARTIAL, None)
                value = buf[k + 1 : end]
                k = end + 1
            else:
                value_start = k
                while k < n and not (buf[k].isspace() or buf[k] in ">\"'" or buf.startswith("/>", k)):
                    k += 1
                if k == n or (buf[k] == "/" and k + 1 == n):
                    return _Match.PARTIAL, None
                value = buf[value_start:k]
            if attribute.lower() == "name":
                name = _decode_entities(value).strip()

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
        tool = self._tools[name]
        properties, root = _parameters(tool)
        if _ARG_OPEN.search(body):
            return name, _parse_args(properties, root, body)
        value = _json_body(body)
        if isinstance(value, dict):
            return name, _unwrap_named(value, name)
        stripped = body.strip()
        if not stripped:
            return name, {}
        if len(properties) == 1:
            # A bare value for a tool with one parameter: clearly that parameter.
            (key,) = properties
            return name, {key: _convert_arg(properties, root, key, stripped)}
        return name, loads_object(stripped)

    def _parse_unnamed(self, body: str) -> tuple[str, dict[str, Any]] | None:
        """A `<tool_call>` without a name attribute, in the formats models
        were trained on: Hermes/Qwen `{"name": "x", "arguments": {...}}`, or
        Qwen3-Coder `<function=x><parameter=key>value</parameter></function>`."""
        function = _FUNCTION_OPEN.search(body)
        if function is not None:
            name = self._tool_named(function.group(1))
            if name is None:
                return None
            properties, root = _parameters(self._tools[name])
            arguments: dict[str, Any] = {}
            pos = function.end()
            while (opening := _PARAMETER_OPEN.search(body, pos)) is not None:
                end = _PARAMETER_END.search(body, opening.end())
                stop = end.start() if end is not None else len(body)
                raw = body[opening.end() : stop]
                if end is None:
                    raw = _strip_partial(raw, "</parameter>")
                arguments[opening.group(1)] = _convert_arg(properties, root, opening.group(1), raw)
                pos = end.end() if end is not None and end.end() > stop else stop
            return name, arguments
        value = _json_body(body)
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
        return name, _arguments_of(value)


def _emit_text(events: list[StreamEvent], text: str) -> None:
    if text:
        events.append(TextDelta(text))


def _parse_args(properties: dict[str, Any], root: dict[str, Any], body: str) -> dict[str, Any]:
    """`<arg name="x">value</arg>` pairs. A value ends at its `</arg>`, or
    where the next `<arg name=...>` starts when the model forgot to close it;
    a raw `<` inside a value is just a character."""
    arguments: dict[str, Any] = {}
    pos = 0
    while (opening := _ARG_OPEN.search(body, pos)) is not None:
        key = _decode_entities(next(g for g in opening.groups() if g is not None)).strip()
        start = opening.end()
        closing = _ARG_CLOSE.search(body, start)
        following = _ARG_OPEN.search(body, start)
        if closing is not None and (following is None or closing.start() <= following.start()):
            raw, pos = body[start : closing.start()], closing.end()
        elif following is not None:
            raw, pos = body[start : following.start()], following.start()
        else:
            raw, pos = _strip_partial(body[start:], "</arg>"), len(body)
        arguments[key] = _convert_arg(properties, root, key, raw)
    return arguments


def _strip_partial(text: str, closer: str) -> str:
    """Drop the start of a closing tag (`</tool_c`, `</ar`) that the answer
    was cut off in: it is the format's, not the value's."""
    cut = text.rfind("</")
    if cut >= 0 and closer.startswith(re.sub(r"\s+", "", text[cut:])):
        return text[:cut]
    return text


def _json_body(body: str) -> Any:
    """A call body as JSON: fences around it and prose around the object are
    tolerated. `_MISSING` when there is no object to read."""
    text = body.strip()
    fenced = _FENCED_BODY.match(text)
    if fenced:
        text = fenced.group(1).strip()
    value = _loads_lenient(text)
    if value is _MISSING:
        first, last = text.find("{"), text.rfind("}")
        if 0 <= first < last:
            value = _loads_lenient(text[first : last + 1])
    return value


def _arguments_of(value: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a `{"name", "arguments"|"parameters"}` object; a JSON
    string of arguments (OpenAI's habit) is read too."""
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        parsed = _loads_lenient(arguments)
        arguments = parsed if parsed is not _MISSING else loads_object(arguments)
    if arguments is None:
        return {}
    return arguments if isinstance(arguments, dict) else {"value": arguments}


def _unwrap_named(value: dict[str, Any], name: str) -> dict[str, Any]:
    """A named call whose JSON body repeats the name Hermes-style is unwrapped;
    any other object is the arguments themselves."""
    keys = set(value)
    if value.get("name") == name and keys <= {"name", "arguments", "parameters"} and len(keys) == 2:
        return _arguments_of(value)
    return value


# ====================================================================== streams


class CompatStream:
    """Runs an upstream's unified stream through a CompatParser.

    Text goes through the parser; everything else (thinking, usage, native
    calls) passes untouched. At Finish the parser is flushed, and if the model
    called a tool a natural stop becomes `tool_use`, as a native upstream
    would have reported it.
    """

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.parser = CompatParser(tools)

    def feed(self, event: StreamEvent) -> list[StreamEvent]:
        match event:
            case TextDelta(text=text):
                return self.parser.feed(text)
            case Finish(stop_reason=reason):
                events = self.parser.close()
                if self.parser.calls and reason in _NATURAL_STOPS:
                    event = Finish(stop_reason="tool_use")
                return [*events, event]
            case StreamError():
                return [*self.parser.close(), event]
            case ToolCallStart(index=index):
                # A native call (the model has some support after all): the
                # parser's own calls are numbered after it.
                self.parser.next_index = max(self.parser.next_index, index + 1)
                return [event]
            case _:
                return [event]

    def close(self) -> list[StreamEvent]:
        """What the parser still holds, for a stream that ended without Finish."""
        return self.parser.close()


def wrap_stream(events: Iterable[StreamEvent], tools: Sequence[Tool]) -> Iterator[StreamEvent]:
    """`CompatStream` over a whole iterable of events."""
    stream = CompatStream(tools)
    for event in events:
        yield from stream.feed(event)
    yield from stream.close()


def parse_response(response: Response, tools: Sequence[Tool]) -> Response:
    """A whole answer with its text calls turned into ToolCall parts."""
    parser = CompatParser(tools)
    content: list[Text | Thinking | ToolCall | ServerToolUse] = []
    pending: dict[int, tuple[str, str, list[str]]] = {}

    def fold(events: list[StreamEvent]) -> None:
        for event in events:
            if isinstance(event, TextDelta):
                if content and isinstance(content[-1], Text):
                    content[-1] = Text(text=content[-1].text + event.text)
                else:
                    content.append(Text(text=event.text))
            elif isinstance(event, ToolCallStart):
                pending[event.index] = (event.id, event.name, [])
            elif isinstance(event, ToolCallDelta):
                pending[event.index][2].append(event.arguments)
            elif isinstance(event, ToolCallEnd):
                call_id, name, chunks = pending.pop(event.index)
                content.append(ToolCall(id=call_id, name=name, arguments=loads_object("".join(chunks))))

    for part in response.content:
        if isinstance(part, Text):
            fold(parser.feed(part.text))
        else:
            if isinstance(part, ToolCall):
                parser.next_index += 1
            content.append(part.model_copy(deep=True))
    fold(parser.close())
    update: dict[str, Any] = {"content": content}
    if parser.calls and response.stop_reason in _NATURAL_STOPS:
        update.update(stop_reason="tool_use", stop_sequence=None)
    return response.model_copy(update=update, deep=True)


# ====================================================================== rendering calls


def _attribute(value: str) -> str:
    """An XML attribute value, quoted so the parser reads it back."""
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("&", "&amp;").replace('"', "&quot;") + '"'


def _escape_text(value: str) -> str:
    """Escape only what the parser would otherwise misread, so code in
    arguments stays readable: an `&` that looks like an entity, a `<` that
    looks like one of the format's tags."""
    return _TAG_LT.sub("&lt;", _ENTITY_AMP.sub("&amp;", value))


def _render_arg(value: Any, string_like: bool) -> str:
    if string_like and isinstance(value, str):
        text = _escape_text(value)
        return f"\n{text}\n" if "\n" in text else text
    text = dumps(value)
    return text.replace("<", "\\u003c") if _TAG_LT.search(text) else text


def format_call(call: ToolCall, tools: Sequence[Tool] = ()) -> str:
    """A past call in the format the model is asked to write.

    Each argument is checked to read back to the same value; when one would
    not (say a number for a string parameter), the call is written with a JSON
    body instead, which the parser also reads, so nothing is distorted.
    """
    tool = next((t for t in tools if t.name == call.name), None)
    properties, root = _parameters(tool) if tool is not None else ({}, {})
    lines = [f"<tool_call name={_attribute(call.name)}>"]
    for key, value in call.arguments.items():
        types = _schema_types(properties.get(key), root)
        text = _render_arg(value, not types or "string" in types)
        quotable = "'" not in key or '"' not in key
        if not quotable or not _same(_convert_arg(properties, root, key, text), value):
            body = dumps(call.arguments)
            if _TAG_LT.search(body):
                body = body.replace("<", "\\u003c")
            return f"{lines[0]}\n{body}\n{CLOSE_TAG}"
        lines.append(f"<arg name={_attribute(key)}>{text}</arg>")
    lines.append(CLOSE_TAG)
    return "\n".join(lines)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: `1 == 1.0 == True` in Python, but not in arguments."""
    return dumps(a) == dumps(b)


def format_result(result: ToolResult, name: str | None) -> list[Text | Image | Document]:
    """A tool result as user content: `<tool_result name=.. id=..>` text, with
    any images and documents kept as they are where they stand inside it."""
    attributes = ""
    if name:
        attributes += f" name={_attribute(name)}"
    attributes += f" id={_attribute(result.id)}"
    if result.is_error:
        attributes += ' status="error"'
    parts: list[Text | Image | Document] = []
    text = f"<tool_result{attributes}>"
    for item in result.content:
        if isinstance(item, Text):
            text += ("\n" if text else "") + item.text
        else:
            parts.append(Text(text=text))
            parts.append(item.model_copy(deep=True))
            text = ""
    text += "\n</tool_result>" if text else "</tool_result>"
    parts.append(Text(text=text))
    return parts


# ====================================================================== request


def rewrite_request(request: Request) -> Request:
    """The request as a model without function calling can take it: the tools
    described in the system prompt, and past calls and results as text in the
    call format (a copy; the original is untouched)."""
    instructions = tool_instructions(request.tools, request.tool_choice, request.parallel_tool_calls)
    system = "\n\n".join(s for s in (request.system, instructions) if s) or None
    return request.model_copy(
        update={
            "system": system,
            "messages": _rewrite_history(request.messages, request.tools),
            "tools": [],
            "tool_choice": None,
            "parallel_tool_calls": None,
        },
        deep=True,
    )


def _rewrite_history(messages: Sequence[Message], tools: Sequence[Tool]) -> list[Message]:
    """Calls and results become text; thinking is dropped (it was the
    assistant's private reasoning, and a model without tools cannot verify
    another vendor's signature anyway); then adjacent texts and same-role
    messages are merged so user and assistant alternate."""
    names = {part.id: part.name for message in messages for part in message.content if isinstance(part, ToolCall)}
    out: list[Message] = []
    for message in messages:
        parts: list[Part] = []
        for part in message.content:
            if isinstance(part, Thinking):
                continue
            if isinstance(part, ToolCall):
                parts.append(Text(text=format_call(part, tools)))
            elif isinstance(part, ToolResult):
                parts.extend(format_result(part, part.name or names.get(part.id)))
            else:
                parts.append(part.model_copy(deep=True))
        if not parts:
            continue
        if out and out[-1].role == message.role:
            out[-1] = Message(role=message.role, content=_merge_texts([*out[-1].content, *parts]))
        else:
            out.append(Message(role=message.role, content=_merge_texts(parts)))
    return out


def _merge_texts(parts: list[Part]) -> list[Part]:
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, Text) and merged and isinstance(merged[-1], Text):
            before = merged[-1].text
            merged[-1] = Text(text=before + _separator(before, part.text) + part.text)
        else:
            merged.append(part)
    return merged


def _separator(before: str, after: str) -> str:
    """One newline between consecutive calls or results (as the model should
    write them), a blank line around prose."""
    rendered_end = before.rstrip().endswith(("</tool_call>", "</tool_result>"))
    rendered_start = after.lstrip().startswith(("<tool_call", "<tool_result"))
    if not before or not after:
        return ""
    return "\n" if rendered_end and rendered_start else "\n\n"


# ====================================================================== prompt


def tool_instructions(
    tools: Sequence[Tool], choice: ToolChoice | None = None, parallel: bool | None = None
) -> str | None:
    """The system-prompt section that replaces native tools.

    Written for weak models: short sentences, the exact format with a concrete
    example, and explicit rules for the mistakes they make (inventing results,
    quoting strings, wrapping calls in fences). None without tools.
    """
    if not tools:
        return None
    mode = choice.mode if choice is not None else "auto"
    if mode == "none":
        return (
            "# Tools\n\n"
            "Do not call any tool in this answer. Reply in plain text only, and do not write "
            "<tool_call> blocks. Any <tool_call> and <tool_result> blocks earlier in this "
            "conversation are a record of tools called before, with their results."
        )
    sections = [
        "# Tools\n\n"
        "You can call the tools described below. A tool runs only when you write a call in the "
        'exact format shown under "How to call a tool". Its result comes back to you in the '
        "next message."
    ]
    for tool in tools:
        sections.append(_describe_tool(tool))
    sections.append(_format_section(tools[0]))
    sections.append(_rules(tools, mode, choice.name if choice is not None else None, parallel))
    return "\n\n".join(sections)


def _describe_tool(tool: Tool) -> str:
    lines = [f"## {tool.name}"]
    if tool.description and tool.description.strip():
        lines.append(tool.description.strip())
    properties, root = _parameters(tool)
    if properties:
        lines.append("Parameters:")
        lines.extend(_describe_properties(root, root, 0))
    else:
        lines.append("Parameters: none.")
    return "\n".join(lines)


_MAX_DEPTH = 6


def _describe_properties(schema: dict[str, Any], root: dict[str, Any], depth: int) -> list[str]:
    """One line per property, `- name (type, required): description`, with
    the fields of nested objects (and of array items that are objects)
    indented beneath it."""
    schema = _resolve(schema, root)
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    required = set(schema.get("required") or [])
    pad = "  " * depth
    lines: list[str] = []
    for key, sub in properties.items():
        sub = _resolve(sub, root) if isinstance(sub, dict) else {}
        facts = [_type_label(sub, root), "required" if key in required else "optional"]
        facts.extend(_constraints(sub))
        line = f"{pad}- {key} ({', '.join(facts)})"
        description = sub.get("description")
        if isinstance(description, str) and description.strip():
            text = description.strip().replace("\n", "\n" + pad + "  ")
            line += f": {text}"
        lines.append(line)
        if depth < _MAX_DEPTH:
            nested = _object_schema(sub, root)
            if nested is not None:
                lines.extend(_describe_properties(nested, root, depth + 1))
    return lines


def _object_schema(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema whose fields belong under this property: its own, or
    its array items'."""
    if isinstance(schema.get("properties"), dict) and schema["properties"]:
        return schema
    items = schema.get("items")
    if isinstance(items, dict):
        items = _resolve(items, root)
        if isinstance(items.get("properties"), dict) and items["properties"]:
            return items
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or []:
            if isinstance(option, dict):
                nested = _object_schema(_resolve(option, root), root)
                if nested is not None:
                    return nested
    return None


def _type_label(schema: dict[str, Any], root: dict[str, Any], depth: int = 0) -> str:
    """A readable type: `string`, `integer or null`, `array of string`,
    `object with string values`."""
    schema = _resolve(schema, root)
    if depth > _MAX_DEPTH:
        return "any"
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list) and options:
        labels: list[str] = []
        for option in options:
            if isinstance(option, dict):
                label = _type_label(option, root, depth + 1)
                if label not in labels:
                    labels.append(label)
        return " or ".join(labels) or "any"
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else sorted(_schema_types(schema, root))
    labels = []
    for each in kinds:
        if each == "array":
            items = schema.get("items")
            label = f"array of {_type_label(items, root, depth + 1)}" if isinstance(items, dict) and items else "array"
        elif each == "object" and not schema.get("properties"):
            extra = schema.get("additionalProperties")
            label = (
                f"object with {_type_label(extra, root, depth + 1)} values"
                if isinstance(extra, dict) and extra
                else "object"
            )
        else:
            label = str(each)
        if label not in labels:
            labels.append(label)
    return " or ".join(labels) or "any"


def _constraints(schema: dict[str, Any]) -> list[str]:
    facts: list[str] = []
    if isinstance(schema.get("enum"), list):
        facts.append("one of: " + ", ".join(dumps(v) for v in schema["enum"]))
    if "const" in schema:
        facts.append(f"always {dumps(schema['const'])}")
    if "default" in schema:
        facts.append(f"default: {dumps(schema['default'])}")
    for key, label in (
        ("minimum", "at least"),
        ("maximum", "at most"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ):
        if isinstance(schema.get(key), (int, float)) and not isinstance(schema.get(key), bool):
            facts.append(f"{label} {dumps(schema[key])}")
    if isinstance(schema.get("format"), str):
        facts.append(f"format {schema['format']}")
    return facts


def _format_section(tool: Tool) -> str:
    example = ToolCall(id="example", name=tool.name, arguments=_example_arguments(tool))
    return (
        "## How to call a tool\n\n"
        "To call a tool, write exactly this, with the tool's name and one <arg> line for each "
        "parameter you pass:\n\n"
        '<tool_call name="TOOL_NAME">\n'
        '<arg name="PARAMETER_NAME">VALUE</arg>\n'
        "</tool_call>\n\n"
        f"For example (made-up values):\n\n{format_call(example, [tool])}"
    )


def _example_arguments(tool: Tool) -> dict[str, Any]:
    """Values for the example call: the required parameters (or the first
    one), each with a plausible value of its type."""
    properties, root = _parameters(tool)
    required = [k for k in root.get("required") or [] if k in properties]
    keys = required or list(properties)[:1]
    return {key: _example_value(properties[key], root, 0) for key in keys}


def _example_value(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict):
        return "text"
    schema = _resolve(schema, root)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    types = _schema_types(schema, root)
    for kind in ("string", "integer", "number", "boolean", "object", "array", "null"):
        if kind not in types:
            continue
        if kind == "string":
            return "text"
        if kind in ("integer", "number"):
            low = schema.get("minimum")
            return low if isinstance(low, (int, float)) and not isinstance(low, bool) else 1
        if kind == "boolean":
            return True
        if kind == "object":
            if depth >= 3:
                return {}
            nested = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            wanted = [k for k in schema.get("required") or [] if k in nested]
            return {k: _example_value(nested[k], root, depth + 1) for k in wanted}
        if kind == "array":
            items = schema.get("items")
            return [_example_value(items, root, depth + 1)] if isinstance(items, dict) and depth < 3 else []
        return None
    return "text"


def _rules(tools: Sequence[Tool], mode: str, forced: str | None, parallel: bool | None) -> str:
    rules = [
        "Rules:",
        "- Write the call format only when you actually call a tool, never to show or explain it.",
        "- Use only the tools listed above, with their exact names. Always pass every required parameter.",
        "- Write a string value as plain text, exactly as it is, without quotes and without escaping. "
        "Write every other value (number, boolean, array, object, null) as JSON, for example "
        '<arg name="count">3</arg> or <arg name="tags">["a", "b"]</arg>.',
    ]
    if parallel is False:
        rules.append("- Call at most one tool in each answer.")
    else:
        rules.append("- To call several tools, write the calls one after another.")
    rules += [
        "- After your last call, stop writing and wait. The results come back in the next message as "
        '<tool_result name="TOOL_NAME" id="...">...</tool_result>.',
        "- Never write a <tool_result> yourself, and never invent or guess a tool's result.",
        "- Do not put calls inside code blocks.",
    ]
    if mode == "any":
        rules.append("- In this answer you must call at least one tool.")
    elif mode == "tool" and forced:
        rules.append(f"- In this answer you must call the tool {forced}.")
    else:
        rules.append("- Call a tool when it helps you answer; otherwise answer in plain text.")
    return "\n".join(rules)
