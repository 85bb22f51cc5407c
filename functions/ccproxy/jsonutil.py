"""JSON for every body and stream event: compact output, forgiving argument
parsing.

Parsing and writing go through pydantic-core's JSON (Rust, already a
dependency), three to six times faster than the standard library's on
event-sized documents; both run once or twice per streamed event. What it
refuses and the standard library takes (a lone UTF-16 surrogate such as a
truncated emoji, in an escape or in a string) falls back to the standard
library, so the two behave the same to callers: ValueError for JSON that is
not JSON, and lone surrogates passed on escaped.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import from_json, to_json

_escaping_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def dumpb(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes, non-ASCII kept as is."""
    try:
        return to_json(value)
    except ValueError:  # PydanticSerializationError: a lone surrogate, or not JSON at all
        return _escaping_encoder.encode(value).encode()


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is."""
    return dumpb(value).decode()


# pydantic-core parses JSON nested at most this many arrays and objects deep,
# and writes again what it parsed. The standard library's fallback is held to
# the same depth, so that whatever is read can be written (a kept
# conversation, a record) and no recursion downstream meets a deeper one.
MAX_DEPTH = 200
_TOO_DEEP = "recursion limit exceeded"  # pydantic-core's error for it


class TooDeep(ValueError):
    """JSON nested more than MAX_DEPTH arrays and objects deep."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested more than {MAX_DEPTH} levels deep")


def loads(data: str | bytes, *, strict: bool = True) -> Any:
    """Parsed JSON; ValueError if it is not JSON, TooDeep (a ValueError) if it
    is nested deeper than MAX_DEPTH. `strict=False` lets control characters
    stand inside strings, as models write them."""
    if strict:
        try:
            return from_json(data)
        except ValueError as exc:
            if str(exc).startswith(_TOO_DEEP):
                raise TooDeep() from None
        except TypeError:  # text holding a lone surrogate itself (a decoded escape), which it cannot read
            pass
    try:
        value = json.loads(data, strict=strict)  # the same verdict, except what only it accepts
    except RecursionError:
        raise TooDeep() from None
    if _deeper_than(value, MAX_DEPTH):
        raise TooDeep()
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep in `value`
    (walked without recursion: only the rare fallback's values come here)."""
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def loads_object(text: str) -> dict[str, Any]:
    """Tool-call arguments as an object, whatever the model produced.

    Empty text is `{}`; valid JSON that is not an object is wrapped as
    `{"value": ...}`; text that is not JSON at all is kept under `_raw`, so
    nothing the model said is lost and no protocol receives a bare string.
    """
    text = text.strip()
    if not text:
        return {}
    try:
        value = loads(text)
    except ValueError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"value": value}
