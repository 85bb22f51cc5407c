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


def loads(data: str | bytes) -> Any:
    """Parsed JSON; ValueError if it is not JSON."""
    try:
        return from_json(data)
    except ValueError:
        return json.loads(data)  # the same verdict, except what only it accepts


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
