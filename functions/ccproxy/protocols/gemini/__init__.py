"""Google Gemini generateContent, both as the client's protocol and as an
upstream's.

`client` serves Gemini clients, `upstream` talks to Gemini servers; `wire`
holds what both read and write alike, and `schema` translates JSON Schema to
and from the OpenAPI subset Gemini accepts.
"""

from __future__ import annotations

from ..base import Codec
from .client import GeminiClient
from .upstream import GeminiUpstream


class GeminiCodec(GeminiClient, GeminiUpstream, Codec):
    """Both halves: the protocol's registry entry."""


__all__ = ["GeminiClient", "GeminiCodec", "GeminiUpstream"]
