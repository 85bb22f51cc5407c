"""Fake Ollama native API upstream.

The real server silently ignores unknown fields and options; this fake
reports them as violations instead, because a field Ollama ignores is a
setting the proxy lost (e.g. `max_tokens` at the top level instead of
`options.num_predict`).
"""

from __future__ import annotations

from typing import Any

from .base import Context, Dialect, Endpoint, ErrorKind, Recorded, Rejection, StreamPlan, dumps
from .checks import Problems, is_base64, join, kind
from .scenarios import CALL_IDS, EMBEDDING, OUTPUT_TOKENS, PROMPT_TOKENS, Turn, pieces

CREATED_AT = "2025-07-07T20:22:19.184789Z"
ROLES = ("system", "user", "assistant", "tool")
THINK_LEVELS = ("low", "medium", "high", "max")
OPTIONS = {
    "num_predict", "temperature", "top_p", "top_k", "min_p", "typical_p", "stop", "seed", "repeat_penalty",
    "repeat_last_n", "presence_penalty", "frequency_penalty", "num_keep", "num_ctx", "num_batch", "num_gpu",
    "main_gpu", "use_mmap", "num_thread",
}  # fmt: skip
INT_OPTIONS = {"num_predict", "top_k", "seed", "repeat_last_n", "num_keep", "num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread"}
CHAT_KEYS = {"model", "messages", "tools", "format", "options", "stream", "keep_alive", "think", "truncate", "shift", "logprobs", "top_logprobs"}
GENERATE_KEYS = {
    "model", "prompt", "suffix", "system", "template", "images", "format", "options", "think", "raw", "stream",
    "keep_alive", "context", "truncate", "shift", "logprobs", "top_logprobs",
}  # fmt: skip
EMBED_KEYS = {"model", "input", "truncate", "options", "keep_alive", "dimensions"}
MESSAGE_KEYS = {"role", "content", "thinking", "images", "tool_calls", "tool_name", "tool_call_id"}
ERRORS: dict[ErrorKind, str] = {
    "invalid": "invalid request",
    "auth": "unauthorized",
    "not_found": "not found",
    "rate_limit": "too many requests",
    "server": "internal server error",
    "overloaded": "server busy, please try again.  maximum pending requests exceeded",
    "unavailable": "service unavailable",
}


# -- validation ---------------------------------------------------------------


def validate_chat(body: dict[str, Any]) -> list[str]:
    p = Problems()
    p.unknown_keys(body, CHAT_KEYS, "", "unknown field (Ollama would silently ignore it)")
    p.string(body, "model", "", required=True, nonempty=True)
    messages = p.array(body, "messages", "", required=True, nonempty=True)
    for i, message in enumerate(messages or []):
        _message(p, message, join("messages", i))
    _tools(p, body)
    _common(p, body)
    return p.items


def validate_generate(body: dict[str, Any]) -> list[str]:
    p = Problems()
    p.unknown_keys(body, GENERATE_KEYS, "", "unknown field (Ollama would silently ignore it)")
    p.string(body, "model", "", required=True, nonempty=True)
    p.string(body, "prompt", "", required=True)
    for key in ("suffix", "system", "template"):
        p.string(body, key, "")
    p.boolean(body, "raw", "")
    _images(p, body, "")
    _common(p, body)
    return p.items


def validate_embed(body: dict[str, Any]) -> list[str]:
    p = Problems()
    p.unknown_keys(body, EMBED_KEYS, "", "unknown field (Ollama would silently ignore it)")
    p.string(body, "model", "", required=True, nonempty=True)
    value = body.get("input")
    if not (isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))):
        p.add("input", f"must be a string or a non-empty array of strings, got {kind(value)}")
    _options(p, body)
    return p.items


def _common(p: Problems, body: dict[str, Any]) -> None:
    """format, think, stream, options: shared by chat and generate."""
    fmt = body.get("format")
    if fmt is not None and fmt != "json" and fmt != "" and not isinstance(fmt, dict):
        p.add("format", f"must be \"json\" or a JSON schema object, got {fmt!r}")
    think = body.get("think")
    if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
        p.add("think", f"must be a boolean or one of {list(THINK_LEVELS)}, got {think!r}")
    p.boolean(body, "stream", "")
    keep_alive = body.get("keep_alive")
    if keep_alive is not None and not isinstance(keep_alive, (str, int, float)):
        p.add("keep_alive", f"must be a duration string or a number, got {kind(keep_alive)}")
    _options(p, body)


