"""The OpenAI Responses API (/v1/responses, what Codex speaks): the
protocol's client half, its upstream half, and what both share (wire); the
client half's answers are built in `answer`, its streams in `events`, its
compactions in `compact`, and what it shows of kept answers in `kept`."""

from __future__ import annotations

from ..base import Codec
from .client import ResponsesClient
from .upstream import ResponsesUpstream


class ResponsesCodec(ResponsesClient, ResponsesUpstream, Codec):
    """Both halves, as the protocol registry's entry."""


__all__ = ["ResponsesClient", "ResponsesCodec", "ResponsesUpstream"]
