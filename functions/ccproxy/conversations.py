"""Conversations the proxy keeps for a client, so that a later request may
continue one by the id of its last answer instead of sending it again (the
Responses API's stored responses: `store`, `previous_response_id`,
`GET`/`DELETE /v1/responses/{id}`).

A codec says what a request wants (`Request.store`, `Request.continues`) and
names the answer (`Request.answer_id`); this module keeps, in the state
store, the whole conversation up to and including that answer, the answer
as the client received it, and what the request that made it added. Any
upstream can continue a kept conversation: it is unified messages.

The state store holds it for `keep_seconds`; the calls run in a worker thread
(a conversation may be megabytes).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from .errors import ProxyError
from .jsonutil import dumpb, loads
from .stores.state import StateStore
from .unified import Message, Request, Response

_MESSAGES = TypeAdapter(list[Message])
# What an answer id may look like; any other id names nothing kept (the stores
# build keys from it, and a client chooses the ids it asks for).
_ANSWER_ID = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")


@dataclass(slots=True)
class Kept:
    """One kept answer: as the client received it, the conversation up to
    and including it, and what its request added to the conversation."""

    answer: dict[str, Any]
    messages: list[Message]
    added: list[Message]


class Conversations:
    def __init__(
        self, state: Callable[[], StateStore], keep_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._state = state  # the rotation's store, as it is now (tests swap it)
        self.keep_seconds = keep_seconds
        self.clock = clock

    @property
    def state(self) -> StateStore:
        return self._state()

    async def resume(self, request: Request) -> int:
        """Puts the conversation `request.continues` names before the
        request's own messages; the number of messages the request added
        itself. An unknown (or expired, or deleted) id is the client's to fix:
        a 400 naming it, as the Responses API answers."""
        if not request.continues:
            return len(request.messages)
        kept = await self.get(request.continues)
        if kept is None:
            raise ProxyError(
                400,
                f"Previous response with id '{request.continues}' not found.",
                kind="invalid_request",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        added = len(request.messages)
        request.messages = kept.messages + request.messages
        return added

    async def keep(self, request: Request, added: int, response: Response, answer: dict[str, Any]) -> None:
        """Keeps the answer `request.answer_id` names, with the conversation
        that led to it."""
        if not (request.store and request.answer_id and _ANSWER_ID.match(request.answer_id)):
            return
        reply = Message(role="assistant", content=list(response.content))
        document = {
            "answer": answer,
            "messages": [m.model_dump(mode="json") for m in request.messages + [reply]],
            "added": [m.model_dump(mode="json") for m in request.messages[len(request.messages) - added :]],
        }
        data = dumpb(document)
        expires = self.clock() + self.keep_seconds
        await asyncio.to_thread(self.state.put_conversation, request.answer_id, data, expires)

    async def get(self, answer_id: str) -> Kept | None:
        if not _ANSWER_ID.match(answer_id):
            return None
        data = await asyncio.to_thread(self.state.get_conversation, answer_id, self.clock())
        if data is None:
            return None
        document = loads(data)
        return Kept(
            answer=document["answer"],
            messages=_MESSAGES.validate_python(document["messages"]),
            added=_MESSAGES.validate_python(document["added"]),
        )

    async def delete(self, answer_id: str) -> bool:
        if not _ANSWER_ID.match(answer_id):
            return False
        return await asyncio.to_thread(self.state.delete_conversation, answer_id)
