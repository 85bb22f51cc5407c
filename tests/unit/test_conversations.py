"""Kept conversations: an answer kept with the conversation that led to it,
continued by its id, read back and forgotten, on the embedded stores."""

from __future__ import annotations

import asyncio

import pytest
from ccproxy.conversations import Conversations
from ccproxy.errors import ProxyError
from ccproxy.stores.state import MemoryStateStore, SqliteStateStore
from ccproxy.unified import Message, Request, Response, Text

NOW = 1_800_000_000.0


def user(text: str) -> Message:
    return Message(role="user", content=[Text(text=text)])


@pytest.fixture(params=["memory", "sqlite"])
def conversations(request, tmp_path):
    state = MemoryStateStore() if request.param == "memory" else SqliteStateStore(tmp_path / "state.db")
    clock = [NOW]
    yield Conversations(lambda: state, keep_seconds=3600, clock=lambda: clock[0]), clock
    state.close()


def test_an_answer_is_kept_and_continued(conversations) -> None:
    kept, _ = conversations
    first = Request(model="m", messages=[user("hello")], store=True, answer_id="resp_1")
    answer = {"id": "resp_1", "object": "response"}

    async def scenario():
        added = await kept.resume(first)
        await kept.keep(first, added, Response(content=[Text(text="hi there")]), answer)
        second = Request(model="m", messages=[user("and then?")], continues="resp_1")
        added = await kept.resume(second)
        return added, second, await kept.get("resp_1")

    added, second, record = asyncio.run(scenario())
    assert added == 1
    assert [m.role for m in second.messages] == ["user", "assistant", "user"]
    assert second.messages[1].content == [Text(text="hi there")]
    assert record is not None and record.answer == answer
    assert record.added == [user("hello")]


def test_only_what_the_request_added_is_its_input(conversations) -> None:
    kept, _ = conversations

    async def scenario():
        first = Request(model="m", messages=[user("one")], store=True, answer_id="resp_a")
        await kept.keep(first, await kept.resume(first), Response(content=[Text(text="1")]), {"id": "resp_a"})
        second = Request(model="m", messages=[user("two")], continues="resp_a", store=True, answer_id="resp_b")
        await kept.keep(second, await kept.resume(second), Response(content=[Text(text="2")]), {"id": "resp_b"})
        return await kept.get("resp_b")

    record = asyncio.run(scenario())
    assert record is not None
    assert record.added == [user("two")]
    assert [m.role for m in record.messages] == ["user", "assistant", "user", "assistant"]


def test_an_unknown_expired_or_deleted_id_cannot_be_continued(conversations) -> None:
    kept, clock = conversations

    async def attempt(answer_id: str) -> ProxyError:
        with pytest.raises(ProxyError) as caught:
            await kept.resume(Request(model="m", messages=[user("x")], continues=answer_id))
        return caught.value

    async def scenario():
        unknown = await attempt("resp_nothing")
        request = Request(model="m", messages=[user("x")], store=True, answer_id="resp_gone")
        await kept.keep(request, 1, Response(), {"id": "resp_gone"})
        assert await kept.delete("resp_gone") is True
        assert await kept.delete("resp_gone") is False
        deleted = await attempt("resp_gone")
        request = Request(model="m", messages=[user("x")], store=True, answer_id="resp_old")
        await kept.keep(request, 1, Response(), {"id": "resp_old"})
        clock[0] += 3601
        expired = await attempt("resp_old")
        return unknown, deleted, expired

    for error in asyncio.run(scenario()):
        assert error.status == 400 and error.code == "previous_response_not_found"
        assert error.param == "previous_response_id"


def test_nothing_is_kept_without_store_and_odd_ids_name_nothing(conversations) -> None:
    kept, _ = conversations

    async def scenario():
        request = Request(model="m", messages=[user("x")], store=False, answer_id="resp_x")
        await kept.keep(request, 1, Response(), {"id": "resp_x"})
        odd = Request(model="m", messages=[user("x")], store=True, answer_id="resp#1#0")
        await kept.keep(odd, 1, Response(), {"id": odd.answer_id})
        return await kept.get("resp_x"), await kept.get("resp#1#0"), await kept.delete("../etc")

    assert asyncio.run(scenario()) == (None, None, False)
