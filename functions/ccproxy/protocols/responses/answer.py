"""A unified answer as a Responses client gets it: the output items (whole,
or one at a time for the stream encoder) and the Response object around
them, which echoes the client's request as the API does."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ...jsonutil import dumps
from ...unified import (
    Request,
    Response,
    SearchResult,
    ServerToolUse,
    StopReason,
    Text,
    Thinking,
    ToolCall,
)
from .wire import (
    ENCRYPTED,
    INCOMPLETE_BY_STOP,
    PROTOCOL,
    SUMMARIES,
    Foreign,
    client_encrypted,
    client_facts,
    custom_input,
    mark_foreign,
    new_id,
    text_format_json,
    tool_choice_json,
    tool_json,
    unpack_reasoning,
)

# The efforts a Response object may echo.
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


@dataclass(frozen=True, slots=True)
class View:
    """What encoding an answer needs to know of the client's request:
    whether thinking is shown as reasoning summaries, whether the client asked
    for reasoning's encrypted content (which carries signatures), and which
    tools are custom (their calls are custom_tool_call items)."""

    facts: dict[str, Any]
    summaries: bool
    encrypted: bool
    custom: frozenset[str]

    @classmethod
    def of(cls, request: Request) -> View:
        facts = client_facts(request)
        return cls(
            facts=facts,
            summaries=facts.get("summary") in SUMMARIES,
            encrypted=ENCRYPTED in (facts.get("include") or ()),
            custom=frozenset(t.name for t in request.tools if t.kind == "custom"),
        )


def status_of(stop: StopReason | None) -> tuple[str, str | None]:
    """The Response status for a stop reason, and the reason an incomplete
    one gives."""
    reason = INCOMPLETE_BY_STOP.get(stop or "end_turn")
    return ("incomplete", reason) if reason else ("completed", None)


# ---------------------------------------------------------------- items


def output_text(text: str, sources: list[SearchResult]) -> dict[str, Any]:
    """An output_text part; a web search's sources become citations of it."""
    return {"type": "output_text", "text": text, "annotations": citations(sources, text), "logprobs": []}


def citations(sources: list[SearchResult], text: str) -> list[dict[str, Any]]:
    return [
        {"type": "url_citation", "url": s.url, "title": s.title or s.url, "start_index": 0, "end_index": len(text)}
        for s in sources
    ]


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": parts}


