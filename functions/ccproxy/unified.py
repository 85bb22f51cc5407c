"""The unified form every request and answer passes through.

A client request is decoded into `Request`, encoded for the upstream, and the
upstream's answer comes back as a `Response` (whole) or as a sequence of
stream events (streamed), which the client's codec encodes in its protocol.

Requests and responses are pydantic models. Stream events are slotted
dataclasses: there are many of them per answer and they never need validating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

# Which protocol made an opaque value (a thinking signature, a call's
# signature): it goes back only to an upstream of that protocol. A name from
# the protocol registry; the core never reads it.
Protocol = str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- content parts


# A prompt-cache breakpoint: the upstream may cache the prompt up to and
# including the part that carries it. The dict holds its options as Anthropic
# spells them ({"type": "ephemeral", "ttl": "1h"}); upstreams without explicit
# caching ignore it.
CacheMark = dict[str, Any]


class Text(_Model):
    type: Literal["text"] = "text"
    text: str
    cache: CacheMark | None = None


class Image(_Model):
    """An image, inline (base64 `data`) or by `url`."""

    type: Literal["image"] = "image"
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    cache: CacheMark | None = None


class Document(_Model):
    """A document for the model to read: a PDF (base64 `data` or `url`) or
    plain text (`text`). `title` is the name the client gave it."""

    type: Literal["document"] = "document"
    media_type: str = "application/pdf"
    data: str | None = None
    url: str | None = None
    text: str | None = None
    title: str | None = None
    cache: CacheMark | None = None


class Thinking(_Model):
    """Reasoning text. `signature` is only meaningful to the vendor in `origin`.

    A redacted block carries its opaque payload in `signature` with
    `redacted=True` and no text.
    """

    type: Literal["thinking"] = "thinking"
    text: str = ""
    signature: str | None = None
    redacted: bool = False
    origin: Protocol | None = None


class ToolCall(_Model):
    """A call the assistant made. `signature` is a Gemini thought signature."""

    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    signature: str | None = None
    origin: Protocol | None = None


class ToolResult(_Model):
    """The answer to a ToolCall, tied to it by `id`. `name` is the tool's name
    where the client protocol gives it; codecs that need it (Gemini) recover it
    from the matching call in history when it is missing."""

    type: Literal["tool_result"] = "tool_result"
    id: str
    name: str | None = None
    content: list[Annotated[Union[Text, Image, Document], Field(discriminator="type")]] = Field(default_factory=list)
    is_error: bool = False
    cache: CacheMark | None = None


class SearchResult(_Model):
    url: str
    title: str | None = None


class ServerToolUse(_Model):
    """A tool the upstream's own servers ran (a web search): what was asked,
    the sources it found (`results`), and in history what came back in words
    any model can read (`result`)."""

    type: Literal["server_tool"] = "server_tool"
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)
    result: str | None = None
    results: list[SearchResult] = Field(default_factory=list)


Part = Annotated[
    Union[Text, Image, Document, Thinking, ToolCall, ToolResult, ServerToolUse], Field(discriminator="type")
]


Role = Literal["user", "assistant", "system"]


class Message(_Model):
    """One turn. A `system` turn is an instruction given mid-conversation:
    upstreams that take such turns keep it in place, the others fold it into
    their system prompt in order (protocols.common.fold_system_turns)."""

    role: Role
    content: list[Part] = Field(default_factory=list)


# ---------------------------------------------------------------- request


class Tool(_Model):
    """A tool the model may call. A `custom` tool (the Responses API's) takes
    one free-form string instead of JSON arguments, in the `format` the client
    gave (plain text, or a grammar); its calls carry that string as
    `arguments["input"]`, whatever protocol they crossed."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    cache: CacheMark | None = None
    kind: Literal["function", "custom"] = "function"
    format: dict[str, Any] | None = None


class ServerTool(_Model):
    """A tool the upstream runs itself (`kind`: web_search, web_fetch,
    code_execution, ...). `options` are the client's settings for it
    (allowed domains, max uses); `wire` is the client's own definition, for
    an upstream of the same protocol."""

    kind: str
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    wire: dict[str, Any] = Field(default_factory=dict)


class ToolChoice(_Model):
    """auto: the model decides; any: it must call some tool; tool: it must call
    `name`; none: it must not call tools."""

    mode: Literal["auto", "any", "tool", "none"] = "auto"
    name: str | None = None


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    name: str | None = None
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Reasoning(_Model):
    """What the client asked of the model's thinking.

    enabled: None means the client said nothing (upstream default).
    effort: none|minimal|low|medium|high|xhigh|max where the client used levels.
    budget_tokens: a token budget where the client used one.
    include_thoughts: whether thinking should be returned to the client.
    """

    enabled: bool | None = None
    effort: str | None = None
    budget_tokens: int | None = None
    include_thoughts: bool = True


class Request(_Model):
    model: str
    system: str | None = None
    # A cache breakpoint at the end of the system prompt.
    system_cache: CacheMark | None = None
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] = Field(default_factory=list)
    server_tools: list[ServerTool] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    stream: bool = False
    # Whether a streamed answer should report usage (OpenAI's
    # stream_options.include_usage; the other protocols always do).
    stream_usage: bool = True
    # Optional protocol features the client turned on (Anthropic's
    # anthropic-beta flags); an upstream that knows them may send them on.
    betas: list[str] = Field(default_factory=list)
    # Facts about the client's request that only its own codec reads back when
    # it encodes the answer (for instance Ollama's /api/generate endpoint).
    client_state: dict[str, Any] = Field(default_factory=dict)
    # Conversations the proxy keeps (the Responses API's stored responses):
    # the id of a stored answer whose conversation this request continues,
    # whether this answer is to be stored for a later request to continue,
    # and the id the answer is given (set by the proxy before the answer is
    # encoded, so that the stored record and the client's answer agree).
    continues: str | None = None
    store: bool = False
    answer_id: str | None = None


