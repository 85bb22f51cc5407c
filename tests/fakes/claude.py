"""Fake Anthropic Messages upstream.

Usage is reported as 16 fresh + 5 cache-read input tokens so that a proxy
which forgets that `input_tokens` excludes cached tokens (B.3) reports 16
instead of PROMPT_TOKENS. Validation follows the rules B.2 lists as enforced.
"""

from __future__ import annotations

import re
from typing import Any

from .base import Context, Dialect, Endpoint, ErrorKind, Recorded, Rejection, StreamPlan, dumps
from .checks import Problems, join, kind
from .scenarios import (
    CACHED_TOKENS,
    CALL_IDS,
    CLAUDE_SIGNATURE,
    COUNT_TOKENS,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    Turn,
    pieces,
)

MESSAGE_ID = "msg_01FakeUpstream0123456789"
INPUT_TOKENS = PROMPT_TOKENS - CACHED_TOKENS  # 16: input_tokens excludes cached tokens

TOP_LEVEL = {
    "model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p", "top_k", "stream",
    "metadata", "tools", "tool_choice", "thinking", "output_config", "service_tier", "container", "inference_geo",
    "cache_control", "context_management", "mcp_servers",
}  # fmt: skip
COUNT_TOP_LEVEL = {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config"}
BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
ASSISTANT_ONLY = ("tool_use", "thinking", "redacted_thinking")
USER_ONLY = ("tool_result", "image", "document")
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
EFFORTS = ("low", "medium", "high", "xhigh", "max")

ERROR_TYPES: dict[ErrorKind, str] = {
    "invalid": "invalid_request_error",
    "auth": "authentication_error",
    "not_found": "not_found_error",
    "rate_limit": "rate_limit_error",
    "server": "api_error",
    "overloaded": "overloaded_error",
    "unavailable": "overloaded_error",
}


# -- validation ---------------------------------------------------------------


SYSTEM_TURNS_BETA = "mid-conversation-system-2026-04-07"
# Tools Anthropic defines or runs itself, by the type's stem, with the name
# each must carry and the beta it needs (None: generally available).
SERVER_TOOLS: dict[str, tuple[str, str | None]] = {
    "web_search": ("web_search", None),
    "web_fetch": ("web_fetch", "web-fetch-2025-09-10"),
    "code_execution": ("code_execution", None),
    "bash": ("bash", None),
    "text_editor": ("str_replace_based_edit_tool", None),
}
DATED_TOOL = re.compile(r"^([a-z_]+)_(\d{8})$")
MAX_CACHE_MARKS = 4
DOCUMENT_MEDIA = {"base64": ("application/pdf",), "text": ("text/plain",)}


def validate(body: dict[str, Any], *, count_tokens: bool = False, betas: tuple[str, ...] = ()) -> list[str]:
    """Every reason Anthropic would refuse this Messages (or count_tokens)
    request, sent with these anthropic-beta flags."""
    p = Problems()
    p.unknown_keys(body, COUNT_TOP_LEVEL if count_tokens else TOP_LEVEL, "", "Extra inputs are not permitted")
    p.string(body, "model", "", required=True, nonempty=True)
    max_tokens = None if count_tokens else p.integer(body, "max_tokens", "", required=True, low=1)
    messages = p.array(body, "messages", "", required=True, nonempty=True)
    _system(p, body.get("system"))
    thinking_on = _thinking(p, body, max_tokens)
    if messages:
        _messages(p, messages, thinking_on, SYSTEM_TURNS_BETA in betas)
    marks = _cache_marks(body)
    if marks > MAX_CACHE_MARKS:
        p.add("", f"A maximum of {MAX_CACHE_MARKS} blocks with cache_control may be provided. Found {marks}.")
    p.number(body, "temperature", "", 0, 1)
    p.number(body, "top_p", "", 0, 1)
    p.integer(body, "top_k", "", low=0)
    stops = p.array(body, "stop_sequences", "")
    if stops is not None and not all(isinstance(s, str) and s for s in stops):
        p.add("stop_sequences", "must be an array of non-empty strings")
    p.boolean(body, "stream", "")
    metadata = p.obj(body, "metadata", "")
    if metadata is not None:
        p.unknown_keys(metadata, ("user_id",), "metadata", "Extra inputs are not permitted")
    tool_names = _tools(p, body, betas)
    _tool_choice(p, body, tool_names, thinking_on)
    output = p.obj(body, "output_config", "")
    if output is not None:
        p.one_of(output, "effort", "output_config", EFFORTS)
    return p.items


def _system(p: Problems, system: Any, where: str = "system") -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        p.add(where, f"must be a string or an array of text blocks, got {kind(system)}")
        return
    for i, block in enumerate(system):
        path = join(where, i)
        if not isinstance(block, dict) or block.get("type") != "text":
            p.add(path, "system blocks must be text blocks")
            continue
        _text_block(p, block, path)


def _thinking(p: Problems, body: dict[str, Any], max_tokens: int | None) -> bool:
    """Check `thinking`; True when it is on (enabled or adaptive), which
    brings the extra constraints of E.8."""
    thinking = p.obj(body, "thinking", "")
    if thinking is None:
        return False
    ttype = p.one_of(thinking, "type", "thinking", ("enabled", "disabled", "adaptive"), required=True)
    if ttype == "enabled":
        p.unknown_keys(thinking, ("type", "budget_tokens", "display"), "thinking")
        budget = p.integer(thinking, "budget_tokens", "thinking", required=True, low=1024)
        if budget is not None and max_tokens is not None and budget >= max_tokens:
            p.add("max_tokens", f"must be greater than thinking.budget_tokens ({max_tokens} <= {budget})")
        p.one_of(thinking, "display", "thinking", ("summarized", "omitted"))
    elif ttype in ("disabled", "adaptive"):
        p.unknown_keys(thinking, ("type", "display") if ttype == "adaptive" else ("type",), "thinking")
    if ttype not in ("enabled", "adaptive"):
        return False
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        p.add("temperature", "may only be set to 1 when thinking is enabled")
    if body.get("top_k") is not None:
        p.add("top_k", "is not compatible with thinking")
    top_p = body.get("top_p")
    if isinstance(top_p, (int, float)) and not 0.95 <= top_p <= 1:
        p.add("top_p", "must be between 0.95 and 1 when thinking is enabled")
    return True


def _cache_marks(body: dict[str, Any]) -> int:
    """The blocks (tools, system, messages and the blocks inside tool results)
    that carry cache_control."""

    def marked(blocks: Any) -> int:
        count = 0
        for block in blocks if isinstance(blocks, list) else []:
            if isinstance(block, dict):
                count += "cache_control" in block
                count += marked(block.get("content")) if block.get("type") == "tool_result" else 0
        return count

    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    return marked(body.get("tools")) + marked(body.get("system")) + sum(
        marked(m.get("content")) for m in messages if isinstance(m, dict))


def _messages(p: Problems, messages: list[Any], thinking_on: bool, system_turns: bool) -> None:
    """Roles, blocks, and the tool_use -> tool_result pairing across turns.
    System turns are taken only under their beta, and hold text only."""
    previous_tool_ids: list[str] = []  # tool_use ids of the preceding assistant message
    last_assistant: tuple[int, list[Any]] | None = None
    roles = ("user", "assistant", "system") if system_turns else ("user", "assistant")
    conversation = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
    for i, message in enumerate(messages):
        path = join("messages", i)
        if not isinstance(message, dict):
            p.add(path, f"must be an object, got {kind(message)}")
            continue
        p.unknown_keys(message, ("role", "content"), path, "Extra inputs are not permitted")
        role = p.one_of(message, "role", path, roles, required=True)
        if role == "system":
            _system(p, message.get("content"), join(path, "content"))
            continue
        if conversation and message is conversation[0] and role == "assistant":
            p.add(path, "the first message must use the 'user' role")
        content = message.get("content")
        final_assistant = role == "assistant" and i == len(messages) - 1
        blocks = _content(p, content, path, role, final_assistant)
        tool_uses = [b.get("id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
        results = [b.get("tool_use_id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
        if previous_tool_ids:
            missing = [t for t in previous_tool_ids if t not in results]
            if role != "user" or missing:
                p.add(path, "`tool_use` ids were found without `tool_result` blocks immediately after: "
                      f"{', '.join(map(str, missing or previous_tool_ids))}. Each `tool_use` block must have a "
                      "corresponding `tool_result` block in the next message.")  # fmt: skip
        unexpected = [r for r in results if r not in previous_tool_ids]
        if unexpected:
            p.add(path, f"unexpected `tool_use_id` found in `tool_result` blocks: {', '.join(map(str, unexpected))}. "
                  "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")  # fmt: skip
        previous_tool_ids = [str(t) for t in tool_uses] if role == "assistant" else []
        if role == "assistant":
            last_assistant = (i, blocks)
    if previous_tool_ids:
        p.add("messages", f"the last message has `tool_use` blocks without `tool_result`: {previous_tool_ids}")
    if thinking_on and last_assistant is not None:
        index, blocks = last_assistant
        if any(isinstance(b, dict) and b.get("type") == "tool_use" for b in blocks):
            first = blocks[0] if blocks else {}
            if not (isinstance(first, dict) and first.get("type") in ("thinking", "redacted_thinking")):
                found = first.get("type") if isinstance(first, dict) else kind(first)
                p.add(join("messages", index) + ".content.0",
                      f"Expected `thinking` or `redacted_thinking`, but found `{found}`. When `thinking` is enabled, "
                      "a final `assistant` message must start with a thinking block. To avoid this requirement, "
                      "disable `thinking`.")  # fmt: skip


def _content(p: Problems, content: Any, path: str, role: Any, final_assistant: bool) -> list[Any]:
    """Check a message's content; return its blocks ([] for a string)."""
    cpath = join(path, "content")
    if isinstance(content, str):
        if not content and not final_assistant:
            p.add(path, "all messages must have non-empty content except for the optional final assistant message")
        if final_assistant and content != content.rstrip():
            p.add(cpath, "final assistant content cannot end with trailing whitespace")
        return []
    if not isinstance(content, list):
        p.add(cpath, f"must be a string or an array of content blocks, got {kind(content)}")
        return []
    if not content and not final_assistant:
        p.add(path, "all messages must have non-empty content except for the optional final assistant message")
    for j, block in enumerate(content):
        bpath = join(cpath, j)
        if not isinstance(block, dict):
            p.add(bpath, f"must be an object, got {kind(block)}")
            continue
        btype = p.one_of(block, "type", bpath, BLOCK_TYPES, required=True)
        if btype in ASSISTANT_ONLY and role != "assistant":
            p.add(bpath, f"`{btype}` blocks are only allowed in assistant messages")
        if btype in USER_ONLY and role != "user":
            p.add(bpath, f"`{btype}` blocks are only allowed in user messages")
        if btype == "text":
            _text_block(p, block, bpath)
        elif btype == "image":
            _image(p, block, bpath)
        elif btype == "document":
            _document(p, block, bpath)
        elif btype == "tool_use":
            p.unknown_keys(block, ("type", "id", "name", "input", "cache_control", "caller"), bpath, "Extra inputs are not permitted")
            tool_id = p.string(block, "id", bpath, required=True)
            if tool_id is not None and not TOOL_ID.match(tool_id):
                p.add(join(bpath, "id"), f"String should match pattern '^[a-zA-Z0-9_-]+$' (got {tool_id!r})")
            p.string(block, "name", bpath, required=True, nonempty=True)
            if not isinstance(block.get("input"), dict):
                p.add(join(bpath, "input"), f"must be an object, got {kind(block.get('input'))}")
        elif btype == "tool_result":
            _tool_result(p, block, bpath)
        elif btype == "thinking":
            p.unknown_keys(block, ("type", "thinking", "signature"), bpath, "Extra inputs are not permitted")
            p.string(block, "thinking", bpath, required=True)
            p.string(block, "signature", bpath, required=True, nonempty=True)
        elif btype == "redacted_thinking":
            p.string(block, "data", bpath, required=True, nonempty=True)
    if final_assistant and content:
        last = content[-1]
        if isinstance(last, dict) and last.get("type") == "text" and isinstance(last.get("text"), str):
            if last["text"] != last["text"].rstrip():
                p.add(cpath, "final assistant content cannot end with trailing whitespace")
    return content


def _text_block(p: Problems, block: dict[str, Any], path: str) -> None:
    p.unknown_keys(block, ("type", "text", "cache_control", "citations"), path, "Extra inputs are not permitted")
    text = p.string(block, "text", path, required=True)
    if text is not None and not text.strip():
        p.add(path, "text content blocks must be non-empty" if not text else "text content blocks must contain non-whitespace text")


def _image(p: Problems, block: dict[str, Any], path: str) -> None:
    source = p.obj(block, "source", path, required=True)
    if source is None:
        return
    spath = join(path, "source")
    stype = p.one_of(source, "type", spath, ("base64", "url", "file"), required=True)
    if stype == "base64":
        p.one_of(source, "media_type", spath, IMAGE_MEDIA_TYPES, required=True)
        data = p.string(source, "data", spath, required=True, nonempty=True)
        if data and data.startswith("data:"):
            p.add(join(spath, "data"), "must be raw base64, not a data: URL")
    elif stype == "url":
        url = p.string(source, "url", spath, required=True, nonempty=True)
        if url and not url.startswith(("http://", "https://")):
            p.add(join(spath, "url"), "must be an http(s) URL")
    elif stype == "file":
        p.string(source, "file_id", spath, required=True)


def _document(p: Problems, block: dict[str, Any], path: str) -> None:
    p.unknown_keys(block, ("type", "source", "title", "context", "citations", "cache_control"), path,
                   "Extra inputs are not permitted")
    source = p.obj(block, "source", path, required=True)
    if source is None:
        return
    spath = join(path, "source")
    stype = p.one_of(source, "type", spath, ("base64", "text", "url", "content", "file"), required=True)
    if stype in DOCUMENT_MEDIA:
        p.one_of(source, "media_type", spath, DOCUMENT_MEDIA[stype], required=True)
        data = p.string(source, "data", spath, required=True, nonempty=stype == "base64")
        if stype == "base64" and data and data.startswith("data:"):
            p.add(join(spath, "data"), "must be raw base64, not a data: URL")
    elif stype == "url":
        url = p.string(source, "url", spath, required=True, nonempty=True)
        if url and not url.startswith(("http://", "https://")):
            p.add(join(spath, "url"), "must be an http(s) URL")


def _tool_result(p: Problems, block: dict[str, Any], path: str) -> None:
    p.unknown_keys(block, ("type", "tool_use_id", "content", "is_error", "cache_control"), path, "Extra inputs are not permitted")
    p.string(block, "tool_use_id", path, required=True, nonempty=True)
    p.boolean(block, "is_error", path)
    content = block.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        p.add(join(path, "content"), f"must be a string or an array of blocks, got {kind(content)}")
        return
    for k, inner in enumerate(content):
        ipath = join(join(path, "content"), k)
        if not isinstance(inner, dict):
            p.add(ipath, f"must be an object, got {kind(inner)}")
            continue
        itype = p.one_of(inner, "type", ipath, ("text", "image", "document", "search_result"), required=True)
        if itype == "text":
            _text_block(p, inner, ipath)
        elif itype == "image":
            _image(p, inner, ipath)
        elif itype == "document":
            _document(p, inner, ipath)


def _tools(p: Problems, body: dict[str, Any], betas: tuple[str, ...]) -> set[str]:
    names: set[str] = set()
    for i, tool in enumerate(p.array(body, "tools", "") or []):
        path = join("tools", i)
        if not isinstance(tool, dict):
            p.add(path, f"must be an object, got {kind(tool)}")
            continue
        if tool.get("type") not in (None, "custom"):
            _server_tool(p, tool, path, betas)
            continue
        p.unknown_keys(tool, ("type", "name", "description", "input_schema", "cache_control", "strict", "input_examples",
                              "eager_input_streaming", "defer_loading", "allowed_callers"),
                       path, "Extra inputs are not permitted")  # fmt: skip
        name = p.string(tool, "name", path, required=True)
        if name is not None:
            if not TOOL_NAME.match(name):
                p.add(join(path, "name"), f"String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$' (got {name!r})")
            names.add(name)
        p.string(tool, "description", path)
        schema = p.obj(tool, "input_schema", path, required=True)
        if schema is not None and schema.get("type") != "object":
            p.add(join(path, "input_schema.type"), "Input should be 'object'")
    return names


def _server_tool(p: Problems, tool: dict[str, Any], path: str, betas: tuple[str, ...]) -> None:
    dated = DATED_TOOL.match(str(tool.get("type")))
    known = SERVER_TOOLS.get(dated.group(1)) if dated else None
    if known is None:
        p.add(join(path, "type"), f"Input tag {tool.get('type')!r} found using 'type' does not match any of the expected tags")
        return
    name, beta = known
    if tool.get("name") != name:
        p.add(join(path, "name"), f"Input should be {name!r}")
    if beta is not None and beta not in betas:
        p.add(join(path, "type"), f"{tool['type']} requires the anthropic-beta header {beta!r}")


def _tool_choice(p: Problems, body: dict[str, Any], tool_names: set[str], thinking_on: bool) -> None:
    choice = p.obj(body, "tool_choice", "")
    if choice is None:
        return
    if not body.get("tools"):
        p.add("tool_choice", "may only be specified while providing tools")
    ctype = p.one_of(choice, "type", "tool_choice", ("auto", "any", "tool", "none"), required=True)
    allowed = {"type", "disable_parallel_tool_use"} | ({"name"} if ctype == "tool" else set())
    if ctype == "none":
        allowed = {"type"}
    p.unknown_keys(choice, allowed, "tool_choice", "Extra inputs are not permitted")
    p.boolean(choice, "disable_parallel_tool_use", "tool_choice")
    if ctype == "tool":
        name = p.string(choice, "name", "tool_choice", required=True)
        if name and tool_names and name not in tool_names:
            p.add("tool_choice.name", f"{name!r} is not one of the tools")
    if thinking_on and ctype in ("any", "tool"):
        p.add("tool_choice", f"Thinking may not be enabled when tool_choice forces tool use ({ctype!r})")


# -- rendering ------------------------------------------------------------------


def usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": INPUT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": CACHED_TOKENS,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


SERVER_TOOL_ID = "srvtoolu_01FakeSearch0123456789"


def search_blocks(turn: Turn) -> list[dict[str, Any]]:
    """A web search Anthropic ran: its use, then its results."""
    if turn.search is None:
        return []
    query, sources = turn.search
    return [
        {"type": "server_tool_use", "id": SERVER_TOOL_ID, "name": "web_search", "input": {"query": query}},
        {"type": "web_search_tool_result", "tool_use_id": SERVER_TOOL_ID, "content": [
            {"type": "web_search_result", "url": url, "title": title, "encrypted_content": "EqgfCioIARgB", "page_age": None}
            for url, title in sources]},
    ]


def blocks(turn: Turn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = search_blocks(turn)
    if turn.thinking:
        out.append({"type": "thinking", "thinking": turn.thinking, "signature": CLAUDE_SIGNATURE})
    if turn.text:
        out.append({"type": "text", "text": turn.text})
    ids = CALL_IDS["claude"]
    out.extend({"type": "tool_use", "id": ids[k], "name": c.name, "input": c.args} for k, c in enumerate(turn.calls))
    return out


def stop_reason(turn: Turn) -> str:
    return "tool_use" if turn.calls else "end_turn"


def event(name: str, data: dict[str, Any]) -> bytes:
    """One SSE record with both the event name and data.type (F.2)."""
    return f"event: {name}\ndata: {dumps({'type': name, **data})}\n\n".encode()


class ClaudeDialect(Dialect):
    name = "claude"
    overloaded_status = 529

    def match(self, method: str, path: str, query: dict[str, str]) -> Endpoint | None:
        if method != "POST":
            return None
        if path.endswith("/messages/count_tokens"):
            return Endpoint("messages/count_tokens", "count")
        if path.endswith("/messages"):
            return Endpoint("messages", "generate")
        return None

    def check_headers(self, request: Recorded, key: str | None) -> Rejection | None:
        if key is not None:
            sent = request.headers.get("x-api-key")
            if sent is None:
                how = "an Authorization header instead" if "authorization" in request.headers else "no credentials"
                return Rejection(401, "auth", "x-api-key header is required", f"claude: no x-api-key header ({how})")
            if sent != key:
                return Rejection(401, "auth", "invalid x-api-key", "claude: wrong x-api-key")
        if not request.headers.get("anthropic-version"):
            return Rejection(400, "invalid", "anthropic-version: header is required", "claude: no anthropic-version header")
        return None

    def validate(self, endpoint: Endpoint, body: Any, request: Recorded) -> list[str]:
        betas = tuple(b.strip() for b in request.headers.get("anthropic-beta", "").split(",") if b.strip())
        return validate(body, count_tokens=endpoint.kind == "count", betas=betas)

    def wants_stream(self, endpoint: Endpoint, body: dict[str, Any]) -> bool:
        return endpoint.kind == "generate" and body.get("stream") is True

    def error_body(self, status: int, kind: ErrorKind, message: str, **extra: Any) -> Any:
        return {"type": "error", "error": {"type": ERROR_TYPES[kind], "message": message}, "request_id": "req_fake0123456789"}

    def whole(self, ctx: Context, turn: Turn) -> Any:
        return {
            "id": MESSAGE_ID,
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": blocks(turn),
            "stop_reason": stop_reason(turn),
            "stop_sequence": None,
            "usage": usage(OUTPUT_TOKENS),
        }

    def stream_plan(self, ctx: Context, turn: Turn) -> StreamPlan:
        """B.4: message_start (content [], usage), ping, blocks indexed from 0
        each closed before the next opens, message_delta with cumulative
        usage, message_stop. The last block's stop is in the tail so a broken
        stream ends inside a block, as real mid-stream failures do."""
        plan = StreamPlan()
        start = {
            "id": MESSAGE_ID,
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(1),
        }
        plan.head += [event("message_start", {"message": start}), event("ping", {})]
        index = -1

        def open_block(block: dict[str, Any]) -> None:
            nonlocal index
            if index >= 0:
                plan.body.append(event("content_block_stop", {"index": index}))
            index += 1
            plan.body.append(event("content_block_start", {"index": index, "content_block": block}))

        def delta(payload: dict[str, Any]) -> None:
            plan.body.append(event("content_block_delta", {"index": index, "delta": payload}))

        for block in search_blocks(turn):
            if block["type"] == "server_tool_use":
                open_block({**block, "input": {}})
                for fragment in pieces(dumps(block["input"]), 3):
                    delta({"type": "input_json_delta", "partial_json": fragment})
            else:
                open_block(block)
        if turn.thinking:
            open_block({"type": "thinking", "thinking": "", "signature": ""})
            for piece in pieces(turn.thinking):
                delta({"type": "thinking_delta", "thinking": piece})
            delta({"type": "signature_delta", "signature": CLAUDE_SIGNATURE})
        if turn.text:
            open_block({"type": "text", "text": ""})
            for piece in pieces(turn.text):
                delta({"type": "text_delta", "text": piece})
        for k, call in enumerate(turn.calls):
            open_block({"type": "tool_use", "id": CALL_IDS["claude"][k], "name": call.name, "input": {}})
            delta({"type": "input_json_delta", "partial_json": ""})
            for fragment in pieces(dumps(call.args), 3):
                delta({"type": "input_json_delta", "partial_json": fragment})
        if index >= 0:
            plan.tail.append(event("content_block_stop", {"index": index}))
        final_usage = {k: v for k, v in usage(OUTPUT_TOKENS).items() if k not in ("cache_creation", "service_tier")}
        plan.tail.append(
            event("message_delta", {"delta": {"stop_reason": stop_reason(turn), "stop_sequence": None}, "usage": final_usage})
        )
        plan.tail.append(event("message_stop", {}))
        return plan

    def stream_error(self, message: str) -> bytes:
        return event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})

    def count_tokens(self, ctx: Context) -> Any:
        return {"input_tokens": COUNT_TOKENS}
