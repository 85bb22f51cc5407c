"""The protocols: one package each, its client half and its upstream half.

This is the one place that lists them. A new protocol is a new package here
and a line in `ProtocolName` and `CODECS`; the core reads only the codecs'
declared capabilities, so it does not change.
"""

from __future__ import annotations

from typing import Literal, get_args

from .base import ClientCodec, ClientContext, Codec, Route, StreamDecoder, StreamEncoder, UpstreamCodec
from .claude import ClaudeCodec
from .gemini import GeminiCodec
from .ollama import OllamaCodec
from .openai import OpenAICodec
from .responses import ResponsesCodec

# What a provider's `protocol:` may name in the config.
ProtocolName = Literal["openai", "claude", "gemini", "ollama", "responses"]

CODECS: dict[str, Codec] = {
    codec.protocol: codec for codec in (OpenAICodec(), ClaudeCodec(), GeminiCodec(), OllamaCodec(), ResponsesCodec())
}

assert set(CODECS) == set(get_args(ProtocolName)), "every protocol name has its codec"


def client_codec(protocol: str) -> ClientCodec:
    """The half that serves clients of `protocol`."""
    return CODECS[protocol]


def client_codecs() -> list[ClientCodec]:
    """Every protocol's client half, in the registry's order."""
    return list(CODECS.values())


def upstream_codec(protocol: str) -> UpstreamCodec:
    """The half that talks to upstream servers of `protocol`."""
    return CODECS[protocol]


__all__ = [
    "CODECS",
    "ClientCodec",
    "ClientContext",
    "Codec",
    "ProtocolName",
    "Route",
    "StreamDecoder",
    "StreamEncoder",
    "UpstreamCodec",
    "client_codec",
    "client_codecs",
    "upstream_codec",
]
