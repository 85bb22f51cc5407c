"""What both halves of the OpenAI Responses API share: the wire models of a
client's request, the stop and error tables, the packing of reasoning
signatures, and the conversions (usage, tools, formats) that go both ways."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import ProxyError, status_for_kind
from ...jsonutil import dumps, loads
from ...unified import (
    Document,
    Image,
    ResponseFormat,
    ServerTool,
    StopReason,
    Text,
    Thinking,
    Tool,
    ToolChoice,
    Usage,
)
from ..common import CUSTOM_INPUT, data_url, document_text
from ..openai.wire import KIND_BY_TYPE

PROTOCOL = "responses"

# ---------------------------------------------------------------- wire models (client requests)

# The models keep their leading underscores: pydantic names the class in its
# validation messages, which clients see.


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class _ReasoningIn(_Wire):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None  # the older name of `summary`


class _TextIn(_Wire):
    format: dict[str, Any] | None = None
    verbosity: str | None = None


class _ResponsesRequest(_Wire):
    model: str
    input: str | list[Any] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    reasoning: _ReasoningIn | None = None
    text: _TextIn | None = None
    stream: bool | None = False
    store: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    user: str | None = None
    service_tier: str | None = None


class _MessageItem(_Wire):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]


class _FunctionCallItem(_Wire):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str | dict[str, Any] = ""


class _CustomCallItem(_Wire):
    type: Literal["custom_tool_call"]
    call_id: str
    name: str
    input: str


class _CallOutputItem(_Wire):
    type: Literal["function_call_output", "custom_tool_call_output"]
    call_id: str
    output: str | list[dict[str, Any]]


class _SummaryPart(_Wire):
    type: Literal["summary_text"] = "summary_text"
    text: str


class _ReasoningItem(_Wire):
    type: Literal["reasoning"]
    id: str | None = None  # Codex leaves it out
    summary: list[_SummaryPart] = Field(default_factory=list)
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None


class _WebSearchItem(_Wire):
    type: Literal["web_search_call"]
    id: str | None = None
    action: dict[str, Any] | None = None


class _CompactionItem(_Wire):
    type: Literal["compaction", "compaction_summary"]  # Codex reads the older name too
    id: str | None = None
    encrypted_content: str


M = TypeVar("M", bound=BaseModel)


def validate_item(model: type[M], raw: Any, where: str) -> M:
    """One input item parsed with its wire model; a bad one is a 400 naming
    the item's field as `where.field`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [".".join([where, *map(str, err["loc"])]) + ": " + err["msg"] for err in errors[:5]]
        param = ".".join([where, *map(str, errors[0]["loc"])]) if errors else where
        raise ProxyError(400, "invalid request: " + "; ".join(problems), kind="invalid_request", param=param) from None


# ---------------------------------------------------------------- the client's facts

# The key in Request.client_state under which the client half keeps what it
# read beyond the unified fields (include, summary, metadata, strict tool
# names, built-in tool definitions...), for its answer's echo and for a
# Responses upstream.
STATE = PROTOCOL


def client_facts(request: Any) -> dict[str, Any]:
    facts = request.client_state.get(STATE)
    return facts if isinstance(facts, dict) else {}


# Summaries the API writes; "none" or no summary shows the client no thinking.
SUMMARIES = ("auto", "concise", "detailed")
ENCRYPTED = "reasoning.encrypted_content"

# ---------------------------------------------------------------- ids

# Item ids the API gives, by item type.
ID_PREFIX = {
    "response": "resp_",
    "message": "msg_",
    "reasoning": "rs_",
    "function_call": "fc_",
    "custom_tool_call": "ctc_",
    "web_search_call": "ws_",
    "compaction": "cmp_",
}


def new_id(kind: str) -> str:
    """An id in the API's own form: a prefix by kind, then 48 hex digits."""
    return ID_PREFIX[kind] + secrets.token_hex(24)


# ---------------------------------------------------------------- stops, statuses and errors

# An answer that stopped short is `incomplete`, with one of these reasons.
INCOMPLETE_BY_STOP: dict[str, str] = {
    "max_tokens": "max_output_tokens",
    "context_window": "max_output_tokens",
    "refusal": "content_filter",
}
STOP_BY_INCOMPLETE: dict[str, StopReason] = {"max_output_tokens": "max_tokens", "content_filter": "refusal"}

# Error codes of failed responses and error events, by the HTTP status the
# same error has before a stream begins. Codex reads some of them
# (context_length_exceeded, insufficient_quota, rate_limit_exceeded).
STATUS_BY_CODE = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "context_length_exceeded": 400,
    "invalid_prompt": 400,
    "invalid_request_error": 400,
    "server_error": 500,
}
CODE_BY_KIND = {"rate_limit": "rate_limit_exceeded", "invalid_request": "invalid_prompt"}


