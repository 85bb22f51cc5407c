"""Answers the proxy keeps, as the Responses API shows stored responses:
the error for an unknown id, a deletion's answer, the refusal to cancel
one, and the input items of the request that made a kept answer
(GET /v1/responses/{id}/input_items)."""

from __future__ import annotations

import hashlib
from typing import Any

from ...errors import ProxyError
from ...jsonutil import dumps
from ...unified import Document, Image, Message, ServerToolUse, Text, Thinking, ToolCall, ToolResult
from .answer import message_item, output_text, reasoning_item, search_item
from .wire import ID_PREFIX, compaction_of, input_part


def unknown(answer_id: str) -> ProxyError:
    return ProxyError(404, f"Response with id '{answer_id}' not found.", kind="invalid_request")


def deleted(answer_id: str) -> dict[str, Any]:
    return {"id": answer_id, "object": "response", "deleted": True}


def not_cancellable(answer_id: str) -> ProxyError:
    """Only a response created with background=true can be cancelled, and
    the proxy runs none in the background: every kept answer has finished.
    The API documents no message for it; this is the one servers that
    follow the API (vLLM) give."""
    return ProxyError(400, "Cannot cancel a synchronous response.", kind="invalid_request")


class _Lister:
    """Unified messages as the API's items, each with an id that is the same
    every time the same kept answer is listed."""

    def __init__(self, answer_id: str) -> None:
        self.answer_id = answer_id
        self.items: list[dict[str, Any]] = []

    def _id(self, kind: str) -> str:
        digest = hashlib.sha256(f"{self.answer_id}:{len(self.items)}".encode()).hexdigest()
        return ID_PREFIX.get(kind, "item_") + digest[:48]

    def add(self, message: Message) -> None:
        if message.role == "assistant":
            self._assistant(message.content)
            return
        parts = []
        for part in message.content:
            if isinstance(part, ToolResult):
                self._result(part)
            elif isinstance(part, (Text, Image, Document)):
                parts.append(input_part(part))
        if parts:
            self.items.append(
                {
                    "id": self._id("message"),
                    "type": "message",
                    "role": message.role,
                    "status": "completed",
                    "content": parts,
                }
            )

    def _result(self, result: ToolResult) -> None:
        output: Any = "".join(p.text for p in result.content if isinstance(p, Text))
        if not all(isinstance(p, Text) for p in result.content):
            output = [input_part(p) for p in result.content]
        self.items.append(
            {
                "id": self._id("function_call_output"),
                "type": "function_call_output",
                "call_id": result.id,
                "output": output,
                "status": "completed",
            }
        )

    def _assistant(self, content: list[Any]) -> None:
        texts: list[str] = []
        for part in [*content, None]:
            if isinstance(part, Text):
                texts.append(part.text)
                continue
            if "".join(texts):
                self.items.append(message_item(self._id("message"), [output_text("".join(texts), [])], "completed"))
            texts = []
            encrypted = compaction_of(part) if isinstance(part, Thinking) else None
            if encrypted is not None:
                self.items.append({"id": self._id("compaction"), "type": "compaction", "encrypted_content": encrypted})
            elif isinstance(part, Thinking) and part.text and not part.redacted:
                self.items.append(reasoning_item(self._id("reasoning"), part.text, None))
            elif isinstance(part, ToolCall):
                self.items.append(
                    {
                        "id": self._id("function_call"),
                        "type": "function_call",
                        "status": "completed",
                        "call_id": part.id,
                        "name": part.name,
                        "arguments": dumps(part.arguments),
                    }
                )
            elif isinstance(part, ServerToolUse) and part.name == "web_search":
                self.items.append(search_item(self._id("web_search_call"), part))


def input_item_list(messages: list[Message], answer_id: str) -> dict[str, Any]:
    """The items a kept answer's request added, newest first, as the API
    lists them unless asked otherwise."""
    lister = _Lister(answer_id)
    for message in messages:
        lister.add(message)
    items = lister.items[::-1]
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else "",
        "last_id": items[-1]["id"] if items else "",
        "has_more": False,
    }