def _options(p: Problems, body: dict[str, Any]) -> None:
    options = p.obj(body, "options", "")
    if options is None:
        return
    p.unknown_keys(options, OPTIONS, "options", "invalid option (Ollama would ignore it)")
    for key in INT_OPTIONS & options.keys():
        p.integer(options, key, "options")
    for key in ("temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty", "frequency_penalty"):
        p.number(options, key, "options")
    stop = options.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        p.add("options.stop", "must be an array of strings")
    p.boolean(options, "use_mmap", "options")


def _message(p: Problems, message: Any, path: str) -> None:
    if not isinstance(message, dict):
        p.add(path, f"must be an object, got {kind(message)}")
        return
    p.unknown_keys(message, MESSAGE_KEYS, path, "unknown field (Ollama would silently ignore it)")
    role = p.one_of(message, "role", path, ROLES, required=True)
    p.string(message, "content", path, required=role in ("system", "user", "tool"))
    p.string(message, "thinking", path)
    p.string(message, "tool_name", path)
    p.string(message, "tool_call_id", path)
    _images(p, message, path)
    calls = p.array(message, "tool_calls", path)
    if calls is not None and role != "assistant":
        p.add(join(path, "tool_calls"), "only assistant messages carry tool calls")
    for k, call in enumerate(calls or []):
        cpath = join(join(path, "tool_calls"), k)
        if not isinstance(call, dict):
            p.add(cpath, f"must be an object, got {kind(call)}")
            continue
        p.unknown_keys(call, ("id", "type", "function"), cpath)
        p.string(call, "id", cpath)
        function = p.obj(call, "function", cpath, required=True)
        if function is None:
            continue
        fpath = join(cpath, "function")
        p.unknown_keys(function, ("index", "name", "arguments", "description"), fpath)
        p.string(function, "name", fpath, required=True, nonempty=True)
        arguments = function.get("arguments")
        if not isinstance(arguments, dict):
            p.add(join(fpath, "arguments"), f"must be a JSON object, not {kind(arguments)} (cannot unmarshal into ToolCallFunctionArguments)")


def _images(p: Problems, obj: dict[str, Any], path: str) -> None:
    images = p.array(obj, "images", path)
    for k, image in enumerate(images or []):
        ipath = join(join(path, "images") if path else "images", k)
        if not isinstance(image, str):
            p.add(ipath, f"must be a base64 string, got {kind(image)}")
        elif image.startswith("data:"):
            p.add(ipath, "must be raw base64 without a data: URL prefix")
        elif image.startswith(("http://", "https://")):
            p.add(ipath, "image URLs are not supported, please use base64 encoded data instead")
        elif not is_base64(image):
            p.add(ipath, "is not valid base64")


def _tools(p: Problems, body: dict[str, Any]) -> None:
    for i, tool in enumerate(p.array(body, "tools", "") or []):
        path = join("tools", i)
        if not isinstance(tool, dict):
            p.add(path, f"must be an object, got {kind(tool)}")
            continue
        p.unknown_keys(tool, ("type", "function", "items"), path)
        p.one_of(tool, "type", path, ("function",), required=True)
        function = p.obj(tool, "function", path, required=True)
        if function is None:
            continue
        fpath = join(path, "function")
        p.unknown_keys(function, ("name", "description", "parameters"), fpath)
        p.string(function, "name", fpath, required=True, nonempty=True)
        p.obj(function, "parameters", fpath)


# -- rendering ------------------------------------------------------------------


def metrics() -> dict[str, Any]:
    return {
        "total_duration": 182242375,
        "load_duration": 41295167,
        "prompt_eval_count": PROMPT_TOKENS,
        "prompt_eval_duration": 24573166,
        "eval_count": OUTPUT_TOKENS,
        "eval_duration": 115959084,
    }


