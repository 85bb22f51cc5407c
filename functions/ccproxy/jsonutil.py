"""JSON helpers shared by the codecs: compact output, forgiving argument parsing."""

from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Compact JSON text with non-ASCII kept as is."""
    return _encoder.encode(value)


def dumpb(value: Any) -> bytes:
    return _encoder.encode(value).encode()


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
        value = json.loads(text)
    except ValueError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"value": value}
