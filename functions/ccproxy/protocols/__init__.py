"""The four protocols. Each module holds one codec; this registry names them."""

from __future__ import annotations

from .base import ClientContext, Codec, Route, StreamDecoder, StreamEncoder
from .claude import ClaudeCodec
from .gemini import GeminiCodec
from .ollama import OllamaCodec
from .openai import OpenAICodec

CODECS: dict[str, Codec] = {
    codec.protocol: codec for codec in (OpenAICodec(), ClaudeCodec(), GeminiCodec(), OllamaCodec())
}

__all__ = ["CODECS", "ClientContext", "Codec", "Route", "StreamDecoder", "StreamEncoder"]
