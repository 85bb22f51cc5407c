"""Compaction as the Responses API answers it (POST /v1/responses/compact),
where the upstream has no compaction of its own: the conversation's user
messages, then one compaction item that carries the summary the target
model wrote, marked so that the client half reads it back."""

from __future__ import annotations

import time
from typing import Any

from ...errors import ProxyError
from ...unified import Document, Image, Message, Request, Response, Text
from .wire import input_part, mark_summary, new_id, usage_json


def _user_items(messages: list[Message]) -> list[dict[str, Any]]:
    """Each user turn as a message item; tool results are the model's work,
    which the summary tells."""
    items = []
    for message in messages:
        if message.role != "user":
            continue
        parts = [input_part(p) for p in message.content if isinstance(p, (Text, Image, Document))]
        if parts:
            items.append(
                {"id": new_id("message"), "type": "message", "status": "completed", "role": "user", "content": parts}
            )
    return items


def compacted_response(summary: Response, request: Request) -> dict[str, Any]:
    text = "".join(p.text for p in summary.content if isinstance(p, Text)).strip()
    if not text:
        raise ProxyError(502, "the upstream answered the request for a summary with no text", kind="unavailable")
    compaction = {"id": new_id("compaction"), "type": "compaction", "encrypted_content": mark_summary(text)}
    return {
        "id": new_id("response"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [*_user_items(request.messages), compaction],
        "usage": usage_json(summary.usage),
    }