def error_code(error: ProxyError) -> str:
    """The code a failed response carries for `error`: its own where it has
    one (an upstream's context_length_exceeded passes through), else one by
    its kind."""
    return error.code or CODE_BY_KIND.get(error.kind, "server_error")


def error_from(raw: Any, fallback: str = "upstream error") -> ProxyError:
    """A failed response's `error` object, or an error event, as a ProxyError."""
    if not isinstance(raw, dict):
        return ProxyError(502, str(raw) if raw else fallback)
    code = raw.get("code") if isinstance(raw.get("code"), str) else None
    kind = KIND_BY_TYPE.get(str(raw.get("type")))
    status = STATUS_BY_CODE.get(code or "") or (status_for_kind(kind) if kind else 500)
    return ProxyError(status, str(raw.get("message") or fallback), code=code, param=raw.get("param"))


# ---------------------------------------------------------------- reasoning signatures
#
# A reasoning item's encrypted_content is meaningful to the upstream that
# made it, and only where the item's id goes with it; the unified signature
# of a Responses upstream's reasoning holds both, as JSON.
#
# Thinking from another vendor (a Claude signature, a Gemini thought
# signature) reaches a Responses client as a reasoning item whose
# encrypted_content is MARK followed by JSON: the origin ("o"), the signature
# ("s"), the thinking text where the item's summary does not carry it ("t":
# Claude checks the text against the signature), "r" for redacted thinking
# and "c" for a signature that belongs to the tool call after the item.


def pack_reasoning(item_id: str | None, encrypted: str) -> str:
    return dumps({"id": item_id, "encrypted_content": encrypted})


def unpack_reasoning(signature: str) -> tuple[str | None, str]:
    """The item id (None where it was not known) and encrypted_content of a
    packed signature; a signature that is not packed is the content itself."""
    try:
        value = loads(signature)
    except ValueError:
        return None, signature
    if not isinstance(value, dict) or not isinstance(value.get("encrypted_content"), str):
        return None, signature
    item_id = value.get("id")
    return (item_id if isinstance(item_id, str) else None), value["encrypted_content"]


MARK = "ccproxy:"


@dataclass(frozen=True, slots=True)
class Foreign:
    """Another vendor's thinking as a reasoning item carries it."""

    signature: str
    origin: str | None
    text: str | None = None
    redacted: bool = False
    on_call: bool = False


def mark_foreign(foreign: Foreign) -> str:
    value: dict[str, Any] = {"o": foreign.origin or "", "s": foreign.signature}
    if foreign.text:
        value["t"] = foreign.text
    if foreign.redacted:
        value["r"] = 1
    if foreign.on_call:
        value["c"] = 1
    return MARK + dumps(value)


def _marked(encrypted: str) -> Any:
    """The JSON after MARK; None where the content is not ours."""
    if not encrypted.startswith(MARK):
        return None
    try:
        return loads(encrypted[len(MARK) :])
    except ValueError:
        return None


def read_mark(encrypted: str) -> Foreign | None:
    """The foreign thinking a marked encrypted_content holds; None where it
    is not marked (a Responses upstream's own)."""
    value = _marked(encrypted)
    if not isinstance(value, dict) or not isinstance(value.get("s"), str):
        return None
    text = value.get("t")
    return Foreign(
        signature=value["s"],
        origin=str(value.get("o") or "") or None,
        text=text if isinstance(text, str) else None,
        redacted=bool(value.get("r")),
        on_call=bool(value.get("c")),
    )


# ---------------------------------------------------------------- compaction
#
# Where the upstream has no compaction of its own, the proxy has the model
# summarize the conversation; the summary reaches the client in a compaction
# item whose encrypted_content is MARK followed by JSON ({"summary": text}),
# and comes back from it as a system turn that any upstream reads. A
# compaction item the API itself made is opaque.

SUMMARY_HEADING = "Summary of the conversation so far:"


def mark_summary(summary: str) -> str:
    return MARK + dumps({"summary": summary})


def read_summary(encrypted: str) -> str | None:
    """The summary a marked compaction holds; None where it is not marked
    (the API's own)."""
    value = _marked(encrypted)
    summary = value.get("summary") if isinstance(value, dict) else None
    return summary if isinstance(summary, str) else None


def summary_text(summary: str) -> str:
    """A marked compaction's summary as the text of the turn it becomes."""
    return f"{SUMMARY_HEADING}\n\n{summary}"


# A compaction the API made can go back only to a Responses upstream. It
# crosses the unified form as redacted thinking of this protocol (no
# Responses reasoning is ever redacted, so the two cannot be confused): every
# other upstream already leaves out an opaque value of another protocol's
# origin, as it does a foreign reasoning signature, so nothing else needs to
# know of it. The price: they leave it out without a note in left_out, which
# each of them would have to look for.


def opaque_compaction(encrypted: str) -> Thinking:
    return Thinking(signature=encrypted, redacted=True, origin=PROTOCOL)


def compaction_of(part: Thinking) -> str | None:
    """The encrypted_content of an opaque compaction; None for thinking."""
    if part.origin == PROTOCOL and part.redacted and part.signature:
        return part.signature
    return None


