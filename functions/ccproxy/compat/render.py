"""Past calls and results written as text in the call format, for the
prompt's example and the rewritten history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..jsonutil import dumps
from ..unified import Document, Image, Text, Tool, ToolCall, ToolResult
from .values import CLOSE_TAG, ENTITY_AMP, TAG_LT, convert_arg, parameters, schema_types


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
    return TAG_LT.sub("&lt;", ENTITY_AMP.sub("&amp;", value))


def _render_arg(value: Any, string_like: bool) -> str:
    if string_like and isinstance(value, str):
        text = _escape_text(value)
        return f"\n{text}\n" if "\n" in text else text
    text = dumps(value)
    return text.replace("<", "\\u003c") if TAG_LT.search(text) else text


def format_call(call: ToolCall, tools: Sequence[Tool] = ()) -> str:
    """A past call in the format the model is asked to write.

    Each argument is checked to read back to the same value; when one would
    not (say a number for a string parameter), the call is written with a JSON
    body instead, which the parser also reads, so nothing is distorted.
    """
    tool = next((t for t in tools if t.name == call.name), None)
    properties, root = parameters(tool) if tool is not None else ({}, {})
    lines = [f"<tool_call name={_attribute(call.name)}>"]
    for key, value in call.arguments.items():
        types = schema_types(properties.get(key), root)
        text = _render_arg(value, not types or "string" in types)
        quotable = "'" not in key or '"' not in key
        if not quotable or not _same(convert_arg(properties, root, key, text), value):
            body = dumps(call.arguments)
            if TAG_LT.search(body):
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
