"""OpenAI chat completions: the protocol's client half (serving clients of
/v1/chat/completions, embeddings and models), its upstream half (talking to
servers of it), and the wire models and tables both share."""

from __future__ import annotations

from ..base import Codec
from .client import OpenAIClient
from .upstream import OpenAIUpstream


class OpenAICodec(OpenAIClient, OpenAIUpstream, Codec):
    """Both halves, as the protocol registry's entry."""


__all__ = ["OpenAICodec", "OpenAIClient", "OpenAIUpstream"]
