"""Tool-call ids: minted where an upstream gives none, reshaped where a
protocol restricts them. Every reshaping is deterministic, so a call's id and
its result's id, converted separately, still match."""

from __future__ import annotations

import hashlib
import re
import secrets

_NOT_ANTHROPIC = re.compile(r"[^a-zA-Z0-9_-]")
OPENAI_MAX_ID = 40


def new_call_id(prefix: str = "call_") -> str:
    """`prefix` plus 24 random characters from [A-Za-z0-9_-] (18 random
    bytes, one system call): unique, and valid for OpenAI (at most 40
    characters), Anthropic (its pattern) and Ollama."""
    return prefix + secrets.token_urlsafe(18)


def for_anthropic(call_id: str) -> str:
    """Anthropic requires ^[a-zA-Z0-9_-]+$."""
    cleaned = _NOT_ANTHROPIC.sub("_", call_id)
    return cleaned or "toolu_empty"


def for_openai(call_id: str) -> str:
    """OpenAI rejects ids longer than 40 characters: shorten by hashing."""
    if len(call_id) <= OPENAI_MAX_ID:
        return call_id
    # surrogatepass: an id may hold a lone surrogate, decoded from an escape.
    return "call_" + hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
