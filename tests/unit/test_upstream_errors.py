"""Upstream error answers read as what they mean for the key that got them."""

from __future__ import annotations

import json

import pytest
from ccproxy.protocols import CODECS
from ccproxy.proxy import retryable

BAD_KEY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}
        ],
    }
}
BAD_REQUEST = {"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}


def test_a_gemini_bad_key_is_a_key_failure_not_the_clients_mistake() -> None:
    """Gemini answers a bad key with 400 INVALID_ARGUMENT; said as a 401, the
    rotation cools that key and tries the next instead of failing the request."""
    error = CODECS["gemini"].decode_error(400, json.dumps(BAD_KEY).encode(), {})
    assert (error.status, error.kind, error.code) == (401, "authentication", "API_KEY_INVALID")
    assert retryable(error)


@pytest.mark.parametrize("protocol", sorted(CODECS))
def test_other_errors_keep_the_upstreams_status(protocol: str) -> None:
    body = BAD_REQUEST if protocol == "gemini" else {"error": {"message": "bad", "type": "invalid_request_error"}}
    error = CODECS[protocol].decode_error(400, json.dumps(body).encode(), {})
    assert error.status == 400 and not retryable(error)


@pytest.mark.parametrize("protocol", sorted(CODECS))
def test_an_error_body_nested_too_deep_is_read_as_text(protocol: str) -> None:
    body = ('{"error":' * 5000 + "1" + "}" * 5000).encode()
    error = CODECS[protocol].decode_error(503, body, {})
    assert error.status == 503 and retryable(error)
    assert error.message.startswith('{"error":{"error":')


def test_a_server_tool_from_another_protocol_carries_the_beta_anthropic_needs() -> None:
    """Gemini's urlContext becomes Anthropic's web_fetch, which is behind a beta."""
    from ccproxy.unified import Message, Request, ServerTool, Text

    request = Request(
        model="m",
        messages=[Message(role="user", content=[Text(text="read it")])],
        server_tools=[ServerTool(kind="web_fetch", name="url_context")],
        betas=["pdfs-2024-09-25"],
    )
    assert CODECS["claude"].upstream_headers(request) == {"anthropic-beta": "pdfs-2024-09-25,web-fetch-2025-09-10"}
