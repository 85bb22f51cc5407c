"""Small conversions more than one codec needs."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import ProxyError
from ..jsonutil import dumps, loads
from ..unified import Document, Image, Message, ServerToolUse, Text, Thinking, ToolCall, ToolResult

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], body: Any, what: str = "request") -> M:
    """Parse `body` with a pydantic wire model; a bad body becomes a 400 whose
    message names each wrong field and says what it should be."""
    if not isinstance(body, dict):
        raise ProxyError(400, f"the {what} body must be a JSON object", kind="invalid_request")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err["loc"]) or what
            problems.append(f"{where}: {err['msg']}")
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        raise ProxyError(
            400,
            "invalid " + what + ": " + "; ".join(problems),
            kind="invalid_request",
            param=".".join(str(p) for p in first) or None,
        ) from None


# Effort levels <-> token budgets: a design choice, no vendor documents one.
_BUDGET_BY_EFFORT = {
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
    "max": 32768,
}


def effort_to_budget(effort: str | None) -> int:
    return _BUDGET_BY_EFFORT.get(effort or "medium", 8192)


def budget_to_effort(budget: int | None) -> str:
    if budget is None:
        return "medium"
    if budget <= 2048:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"


def parse_data_url(url: str) -> Image:
    """`data:<mime>;base64,<payload>` as an inline image; any other URL as a
    remote one."""
    if url.startswith("data:"):
        header, _, payload = url[5:].partition(",")
        media_type = header.split(";", 1)[0] or None
        return Image(media_type=media_type, data=payload)
    return Image(url=url)


def data_url(image: Image) -> str:
    if image.data is None:
        return image.url or ""
    return f"data:{image.media_type or 'image/png'};base64,{image.data}"


def estimate_tokens(text: str) -> int:
    """A careful estimate where an upstream cannot count: about four
    characters a token for English, more for other scripts."""
    if text.isascii():  # the common case, without a look at each character
        return (len(text) + 3) // 4
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    other = len(text) - ascii_chars
    return (ascii_chars + 3) // 4 + other


def request_text(request: Any) -> str:
    """All the text a unified request sends the model, for estimates."""
    pieces: list[str] = [request.system or ""]
    for tool in request.tools:
        pieces.append(tool.name + " " + (tool.description or "") + dumps(tool.parameters))
    for message in request.messages:
        for part in message.content:
            if isinstance(part, Text):
                pieces.append(part.text)
            elif isinstance(part, Thinking):
                pieces.append(part.text)
            elif isinstance(part, ToolCall):
                pieces.append(part.name + dumps(part.arguments))
            elif isinstance(part, ToolResult):
                pieces.extend(p.text for p in part.content if isinstance(p, Text))
    return "\n".join(pieces)


def call_names(messages: list[Any]) -> dict[str, str]:
    """Tool name by call id, from every assistant call in the history."""
    return {
        part.id: part.name
        for message in messages
        if message.role == "assistant"
        for part in message.content
        if isinstance(part, ToolCall)
    }


def name_tool_results(messages: list[Any]) -> None:
    """Give each ToolResult without a name the name of the call it answers
    (by id), for the protocols that need it (Gemini, Ollama)."""
    names = call_names(messages)
    for message in messages:
        for part in message.content:
            if isinstance(part, ToolResult) and part.name is None:
                part.name = names.get(part.id)


def upstream_error_body(body: bytes, status: int) -> tuple[Any, str]:
    """An upstream error body parsed as JSON (None when it is not JSON), and
    the message to use when the JSON says nothing better: the body's own
    text, or the bare status."""
    try:
        return loads(body), f"upstream error {status}"
    except ValueError:
        return None, body[:500].decode("utf-8", "replace") or f"upstream error {status}"


def pair_tool_results(messages: list[Any]) -> None:
    """Give every ToolResult the id and name of the call it answers.

    Gemini (older models) and Ollama (older servers and clients) send results
    without ids; they answer the earliest unanswered call of the same name,
    which is how those protocols pair them themselves.
    """
    unanswered: list[ToolCall] = []
    for message in messages:
        for part in message.content:
            if isinstance(part, ToolCall):
                unanswered.append(part)
            elif isinstance(part, ToolResult):
                match = next((c for c in unanswered if c.id == part.id), None)
                if match is None:
                    match = next((c for c in unanswered if part.name and c.name == part.name), None)
                if match is None and not part.name and unanswered:
                    match = unanswered[0]
                if match is not None:
                    unanswered.remove(match)
                    part.id = match.id
                    part.name = part.name or match.name
                elif not part.id:
                    from ..ids import new_call_id

                    part.id = new_call_id()


def retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after` (or OpenAI's `retry-after-ms`)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return float(value)
        except ValueError:
            return None
    return None


_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"), (b"RIFF", "image/webp"))


def sniff_image_type(b64: str) -> str:
    """The media type of base64 image data, from its first bytes (Ollama
    sends images without one)."""
    import base64
    import binascii

    try:
        head = base64.b64decode(b64[:24] + "=" * (-len(b64[:24]) % 4))
    except (binascii.Error, ValueError):
        return "image/png"
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    return "image/png"


def text_of(parts: list[Any]) -> str:
    """The text parts of a content list, joined."""
    return "".join(p.text for p in parts if isinstance(p, Text))


def now_iso() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def fold_system_turns(request: Any) -> Any:
    """The request with its mid-conversation system turns folded into the
    system prompt, in order, for upstreams that take a system prompt only at
    the top. Turns of one role that meet once a system turn is gone are
    merged, as those upstreams want roles to alternate."""
    if not any(m.role == "system" for m in request.messages):
        return request
    system = [request.system] if request.system else []
    messages: list[Message] = []
    for message in request.messages:
        if message.role == "system":
            text = text_of(message.content)
            if text:
                system.append(text)
        elif messages and messages[-1].role == message.role:
            messages[-1] = Message(role=message.role, content=[*messages[-1].content, *message.content])
        else:
            messages.append(message)
    return request.model_copy(update={"system": "\n\n".join(system) or None, "messages": messages})


def cache_mark(part: dict[str, Any]) -> dict[str, Any] | None:
    """The cache breakpoint a wire block or part carries: Anthropic's
    cache_control, which OpenRouter and LiteLLM also take on OpenAI parts."""
    mark = part.get("cache_control")
    return mark if isinstance(mark, dict) else None


def server_tool_text(use: Any) -> str:
    """A server tool's use from history, in words, for an upstream that did
    not run it: what was asked and what came back."""
    text = f"[{use.name} {dumps(use.input)}]"
    return f"{text}\n{use.result}" if use.result else text


def document_text(document: Any) -> str:
    """A plain-text document as text, under its title, for an upstream with no
    text documents of its own."""
    title = f"Document: {document.title}\n\n" if document.title else ""
    return title + (document.text or "")


def as_text_parts(parts: list[Any]) -> list[Any]:
    """Plain-text documents and server tool uses as Text parts, for an
    upstream that reads neither."""
    out = []
    for part in parts:
        if isinstance(part, Document) and part.text is not None:
            out.append(Text(text=document_text(part)))
        elif isinstance(part, ServerToolUse):
            out.append(Text(text=server_tool_text(part)))
        else:
            out.append(part)
    return out


# The one parameter a custom tool becomes where the upstream has none.
CUSTOM_INPUT = "input"


def custom_tools_as_functions(request: Any) -> Any:
    """The request for an upstream without custom tools: each custom tool a
    function taking one string, `input`, described with its format (a
    grammar the model should follow is given in words). Its calls already
    carry `arguments["input"]`, so history needs no change."""
    if not any(tool.kind == "custom" for tool in request.tools):
        return request
    tools = []
    for tool in request.tools:
        if tool.kind != "custom":
            tools.append(tool)
            continue
        described = "The whole input as one string."
        grammar = (tool.format or {}).get("definition") if (tool.format or {}).get("type") == "grammar" else None
        if grammar:
            syntax = (tool.format or {}).get("syntax") or "grammar"
            described += f" It must follow this {syntax} grammar:\n{grammar}"
        parameters = {
            "type": "object",
            "properties": {CUSTOM_INPUT: {"type": "string", "description": described}},
            "required": [CUSTOM_INPUT],
        }
        tools.append(tool.model_copy(update={"kind": "function", "parameters": parameters, "format": None}))
    return request.model_copy(update={"tools": tools})
