"""Ollama's native API, both as the client's protocol and as an upstream's.

`client` serves Ollama clients, `upstream` talks to Ollama servers, and
`wire` holds the request bodies and call shapes both read and write."""

from __future__ import annotations

from ..base import Codec
from .client import OLLAMA_VERSION, OllamaClient
from .upstream import OllamaUpstream


class OllamaCodec(OllamaClient, OllamaUpstream, Codec):
    """Ollama's registry entry: both halves. `Codec` last keeps the halves'
    own attributes ahead of either base's defaults, and types the entry as
    the registry lists it."""


__all__ = ["OLLAMA_VERSION", "OllamaClient", "OllamaCodec", "OllamaUpstream"]
