"""The request rewritten for an upstream without function calling: the tools
become prompt text, and past calls and results become text in the call
format."""

from __future__ import annotations

from collections.abc import Sequence

from ..unified import Message, Part, Request, Text, Thinking, Tool, ToolCall, ToolResult
from .prompt import tool_instructions
from .render import format_call, format_result


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