# ---------------------------------------------------------------- response

StopReason = Literal[
    "end_turn",  # natural end
    "max_tokens",  # output limit reached
    "stop_sequence",  # a client stop sequence matched (Response.stop_sequence)
    "tool_use",  # the turn ends with tool calls
    "refusal",  # content filter / safety
    "pause_turn",  # Anthropic server-tool pause
    "context_window",  # the model's context window is full
    "other",  # anything else the upstream reported
]


class Usage(_Model):
    """Token counts. None means "not reported" so partial updates can merge.

    input_tokens is the whole prompt, cached parts included; output_tokens
    includes reasoning tokens.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None

    def merged(self, newer: "Usage") -> "Usage":
        """This usage updated by the fields `newer` reports."""
        data = dict(self)
        for key, value in newer:
            if value is not None:
                data[key] = value
        return Usage.model_construct(**data)  # both sides are validated already


class Response(_Model):
    id: str | None = None
    model: str | None = None
    content: list[Annotated[Union[Text, Thinking, ToolCall, ServerToolUse], Field(discriminator="type")]] = Field(
        default_factory=list
    )
    stop_reason: StopReason = "end_turn"
    stop_sequence: str | None = None
    usage: Usage = Field(default_factory=Usage)


# ---------------------------------------------------------------- embeddings


class EmbedRequest(_Model):
    model: str
    inputs: list[str]
    dimensions: int | None = None
    client_state: dict[str, Any] = Field(default_factory=dict)


class EmbedResponse(_Model):
    model: str | None = None
    vectors: list[list[float]]
    input_tokens: int | None = None


# ---------------------------------------------------------------- stream events
#
# An upstream stream decodes into these, in order:
#   Start, then any of TextDelta / ThinkingDelta / ThinkingSignature /
#   RedactedThinking / ToolCallStart / ToolCallDelta / ToolCallEnd / ServerToolRun / UsageUpdate,
#   then Finish (and possibly more UsageUpdate), or StreamError at any point.
# Tool calls are numbered by `index` from 0 in order of their ToolCallStart.
# Every ToolCallStart is followed by its ToolCallEnd before Finish.


@dataclass(slots=True)
class Start:
    id: str | None = None
    model: str | None = None


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ThinkingDelta:
    text: str


@dataclass(slots=True)
class ThinkingSignature:
    """Ends the current thinking block with its signature."""

    signature: str
    origin: Protocol | None = None


@dataclass(slots=True)
class RedactedThinking:
    data: str
    origin: Protocol | None = None


@dataclass(slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str
    signature: str | None = None  # Gemini thought signature of this call
    origin: Protocol | None = None


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of the call's arguments as JSON text. A codec whose upstream
    sends whole arguments emits exactly one delta with the full JSON."""

    index: int
    arguments: str


@dataclass(slots=True)
class ToolCallEnd:
    index: int


@dataclass(slots=True)
class ServerToolRun:
    """The upstream ran one of its own tools (a web search) and found these
    sources; comes whole, wherever the upstream reported it."""

    use: ServerToolUse


@dataclass(slots=True)
class UsageUpdate:
    """Usage so far; fields that are set replace earlier values."""

    usage: Usage


