"""Small helpers the protocol validators share.

Validators walk a request body and collect problems as "path: message"
strings (e.g. "messages[2].tool_calls[0].id: string too long"), so a failing
integration test says exactly which field the proxy got wrong.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Iterable


class Problems:
    """A list of "path: message" strings, with typed accessors that record a
    problem when a field has the wrong type (and return None then)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def unknown_keys(self, obj: dict[str, Any], allowed: Iterable[str], path: str, what: str = "unknown field") -> None:
        allowed_set = set(allowed)
        for key in obj:
            if key not in allowed_set:
                self.add(join(path, key), what)

    def string(self, obj: dict[str, Any], key: str, path: str, *, required: bool = False, nonempty: bool = False) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.add(join(path, key), "field required")
            return None
        if not isinstance(value, str):
            self.add(join(path, key), f"must be a string, got {kind(value)}")
            return None
        if nonempty and not value:
            self.add(join(path, key), "must not be empty")
        return value

    def number(self, obj: dict[str, Any], key: str, path: str, low: float | None = None, high: float | None = None) -> None:
        value = obj.get(key)
        if value is None:
            return
        if not is_number(value):
            self.add(join(path, key), f"must be a number, got {kind(value)}")
        elif (low is not None and value < low) or (high is not None and value > high):
            self.add(join(path, key), f"{value} is out of range [{low}, {high}]")

    def integer(self, obj: dict[str, Any], key: str, path: str, *, required: bool = False, low: int | None = None) -> int | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.add(join(path, key), "field required")
            return None
        if not is_int(value):
            self.add(join(path, key), f"must be an integer, got {kind(value)}")
            return None
        if low is not None and value < low:
            self.add(join(path, key), f"must be >= {low}, got {value}")
        return value

    def boolean(self, obj: dict[str, Any], key: str, path: str) -> None:
        value = obj.get(key)
        if value is not None and not isinstance(value, bool):
            self.add(join(path, key), f"must be a boolean, got {kind(value)}")

    def one_of(self, obj: dict[str, Any], key: str, path: str, choices: Iterable[Any], *, required: bool = False) -> Any:
        value = obj.get(key)
        if value is None:
            if required:
                self.add(join(path, key), "field required")
            return None
        options = list(choices)
        if value not in options:
            self.add(join(path, key), f"{value!r} is not one of {options}")
        return value

    def obj(self, parent: dict[str, Any], key: str, path: str, *, required: bool = False) -> dict[str, Any] | None:
        value = parent.get(key)
        if value is None:
            if required:
                self.add(join(path, key), "field required")
            return None
        if not isinstance(value, dict):
            self.add(join(path, key), f"must be an object, got {kind(value)}")
            return None
        return value

    def array(self, parent: dict[str, Any], key: str, path: str, *, required: bool = False, nonempty: bool = False) -> list[Any] | None:
        value = parent.get(key)
        if value is None:
            if required:
                self.add(join(path, key), "field required")
            return None
        if not isinstance(value, list):
            self.add(join(path, key), f"must be an array, got {kind(value)}")
            return None
        if nonempty and not value:
            self.add(join(path, key), "must not be empty")
        return value


def join(path: str, key: str | int) -> str:
    """messages + 2 -> messages[2]; messages[2] + role -> messages[2].role"""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def kind(value: Any) -> str:
    """The JSON type name of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_base64(value: Any) -> bool:
    """Standard or URL-safe base64, padded or not (proto3 JSON accepts all)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    if not text:
        return False
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):
        try:
            base64.b64decode(padded, altchars=altchars, validate=True)
            return True
        except (binascii.Error, ValueError):
            continue
    return False
