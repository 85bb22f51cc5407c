"""Strict fake upstream LLM APIs, one Starlette app per protocol.

    fake = FakeUpstream("openai" | "claude" | "gemini" | "ollama" | "responses", key="sk-..." or None)
    fake.app                  # the ASGI app (serve it with tests.support.server)
    fake.script("tool_call")  # queue scenario(s) for the next requests ("text" when empty)
    fake.requests, fake.last  # every request, recorded before validation
    fake.violations           # every reason the fake refused a request (it also answers 4xx)
    fake.reset()

Each fake rejects what the real API would reject, so a test that ends with
`fake.violations == []` shows the proxy sent only valid upstream requests;
and it streams its answers in awkwardly cut chunks, so the proxy's decoders
are exercised at every boundary. See scenarios.py for what can be scripted.
"""

from __future__ import annotations

from . import scenarios
from .base import Dialect, FakeUpstream, Recorded, awkward_chunks
from .claude import ClaudeDialect
from .gemini import GeminiDialect
from .ollama import OllamaDialect
from .openai import OpenAIDialect
from .responses import ResponsesDialect

# The model name the test configs route to on each fake upstream.
UPSTREAM_MODELS = {
    "openai": "gpt-upstream",
    "claude": "claude-upstream",
    "gemini": "gemini-upstream",
    "ollama": "llama-upstream",
    "responses": "gpt-resp-upstream",
}

DIALECTS: dict[str, type[Dialect]] = {
    "openai": OpenAIDialect,
    "claude": ClaudeDialect,
    "gemini": GeminiDialect,
    "ollama": OllamaDialect,
    "responses": ResponsesDialect,
}

__all__ = ["DIALECTS", "UPSTREAM_MODELS", "FakeUpstream", "Recorded", "awkward_chunks", "scenarios"]