def tool_call(turn: Turn, k: int) -> dict[str, Any]:
    call = turn.calls[k]
    return {"id": CALL_IDS["ollama"][k], "function": {"index": k, "name": call.name, "arguments": call.args}}


class OllamaDialect(Dialect):
    name = "ollama"
    stream_media_type = "application/x-ndjson"

    def match(self, method: str, path: str, query: dict[str, str]) -> Endpoint | None:
        if method != "POST":
            return None
        for suffix, kind_ in (("/api/chat", "generate"), ("/api/generate", "generate"), ("/api/embed", "embed")):
            if path.endswith(suffix):
                return Endpoint(suffix.removeprefix("/"), kind_)  # type: ignore[arg-type]
        return None

    def check_headers(self, request: Recorded, key: str | None) -> Rejection | None:
        if key is not None and request.headers.get("authorization") != f"Bearer {key}":
            return Rejection(401, "auth", "unauthorized", "ollama: missing or wrong Authorization: Bearer header")
        return None

    def validate(self, endpoint: Endpoint, body: Any, request: Recorded) -> list[str]:
        if endpoint.name == "api/chat":
            return validate_chat(body)
        if endpoint.name == "api/generate":
            return validate_generate(body)
        return validate_embed(body)

    def wants_stream(self, endpoint: Endpoint, body: dict[str, Any]) -> bool:
        """D.1: a missing `stream` means true."""
        return endpoint.kind == "generate" and body.get("stream", True) is not False

    def error_body(self, status: int, kind: ErrorKind, message: str, **extra: Any) -> Any:
        return {"error": message if kind in ("invalid", "not_found") else f"{ERRORS[kind]}: {message}"}

    def whole(self, ctx: Context, turn: Turn) -> Any:
        if ctx.endpoint.name == "api/generate":
            line = self._generate_line(ctx, turn.text, turn.thinking)
        else:
            message: dict[str, Any] = {"role": "assistant", "content": turn.text}
            if turn.thinking:
                message["thinking"] = turn.thinking
            if turn.calls:
                message["tool_calls"] = [tool_call(turn, k) for k in range(len(turn.calls))]
            line = {"model": ctx.model, "created_at": CREATED_AT, "message": message}
        return {**line, "done": True, "done_reason": "stop", **metrics()}

    def _generate_line(self, ctx: Context, text: str, thinking: str = "") -> dict[str, Any]:
        line: dict[str, Any] = {"model": ctx.model, "created_at": CREATED_AT, "response": text}
        if thinking:
            line["thinking"] = thinking
        return line

    def stream_plan(self, ctx: Context, turn: Turn) -> StreamPlan:
        """D.2: NDJSON; message.role on every line; thinking before content;
        each tool call whole in its own line; a done:true line with metrics."""
        plan = StreamPlan()
        chat = ctx.endpoint.name == "api/chat"

        def envelope(content: str = "", **extra: Any) -> dict[str, Any]:
            if chat:
                return {"model": ctx.model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": content, **extra}}
            return self._generate_line(ctx, content, extra.get("thinking", ""))

        for piece in pieces(turn.thinking):
            if piece:
                plan.body.append(record({**envelope("", thinking=piece), "done": False}))
        for piece in pieces(turn.text):
            if piece:
                plan.body.append(record({**envelope(piece), "done": False}))
        if chat:
            for k in range(len(turn.calls)):
                plan.body.append(record({**envelope("", tool_calls=[tool_call(turn, k)]), "done": False}))
        plan.tail.append(record({**envelope(""), "done": True, "done_reason": "stop", **metrics()}))
        return plan

    def stream_error(self, message: str) -> bytes:
        return record({"error": message})

    def embed(self, ctx: Context) -> Any:
        value = ctx.body["input"]
        count = 1 if isinstance(value, str) else len(value)
        return {
            "model": ctx.model,
            "embeddings": [list(EMBEDDING) for _ in range(count)],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": 8,
        }


def record(data: Any) -> bytes:
    """One NDJSON line."""
    return f"{dumps(data)}\n".encode()
