"""Anthropic Messages, both as the client's protocol and as an upstream's.

`client` serves Anthropic clients (/v1/messages, count_tokens, models),
`upstream` talks to Anthropic servers, and `wire` holds the request models,
constants, tables and small conversions both read and write."""

from __future__ import annotations

from ..base import Codec
from .client import ClaudeClient
from .upstream import ClaudeUpstream


class ClaudeCodec(ClaudeClient, ClaudeUpstream, Codec):
    """Both halves, as the protocol registry's entry. `Codec` last keeps the
    halves' own attributes ahead of either base's defaults, and types the
    entry as the registry lists it."""


__all__ = ["ClaudeClient", "ClaudeCodec", "ClaudeUpstream"]
