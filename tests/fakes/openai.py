"""Fake OpenAI Chat Completions upstream.

Answers like an OpenAI-compatible server that also streams DeepSeek-style
`reasoning_content` (A.8), since that is the only way Chat Completions
carries reasoning. Validation follows what the real API rejects (A.2).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .base import Context, Dialect, Endpoint, ErrorKind, Recorded, Rejection, StreamPlan, dumps
from .checks import Problems, is_int, join, kind
from .scenarios import (
    CACHED_TOKENS,
    CALL_IDS,
    EMBEDDING,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    Turn,
    pieces,
)

CREATED = 1700000000
COMPLETION_ID = "chatcmpl-fake0123456789"

# A.2: the documented request fields; the real API refuses anything else
# ("Unrecognized request argument supplied: X").
TOP_LEVEL = {
    "model", "messages", "max_completion_tokens", "max_tokens", "temperature", "top_p", "stop", "n", "stream",
    "stream_options", "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "safety_identifier",
    "metadata", "store", "service_tier", "modalities", "audio", "prediction", "prompt_cache_key", "verbosity",
    "web_search_options", "functions", "function_call",
}  # fmt: skip
ROLES = ("system", "developer", "user", "assistant", "tool")
MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal", "audio", "function_call", "reasoning_content"},
    "tool": {"role", "content", "tool_call_id"},
}
USER_PART_TYPES = ("text", "image_url", "input_audio", "file")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
MAX_TOOL_CALL_ID = 40

ERROR_TYPES: dict[ErrorKind, tuple[str, str | None]] = {
    "invalid": ("invalid_request_error", None),
    "auth": ("invalid_request_error", "invalid_api_key"),
    "not_found": ("invalid_request_error", "unknown_url"),
    "rate_limit": ("rate_limit_error", "rate_limit_exceeded"),
    "server": ("server_error", None),
    "overloaded": ("server_error", "overloaded"),
    "unavailable": ("server_error", "service_unavailable"),
}


# -- validation ---------------------------------------------------------------


def validate(body: dict[str, Any]) -> list[str]:
    """Every reason OpenAI would refuse this chat completion request."""
    p = Problems()
    p.unknown_keys(body, TOP_LEVEL, "", "unrecognized request argument supplied")
    p.string(body, "model", "", required=True, nonempty=True)
    messages = p.array(body, "messages", "", required=True, nonempty=True)
    if messages:
        _messages(p, messages)
    tool_names = _tools(p, body)
    _tool_choice(p, body, tool_names)
    if body.get("parallel_tool_calls") is not None and not body.get("tools"):
        p.add("parallel_tool_calls", "is only allowed when 'tools' are specified")
    p.boolean(body, "parallel_tool_calls", "")
    p.number(body, "temperature", "", 0, 2)
    p.number(body, "top_p", "", 0, 1)
    p.number(body, "presence_penalty", "", -2, 2)
    p.number(body, "frequency_penalty", "", -2, 2)
    p.integer(body, "n", "", low=1)
    p.integer(body, "seed", "")
    for key in ("max_tokens", "max_completion_tokens"):
        p.integer(body, key, "", low=1)
    _stop(p, body.get("stop"))
    p.boolean(body, "stream", "")
    options = p.obj(body, "stream_options", "")
    if options is not None:
        if body.get("stream") is not True:
            p.add("stream_options", "is only allowed when 'stream' is true")
        p.unknown_keys(options, ("include_usage", "include_obfuscation"), "stream_options")
        p.boolean(options, "include_usage", "stream_options")
        p.boolean(options, "include_obfuscation", "stream_options")
    p.one_of(body, "reasoning_effort", "", REASONING_EFFORTS)
    _response_format(p, body)
    p.boolean(body, "logprobs", "")
    if body.get("top_logprobs") is not None:
        p.integer(body, "top_logprobs", "", low=0)
        if not body.get("logprobs"):
            p.add("top_logprobs", "requires 'logprobs' to be true")
    return p.items


def _messages(p: Problems, messages: list[Any]) -> None:
    """Roles, content shapes, tool-call shapes and the tool-call/answer order:
    each assistant tool call must be answered by tool messages right after it."""
    known_ids: set[str] = set()
    pending: list[str] = []  # ids of the last assistant message still unanswered
    for i, message in enumerate(messages):
        path = join("messages", i)
        if not isinstance(message, dict):
            p.add(path, f"must be an object, got {kind(message)}")
            continue
        role = p.one_of(message, "role", path, ROLES, required=True)
        if role not in ROLES:
            continue
        p.unknown_keys(message, MESSAGE_KEYS[role], path)
        if role != "tool" and pending:
            p.add(path, f"an assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'; missing: {pending}")
            pending = []
        if role in ("system", "developer"):
            _content(p, message, path, ("text",), required=True)
        elif role == "user":
            _content(p, message, path, USER_PART_TYPES, required=True)
        elif role == "assistant":
            calls = message.get("tool_calls")
            _content(p, message, path, ("text", "refusal"), required=not calls and not message.get("function_call"))
            pending = _tool_calls(p, message, path)
            known_ids.update(pending)
        else:
            _content(p, message, path, ("text",), required=True)
            call_id = p.string(message, "tool_call_id", path, required=True)
            if call_id is None:
                continue
            if call_id in pending:
                pending.remove(call_id)
            elif call_id in known_ids:
                p.add(join(path, "tool_call_id"), f"{call_id!r} answers a tool call that is not the preceding assistant message's")
            else:
                p.add(path, "messages with role 'tool' must be a response to a preceding message with 'tool_calls'"
                      f" (no tool call has id {call_id!r})")  # fmt: skip
    if pending:
        p.add("messages", f"tool calls without tool messages answering them: {pending}")


def _content(p: Problems, message: dict[str, Any], path: str, part_types: tuple[str, ...], *, required: bool) -> None:
    cpath = join(path, "content")
    content = message.get("content")
    if content is None:
        if required:
            p.add(cpath, "field required (only an assistant message with tool_calls may omit it)")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        p.add(cpath, f"must be a string or an array of content parts, got {kind(content)}")
        return
    if not content:
        p.add(cpath, "an array of content parts must not be empty")
    for j, part in enumerate(content):
        ppath = join(cpath, j)
        if not isinstance(part, dict):
            p.add(ppath, f"must be an object, got {kind(part)}")
            continue
        ptype = p.one_of(part, "type", ppath, part_types, required=True)
        if ptype == "text":
            p.string(part, "text", ppath, required=True)
        elif ptype == "refusal":
            p.string(part, "refusal", ppath, required=True)
        elif ptype == "image_url":
            image = p.obj(part, "image_url", ppath, required=True)
            if image is not None:
                url = p.string(image, "url", join(ppath, "image_url"), required=True, nonempty=True)
                if url and not url.startswith(("http://", "https://", "data:image/")):
                    p.add(join(ppath, "image_url.url"), "must be an http(s) URL or a data:image/...;base64 URL")
                p.one_of(image, "detail", join(ppath, "image_url"), ("auto", "low", "high"))
        elif ptype == "input_audio":
            audio = p.obj(part, "input_audio", ppath, required=True)
            if audio is not None:
                p.string(audio, "data", join(ppath, "input_audio"), required=True)
                p.one_of(audio, "format", join(ppath, "input_audio"), ("wav", "mp3"), required=True)
        elif ptype == "file":
            p.obj(part, "file", ppath, required=True)


def _tool_calls(p: Problems, message: dict[str, Any], path: str) -> list[str]:
    """Check an assistant message's tool_calls; return their ids."""
    calls = p.array(message, "tool_calls", path)
    if calls is None:
        return []
    if not calls:
        p.add(join(path, "tool_calls"), "[] is too short (omit tool_calls instead)")
    ids = []
    for k, call in enumerate(calls):
        cpath = join(join(path, "tool_calls"), k)
        if not isinstance(call, dict):
            p.add(cpath, f"must be an object, got {kind(call)}")
            continue
        p.unknown_keys(call, ("id", "type", "function"), cpath)
        call_id = p.string(call, "id", cpath, required=True, nonempty=True)
        if call_id:
            if len(call_id) > MAX_TOOL_CALL_ID:
                p.add(join(cpath, "id"), f"string too long. Expected a string with maximum length {MAX_TOOL_CALL_ID}, but got a string with length {len(call_id)}")
            if call_id in ids:
                p.add(join(cpath, "id"), f"duplicate tool call id {call_id!r}")
            ids.append(call_id)
        p.one_of(call, "type", cpath, ("function",), required=True)
        function = p.obj(call, "function", cpath, required=True)
        if function is None:
            continue
        fpath = join(cpath, "function")
        p.unknown_keys(function, ("name", "arguments"), fpath)
        p.string(function, "name", fpath, required=True, nonempty=True)
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            p.add(join(fpath, "arguments"), f"must be a JSON-encoded string, got {kind(arguments)}")
            continue
        try:
            json.loads(arguments)
        except ValueError:
            p.add(join(fpath, "arguments"), f"is not valid JSON: {arguments!r}")
    return ids