def reasoning_item(item_id: str, summary: str, encrypted: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": summary}] if summary else [],
    }
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def call_item(item_id: str, call_id: str, name: str, arguments: str, custom: bool) -> dict[str, Any]:
    """A finished call: a custom tool's carries its input string, a
    function's its arguments as JSON text."""
    if custom:
        return {"id": item_id, "type": "custom_tool_call", "call_id": call_id, "name": name, "input": arguments}
    return {
        "id": item_id,
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def search_item(item_id: str, use: ServerToolUse | None) -> dict[str, Any]:
    """A web search the upstream ran; None while it is under way."""
    action: dict[str, Any] = {"type": "search"}
    if use is not None:
        query = use.input.get("query")
        if isinstance(query, str):
            action["query"] = query
        if use.results:
            action["sources"] = [{"type": "url", "url": r.url} for r in use.results]
    return {
        "id": item_id,
        "type": "web_search_call",
        "status": "in_progress" if use is None else "completed",
        "action": action,
    }


def call_signature_item(signature: str, origin: str | None) -> dict[str, Any]:
    """A call's own signature (a Gemini thought signature) as a reasoning
    item before the call: clients send reasoning items back, while they
    rebuild calls from their own fields."""
    return reasoning_item(new_id("reasoning"), "", mark_foreign(Foreign(signature, origin, on_call=True)))


# ---------------------------------------------------------------- a whole answer


class _Output:
    """Unified content as output items: text in a row makes one message,
    and the sources of a web search are cited by the message after it."""

    def __init__(self, view: View, status: str) -> None:
        self.view = view
        self.status = status
        self.items: list[dict[str, Any]] = []
        self.texts: list[str] = []
        self.sources: list[SearchResult] = []

    def add(self, part: Any) -> None:
        if isinstance(part, Text):
            if part.text:
                self.texts.append(part.text)
            return
        self.flush()
        if isinstance(part, Thinking):
            item = self._reasoning(part)
            if item is not None:
                self.items.append(item)
        elif isinstance(part, ToolCall):
            if part.signature and self.view.encrypted:
                self.items.append(call_signature_item(part.signature, part.origin))
            custom = part.name in self.view.custom
            arguments = custom_input(part.arguments) if custom else dumps(part.arguments)
            kind = "custom_tool_call" if custom else "function_call"
            self.items.append(call_item(new_id(kind), part.id, part.name, arguments, custom))
        elif isinstance(part, ServerToolUse):
            if part.name == "web_search":
                self.items.append(search_item(new_id("web_search_call"), part))
            self.sources.extend(part.results)

    def flush(self) -> None:
        if self.texts:
            text = "".join(self.texts)
            self.items.append(message_item(new_id("message"), [output_text(text, self.sources)], "completed"))
            self.texts, self.sources = [], []

    def finish(self) -> list[dict[str, Any]]:
        self.flush()
        if self.status == "incomplete" and self.items and self.items[-1]["type"] == "message":
            self.items[-1]["status"] = "incomplete"
        return self.items

    def _reasoning(self, part: Thinking) -> dict[str, Any] | None:
        """A reasoning item, where it carries something for this client: a
        summary it asked for, or encrypted content it asked for."""
        shown = part.text if self.view.summaries and not part.redacted else ""
        encrypted = None
        if part.signature and self.view.encrypted:
            hidden = None if shown else part.text
            encrypted = client_encrypted(part.signature, part.origin, hidden, redacted=part.redacted)
        if not shown and encrypted is None:
            return None
        item_id = unpack_reasoning(part.signature)[0] if part.signature and part.origin == PROTOCOL else None
        return reasoning_item(item_id or new_id("reasoning"), shown, encrypted)


def output_items(response: Response, view: View) -> tuple[str, list[dict[str, Any]]]:
    """The Response status of a whole answer and its output items."""
    status, _ = status_of(response.stop_reason)
    output = _Output(view, status)
    for part in response.content:
        output.add(part)
    return status, output.finish()


# ---------------------------------------------------------------- the Response object


def response_shell(request: Request, view: View) -> dict[str, Any]:
    """The fields of a Response object that echo the client's request, in
    the API's order; status, output and usage are added per answer."""
    facts = view.facts
    reasoning = request.reasoning
    effort = facts.get("effort") or (reasoning.effort if reasoning is not None else None)
    summary = facts.get("summary")
    return {
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.system,
        "max_output_tokens": request.max_tokens,
        "max_tool_calls": None,
        "model": request.model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.continues,
        "prompt_cache_key": facts.get("prompt_cache_key"),
        "reasoning": {
            "effort": effort if effort in _EFFORTS else None,
            "summary": summary if summary in SUMMARIES else None,
        },
        "safety_identifier": facts.get("safety_identifier"),
        "service_tier": facts.get("service_tier") or "default",
        "store": request.store,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": {"format": text_format_json(request.response_format), "verbosity": facts.get("verbosity") or "medium"},
        "tool_choice": tool_choice_json(request.tool_choice, request.tools),
        "tools": [tool_json(t, t.name in (facts.get("strict") or ())) for t in request.tools]
        + list(facts.get("builtin") or ()),
        "top_logprobs": 0,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": facts.get("user"),
        "metadata": facts.get("metadata") or {},
    }


def response_object(
    request: Request,
    view: View,
    *,
    response_id: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    stop: StopReason | None = None,
    error: dict[str, Any] | None = None,
    created_at: int | None = None,
    shell: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A whole Response object: `status` in_progress (the stream's first
    events), completed, incomplete (the reason from `stop`) or failed
    (with `error`)."""
    now = int(time.time())
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at if created_at is not None else now,
        "status": status,
    }
    body.update(shell if shell is not None else response_shell(request, view))
    body["output"] = output
    body["usage"] = usage
    if status == "completed":
        body["completed_at"] = now
    if status == "incomplete":
        body["incomplete_details"] = {"reason": status_of(stop)[1] or "max_output_tokens"}
    if error is not None:
        body["error"] = error
    return body