@dataclass(slots=True)
class Finish:
    stop_reason: StopReason
    stop_sequence: str | None = None


@dataclass(slots=True)
class StreamError:
    error: Any  # a ProxyError; typed loosely to keep this module import-light


StreamEvent = Union[
    Start,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    RedactedThinking,
    ToolCallStart,
    ToolCallDelta,
    ToolCallEnd,
    ServerToolRun,
    UsageUpdate,
    Finish,
    StreamError,
]


@dataclass(slots=True)
class _OpenCall:
    id: str
    name: str
    signature: str | None
    origin: Protocol | None
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _OpenText:
    pieces: list[str]


@dataclass(slots=True)
class _OpenThinking:
    pieces: list[str]
    signature: str | None = None
    origin: Protocol | None = None
    redacted: bool = False


class Accumulator:
    """Folds stream events into a whole Response (for logs, compat mode and
    clients that asked for a whole answer from a streaming path).

    It runs on every event of every stream, so it folds into plain lists and
    builds the pydantic Response only when `response` is read."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._model: str | None = None
        self._parts: list[_OpenText | _OpenThinking | ToolCall | ServerToolUse] = []
        self._calls: dict[int, _OpenCall] = {}
        self._usage: dict[str, int] = {}
        self._stop: tuple[StopReason, str | None] = ("end_turn", None)
        self._built: Response | None = None
        self.error: Any = None

    def add(self, event: StreamEvent) -> None:
        self._built = None
        parts = self._parts
        match event:
            case TextDelta(text=text):
                if parts and type(parts[-1]) is _OpenText:
                    parts[-1].pieces.append(text)
                else:
                    parts.append(_OpenText([text]))
            case UsageUpdate(usage=usage):
                for name, value in usage:
                    if value is not None:
                        self._usage[name] = value
            case ThinkingDelta(text=text):
                if self._open_thinking() is not None:
                    parts[-1].pieces.append(text)  # type: ignore[union-attr]
                else:
                    parts.append(_OpenThinking([text]))
            case ThinkingSignature(signature=sig, origin=origin):
                last = self._open_thinking()
                if last is not None:
                    last.signature, last.origin = sig, origin
                else:
                    parts.append(_OpenThinking([], sig, origin))
            case RedactedThinking(data=data, origin=origin):
                parts.append(_OpenThinking([], data, origin, redacted=True))
            case Start(id=id_, model=model):
                self._id = id_ or self._id
                self._model = model or self._model
            case ToolCallStart(index=i, id=id_, name=name, signature=sig, origin=origin):
                self._calls[i] = _OpenCall(id_, name, sig, origin)
            case ToolCallDelta(index=i, arguments=args):
                if i in self._calls:
                    self._calls[i].arguments.append(args)
            case ToolCallEnd(index=i):
                call = self._calls.pop(i, None)
                if call is not None:
                    parts.append(_finished_call(call))
            case Finish(stop_reason=reason, stop_sequence=seq):
                for i in sorted(self._calls):
                    parts.append(_finished_call(self._calls.pop(i)))
                self._stop = (reason, seq)
            case ServerToolRun(use=use):
                parts.append(use)
            case StreamError(error=err):
                self.error = err

    def _open_thinking(self) -> _OpenThinking | None:
        """The thinking block still taking text: not signed, not redacted."""
        last = self._parts[-1] if self._parts else None
        if type(last) is _OpenThinking and not last.redacted and last.signature is None:
            return last
        return None

    @property
    def response(self) -> Response:
        if self._built is None:
            content: list[Text | Thinking | ToolCall | ServerToolUse] = []
            for part in self._parts:
                if type(part) is _OpenText:
                    content.append(Text(text="".join(part.pieces)))
                elif type(part) is _OpenThinking:
                    content.append(
                        Thinking(
                            text="".join(part.pieces),
                            signature=part.signature,
                            redacted=part.redacted,
                            origin=part.origin,
                        )
                    )
                else:
                    content.append(part)  # type: ignore[arg-type]  # ToolCall or ServerToolUse, whole already
            self._built = Response(
                id=self._id,
                model=self._model,
                content=content,
                stop_reason=self._stop[0],
                stop_sequence=self._stop[1],
                usage=Usage(**self._usage),
            )
        return self._built


def _finished_call(call: _OpenCall) -> ToolCall:
    from .jsonutil import loads_object

    return ToolCall(
        id=call.id,
        name=call.name,
        arguments=loads_object("".join(call.arguments)),
        signature=call.signature,
        origin=call.origin,
    )