def _tools(p: Problems, body: dict[str, Any]) -> set[str]:
    tools = p.array(body, "tools", "")
    names: set[str] = set()
    for i, tool in enumerate(tools or []):
        path = join("tools", i)
        if not isinstance(tool, dict):
            p.add(path, f"must be an object, got {kind(tool)}")
            continue
        p.unknown_keys(tool, ("type", "function"), path)
        p.one_of(tool, "type", path, ("function",), required=True)
        function = p.obj(tool, "function", path, required=True)
        if function is None:
            continue
        fpath = join(path, "function")
        p.unknown_keys(function, ("name", "description", "parameters", "strict"), fpath)
        name = p.string(function, "name", fpath, required=True)
        if name is not None:
            if not TOOL_NAME.match(name):
                p.add(join(fpath, "name"), f"{name!r} does not match '^[a-zA-Z0-9_-]{{1,64}}$'")
            names.add(name)
        p.string(function, "description", fpath)
        parameters = p.obj(function, "parameters", fpath)
        if parameters is not None and parameters.get("type", "object") != "object":
            p.add(join(fpath, "parameters"), "must be a JSON Schema of type 'object'")
        p.boolean(function, "strict", fpath)
    return names


def _tool_choice(p: Problems, body: dict[str, Any], tool_names: set[str]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not body.get("tools"):
        p.add("tool_choice", "is only allowed when 'tools' are specified")
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            p.add("tool_choice", f"{choice!r} is not one of ['none', 'auto', 'required']")
        return
    if not isinstance(choice, dict):
        p.add("tool_choice", f"must be a string or an object, got {kind(choice)}")
        return
    ctype = p.one_of(choice, "type", "tool_choice", ("function", "allowed_tools", "custom"), required=True)
    if ctype == "function":
        function = p.obj(choice, "function", "tool_choice", required=True)
        if function is not None:
            name = p.string(function, "name", "tool_choice.function", required=True)
            if name and tool_names and name not in tool_names:
                p.add("tool_choice.function.name", f"{name!r} is not one of the tools")


def _stop(p: Problems, stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        p.add("stop", "must be a string or an array of strings")
    elif len(stop) > 4:
        p.add("stop", f"at most 4 stop sequences are allowed, got {len(stop)}")


def _response_format(p: Problems, body: dict[str, Any]) -> None:
    fmt = p.obj(body, "response_format", "")
    if fmt is None:
        return
    ftype = p.one_of(fmt, "type", "response_format", ("text", "json_object", "json_schema"), required=True)
    if ftype == "json_schema":
        schema = p.obj(fmt, "json_schema", "response_format", required=True)
        if schema is not None:
            p.string(schema, "name", "response_format.json_schema", required=True)


def validate_embeddings(body: dict[str, Any]) -> list[str]:
    p = Problems()
    p.unknown_keys(body, ("model", "input", "encoding_format", "dimensions", "user"), "", "unrecognized request argument supplied")
    p.string(body, "model", "", required=True, nonempty=True)
    value = body.get("input")
    if value is None:
        p.add("input", "field required")
    elif not (isinstance(value, str) or (isinstance(value, list) and value)):
        p.add("input", "must be a string or a non-empty array")
    p.one_of(body, "encoding_format", "", ("float", "base64"))
    return p.items


# -- rendering ------------------------------------------------------------------


def usage(turn: Turn) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": PROMPT_TOKENS + OUTPUT_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": turn.thinking_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def finish_reason(turn: Turn) -> str:
    return "tool_calls" if turn.calls else "stop"


class OpenAIDialect(Dialect):
    name = "openai"

    def match(self, method: str, path: str, query: dict[str, str]) -> Endpoint | None:
        if method != "POST":
            return None
        if path.endswith("/chat/completions"):
            return Endpoint("chat/completions", "generate")
        if path.endswith("/embeddings"):
            return Endpoint("embeddings", "embed")
        return None

    def check_headers(self, request: Recorded, key: str | None) -> Rejection | None:
        if key is None:
            return None
        auth = request.headers.get("authorization", "")
        if not auth:
            return Rejection(401, "auth", "You didn't provide an API key.", "openai: no Authorization header")
        if auth != f"Bearer {key}":
            return Rejection(401, "auth", "Incorrect API key provided.", f"openai: wrong Authorization header {auth[:24]!r}...")
        return None

    def validate(self, endpoint: Endpoint, body: Any, request: Recorded) -> list[str]:
        return validate(body) if endpoint.kind == "generate" else validate_embeddings(body)

    def wants_stream(self, endpoint: Endpoint, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def error_body(self, status: int, kind: ErrorKind, message: str, **extra: Any) -> Any:
        etype, code = ERROR_TYPES[kind]
        return {"error": {"message": message, "type": etype, "param": None, "code": code}}

    def whole(self, ctx: Context, turn: Turn) -> Any:
        ids = CALL_IDS["openai"]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": turn.text or None,
            "refusal": None,
            "annotations": [],
        }
        if turn.thinking:
            message["reasoning_content"] = turn.thinking
        if turn.calls:
            message["tool_calls"] = [
                {"id": ids[k], "type": "function", "function": {"name": c.name, "arguments": dumps(c.args)}}
                for k, c in enumerate(turn.calls)
            ]
        return {
            "id": COMPLETION_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": ctx.model,
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(turn)}],
            "usage": usage(turn),
        }

    def stream_plan(self, ctx: Context, turn: Turn) -> StreamPlan:
        """A.4: role only in the first delta; id/type/name only in a call's
        first fragment, then argument fragments; finish chunk with delta {};
        the usage chunk (choices []) only when include_usage, and then
        "usage": null on every other chunk; data: [DONE]."""
        options = ctx.body.get("stream_options") or {}
        with_usage = options.get("include_usage") is True

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": COMPLETION_ID,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": ctx.model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if with_usage:
                data["usage"] = None
            return record(data)

        plan = StreamPlan()
        first = {"role": "assistant", "content": None if turn.calls and not turn.text else ""}
        plan.head.append(chunk(first))
        for piece in pieces(turn.thinking):
            if piece:
                plan.body.append(chunk({"content": None, "reasoning_content": piece}))
        for piece in pieces(turn.text):
            if piece:
                plan.body.append(chunk({"content": piece}))
        ids = CALL_IDS["openai"]
        for k, call in enumerate(turn.calls):
            opener = {"index": k, "id": ids[k], "type": "function", "function": {"name": call.name, "arguments": ""}}
            plan.body.append(chunk({"tool_calls": [opener]}))
            for fragment in pieces(dumps(call.args), 3):
                plan.body.append(chunk({"tool_calls": [{"index": k, "function": {"arguments": fragment}}]}))
        plan.tail.append(chunk({}, finish_reason(turn)))
        if with_usage:
            plan.tail.append(
                record(
                    {
                        "id": COMPLETION_ID,
                        "object": "chat.completion.chunk",
                        "created": CREATED,
                        "model": ctx.model,
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": usage(turn),
                    }
                )
            )
        plan.tail.append(b"data: [DONE]\n\n")
        return plan

    def stream_error(self, message: str) -> bytes:
        return record({"error": {"message": message, "type": "server_error", "param": None, "code": None}})

    def embed(self, ctx: Context) -> Any:
        value = ctx.body["input"]
        count = 1 if isinstance(value, str) or (value and is_int(value[0])) else len(value)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": list(EMBEDDING)} for i in range(count)],
            "model": ctx.model,
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }


def record(data: Any) -> bytes:
    """One SSE record: data: {json}, blank line."""
    return f"data: {dumps(data)}\n\n".encode()