def client_encrypted(signature: str, origin: str | None, text: str | None = None, **flags: bool) -> str:
    """A signature as a Responses client gets it in encrypted_content: a
    Responses upstream's own content as it was, another vendor's marked.
    `text` is the thinking text, for marks whose item shows no summary."""
    if origin == PROTOCOL:
        return unpack_reasoning(signature)[1]
    return mark_foreign(Foreign(signature, origin, text, **flags))


# ---------------------------------------------------------------- usage


def usage_json(usage: Usage) -> dict[str, Any]:
    """input_tokens is the whole prompt, cached tokens included, as unified."""
    prompt = usage.input_tokens or 0
    output = usage.output_tokens or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens or 0,
            "cache_write_tokens": usage.cache_write_tokens or 0,
        },
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": prompt + output,
    }


def usage_from(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("input_tokens_details") or {}
    output_details = raw.get("output_tokens_details") or {}
    return Usage(
        input_tokens=raw.get("input_tokens"),
        output_tokens=raw.get("output_tokens"),
        cache_read_tokens=details.get("cached_tokens"),
        cache_write_tokens=details.get("cache_write_tokens") or None,
        reasoning_tokens=output_details.get("reasoning_tokens"),
    )


# ---------------------------------------------------------------- content


def input_part(part: Text | Image | Document) -> dict[str, Any]:
    """A user's content part as the API takes it in input."""
    if isinstance(part, Image):
        return {"type": "input_image", "image_url": data_url(part), "detail": "auto"}
    if isinstance(part, Document):
        if part.text is not None:
            return {"type": "input_text", "text": document_text(part)}
        if part.data is not None:
            return {
                "type": "input_file",
                "filename": part.title or "document.pdf",
                "file_data": f"data:{part.media_type};base64,{part.data}",
            }
        return {"type": "input_file", "file_url": part.url or ""}
    return {"type": "input_text", "text": part.text}


# ---------------------------------------------------------------- tools and formats

# The built-in tools the API runs itself whose unified kind differs from
# their type; every other built-in type is its own kind.
KIND_BY_TYPE_NAME = {
    "web_search_preview": "web_search",
    "web_search_preview_2025_03_11": "web_search",
    "web_search_2025_08_26": "web_search",
}


def builtin_kind(tool_type: str) -> str:
    return KIND_BY_TYPE_NAME.get(tool_type, tool_type)


def tool_json(tool: Tool, strict: bool = False) -> dict[str, Any]:
    """A tool as the API takes it: flat, not nested under "function".
    `strict` is sent always: the API makes function tools strict when it is
    missing, and strict schemas must close every object."""
    if tool.kind == "custom":
        body: dict[str, Any] = {"type": "custom", "name": tool.name}
        if tool.description:
            body["description"] = tool.description
        body["format"] = tool.format or {"type": "text"}
        return body
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": strict,
    }


def web_search_json(tool: ServerTool) -> dict[str, Any]:
    """A web search from another protocol's client as the API's built-in
    tool: the options the two have in common (allowed domains, an
    approximate user location) carried over."""
    body: dict[str, Any] = {"type": "web_search"}
    domains = tool.options.get("allowed_domains")
    if isinstance(domains, list) and domains:
        body["filters"] = {"allowed_domains": domains}
    location = tool.options.get("user_location")
    if isinstance(location, dict) and location.get("type") == "approximate":
        body["user_location"] = location
    return body


def tool_choice_json(choice: ToolChoice | None, tools: list[Tool]) -> str | dict[str, Any]:
    if choice is None or choice.mode == "auto":
        return "auto"
    if choice.mode == "any":
        return "required"
    if choice.mode == "none":
        return "none"
    custom = any(t.name == choice.name and t.kind == "custom" for t in tools)
    return {"type": "custom" if custom else "function", "name": choice.name or ""}


def text_format_json(fmt: ResponseFormat | None) -> dict[str, Any]:
    if fmt is None or fmt.type == "text":
        return {"type": "text"}
    if fmt.type == "json_object":
        return {"type": "json_object"}
    body: dict[str, Any] = {"type": "json_schema", "name": fmt.name or "response", "schema": fmt.schema_ or {}}
    if fmt.strict is not None:
        body["strict"] = fmt.strict
    return body


def custom_input(arguments: dict[str, Any]) -> str:
    """The string a custom tool's call carries, from unified arguments: its
    `input`, or, from a model that answered with other arguments, the one
    string it gave or the whole arguments as JSON."""
    value = arguments.get(CUSTOM_INPUT)
    if isinstance(value, str):
        return value
    if "_raw" in arguments and isinstance(arguments["_raw"], str):
        return arguments["_raw"]
    strings = [v for v in arguments.values() if isinstance(v, str)]
    if len(arguments) == 1 and strings:
        return strings[0]
    return dumps(arguments) if arguments else ""
