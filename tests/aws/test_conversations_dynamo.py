"""Stored conversations in the DynamoDB state store, against moto's server
over HTTP (boto3 unpatched): compressed, split into chunk items beyond what
one item holds, and never read half-written or mixed from two puts.

Where a test needs to act in the middle of a put or a get, the store gets
a `Hooked` client: the real boto3 client, with a hook run before one of its
calls is sent on."""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ccproxy.stores.state import DynamoStateStore
from ccproxy.stores.state import dynamo as dynamo_module
from ccproxy.stores.state.dynamo import CONVERSATION_CHUNK_BYTES

from tests.support.aws import MotoServer, moto_server  # noqa: F401  (the fixture)

LATER = 4_000_000_000.0  # conversations expire by the real clock too: keep them in the future
MB = 1024 * 1024
ITEM_LIMIT = 400 * 1024  # what DynamoDB holds in one item, names included


class Hooked:
    """A boto3 client whose named calls first run a hook: hook(call, **kwargs)
    decides what happens and returns the reply."""

    def __init__(self, client: Any, **hooks: Callable[..., Any]) -> None:
        self._client = client
        self._hooks = hooks
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        hook = self._hooks.get(name)
        if hook is None:
            return real

        def call(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return hook(real, **kwargs)

        return call


@pytest.fixture
def table(moto_server: MotoServer) -> str:  # noqa: F811
    return moto_server.create_state_table()


@pytest.fixture
def client(moto_server: MotoServer) -> Any:  # noqa: F811
    return moto_server.client("dynamodb")


@pytest.fixture
def store(table: str, client: Any) -> Iterator[DynamoStateStore]:
    store = DynamoStateStore(table, client=client)
    yield store


def items(client: Any, table: str, conversation_id: str) -> dict[str, dict[str, Any]]:
    """Every item of the conversation, head and chunks, by key."""
    found: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page.get("Items", []):
            pk = item["pk"]["S"]
            if pk == f"conv#{conversation_id}" or pk.startswith(f"conv#{conversation_id}#"):
                found[pk] = item
    return found


def chunks(client: Any, table: str, conversation_id: str) -> dict[str, dict[str, Any]]:
    return {pk: item for pk, item in items(client, table, conversation_id).items() if pk != f"conv#{conversation_id}"}


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's measure: names and values in bytes."""
    size = 0
    for name, value in item.items():
        ((kind, raw),) = value.items()
        size += len(name.encode()) + (len(raw) if kind == "B" else len(str(raw).encode()))
    return size


def head_item(client: Any, table: str, conversation_id: str) -> dict[str, Any]:
    return client.get_item(TableName=table, Key={"pk": {"S": f"conv#{conversation_id}"}}, ConsistentRead=True)["Item"]


# ------------------------------------------------------------ layout


def test_large_data_is_split_into_chunks_and_read_back(store: DynamoStateStore, client: Any, table: str) -> None:
    data = os.urandom(5 * MB)  # incompressible: zlib makes it a little larger
    store.put_conversation("resp_big", data, LATER + 0.5)
    expected_chunks = math.ceil(len(zlib.compress(data)) / CONVERSATION_CHUNK_BYTES)
    assert expected_chunks >= 15
    found = items(client, table, "resp_big")
    head = found.pop("conv#resp_big")
    assert int(head["chunks"]["N"]) == len(found) == expected_chunks
    assert "data" not in head
    assert int(head["size"]["N"]) == len(data)
    generation = head["gen"]["S"]
    assert sorted(found) == sorted(f"conv#resp_big#{generation}#{n}" for n in range(expected_chunks))
    for item in [head, *found.values()]:
        assert item_size(item) < ITEM_LIMIT
        # TTL on every item, so DynamoDB drops the chunks with the head.
        assert item["expires_at"] == {"N": str(int(LATER) + 1)}
    for chunk in found.values():
        assert chunk["gen"] == {"S": generation}
        assert len(chunk["data"]["B"]) <= CONVERSATION_CHUNK_BYTES
    assert store.get_conversation("resp_big", LATER) == data


def test_small_data_sits_compressed_in_the_head(store: DynamoStateStore, client: Any, table: str) -> None:
    data = b'{"input": [{"role": "user", "content": "' + b"hello " * 20_000 + b'"}]}'
    store.put_conversation("resp_small", data, LATER + 60)
    found = items(client, table, "resp_small")
    assert list(found) == ["conv#resp_small"]
    head = found["conv#resp_small"]
    assert head["chunks"] == {"N": "0"}
    assert zlib.decompress(head["data"]["B"]) == data
    assert len(head["data"]["B"]) < len(data) / 20
    assert store.get_conversation("resp_small", LATER) == data


def test_compressible_data_beyond_one_item_fits_in_the_head(store: DynamoStateStore, client: Any, table: str) -> None:
    data = b"".join(b'{"role": "assistant", "content": "answer %d"},' % n for n in range(100_000))
    assert len(data) > 4 * MB
    store.put_conversation("resp_json", data, LATER + 60)
    assert list(items(client, table, "resp_json")) == ["conv#resp_json"]
    assert store.get_conversation("resp_json", LATER) == data


def test_a_reply_beyond_16_mb_comes_in_parts(table: str, client: Any) -> None:
    """BatchGetItem answers at most 16 MB: the rest comes back as
    UnprocessedKeys, asked for again."""
    hooked = Hooked(client, batch_get_item=lambda call, **kwargs: call(**kwargs))
    store = DynamoStateStore(table, client=hooked)
    data = os.urandom(20 * MB)
    store.put_conversation("resp_huge", data, LATER + 60)
    assert store.get_conversation("resp_huge", LATER) == data
    assert hooked.calls["batch_get_item"] >= 2


# ------------------------------------------------------------ replace and delete


def test_replacing_a_larger_conversation_leaves_no_stale_chunk(
    store: DynamoStateStore, client: Any, table: str
) -> None:
    store.put_conversation("resp_r", os.urandom(5 * MB), LATER + 60)
    assert len(chunks(client, table, "resp_r")) >= 15
    smaller = os.urandom(int(1.5 * MB))
    store.put_conversation("resp_r", smaller, LATER + 60)
    generation = head_item(client, table, "resp_r")["gen"]["S"]
    left = chunks(client, table, "resp_r")
    assert len(left) == math.ceil(len(zlib.compress(smaller)) / CONVERSATION_CHUNK_BYTES)
    assert all(item["gen"]["S"] == generation for item in left.values())
    assert store.get_conversation("resp_r", LATER) == smaller
    # And a small one, in the head, leaves no chunk at all.
    store.put_conversation("resp_r", b"tiny", LATER + 60)
    assert list(items(client, table, "resp_r")) == ["conv#resp_r"]
    assert store.get_conversation("resp_r", LATER) == b"tiny"


def test_delete_removes_the_head_and_the_chunks(store: DynamoStateStore, client: Any, table: str) -> None:
    store.put_conversation("resp_d", os.urandom(2 * MB), LATER + 60)
    assert store.delete_conversation("resp_d") is True
    assert items(client, table, "resp_d") == {}
    assert store.delete_conversation("resp_d") is False
    assert store.get_conversation("resp_d", LATER) is None


def test_chunks_left_to_ttl_when_their_delete_fails(table: str, client: Any) -> None:
    """Deleting the chunks is best effort: the head is gone, so is the conversation."""

    def refuse_deletes(call: Callable[..., Any], **kwargs: Any) -> Any:
        if any("DeleteRequest" in r for r in kwargs["RequestItems"][table]):
            raise client.exceptions.ProvisionedThroughputExceededException(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "BatchWriteItem"
            )
        return call(**kwargs)

    store = DynamoStateStore(table, client=Hooked(client, batch_write_item=refuse_deletes))
    data = os.urandom(2 * MB)
    store.put_conversation("resp_t", data, LATER + 60)
    store.put_conversation("resp_t", b"replaced", LATER + 60)
    assert store.get_conversation("resp_t", LATER) == b"replaced"
    assert len(chunks(client, table, "resp_t")) >= 6  # the old ones, for TTL
    assert store.delete_conversation("resp_t") is True
    assert store.get_conversation("resp_t", LATER) is None


# ------------------------------------------------------------ never half-written, never mixed


def test_chunks_without_their_head_are_no_conversation(store: DynamoStateStore, client: Any, table: str) -> None:
    """A put that stopped before its head (a Lambda timed out) left chunks only."""
    store.put_conversation("resp_h", os.urandom(2 * MB), LATER + 60)
    client.delete_item(TableName=table, Key={"pk": {"S": "conv#resp_h"}})
    assert chunks(client, table, "resp_h")
    assert store.get_conversation("resp_h", LATER) is None


def test_a_missing_chunk_gives_none_not_part(store: DynamoStateStore, client: Any, table: str) -> None:
    store.put_conversation("resp_m", os.urandom(2 * MB), LATER + 60)
    generation = head_item(client, table, "resp_m")["gen"]["S"]
    client.delete_item(TableName=table, Key={"pk": {"S": f"conv#resp_m#{generation}#3"}})
    assert store.get_conversation("resp_m", LATER) is None


def test_a_chunk_of_another_put_is_never_mixed_in(store: DynamoStateStore, client: Any, table: str) -> None:
    store.put_conversation("resp_g", os.urandom(2 * MB), LATER + 60)
    generation = head_item(client, table, "resp_g")["gen"]["S"]
    key = f"conv#resp_g#{generation}#2"
    chunk = client.get_item(TableName=table, Key={"pk": {"S": key}})["Item"]
    client.put_item(TableName=table, Item={**chunk, "gen": {"S": "another-put"}})
    assert store.get_conversation("resp_g", LATER) is None


def test_an_old_head_never_reads_the_new_chunks(store: DynamoStateStore, client: Any, table: str) -> None:
    store.put_conversation("resp_o", os.urandom(2 * MB), LATER + 60)
    old_head = head_item(client, table, "resp_o")
    store.put_conversation("resp_o", os.urandom(2 * MB), LATER + 60)
    client.put_item(TableName=table, Item=old_head)  # its chunks were deleted with the replace
    assert store.get_conversation("resp_o", LATER) is None


def test_a_reader_during_a_put_sees_the_previous_conversation_whole(
    store: DynamoStateStore, client: Any, table: str
) -> None:
    """Read before each of the writer's calls: the previous conversation
    until the head is written, the new one from then on, nothing between."""
    before, after = os.urandom(3 * MB), os.urandom(10 * MB)  # more chunks than one batch writes
    store.put_conversation("resp_p", before, LATER + 60)
    seen: list[tuple[str, bytes | None]] = []

    def read_first(name: str) -> Callable[..., Any]:
        def hook(call: Callable[..., Any], **kwargs: Any) -> Any:
            seen.append((name, store.get_conversation("resp_p", LATER)))
            reply = call(**kwargs)
            seen.append((f"after {name}", store.get_conversation("resp_p", LATER)))
            return reply

        return hook

    writer = DynamoStateStore(
        table, client=Hooked(client, batch_write_item=read_first("batch"), put_item=read_first("head"))
    )
    writer.put_conversation("resp_p", after, LATER + 60)
    names = [name for name, _ in seen]
    head_written = names.index("after head")
    assert names[:head_written] == ["batch", "after batch"] * 2 + ["head"]
    assert all(data == before for _, data in seen[:head_written])
    assert all(data == after for _, data in seen[head_written:])
    assert store.get_conversation("resp_p", LATER) == after


def test_a_head_replaced_while_its_chunks_are_read(table: str, client: Any) -> None:
    """The reader read the old head; the writer then replaced it and deleted
    the old chunks. The reader reads the head again and answers the new
    conversation, whole."""
    writer = DynamoStateStore(table, client=client)
    before, after = os.urandom(3 * MB), os.urandom(2 * MB)
    writer.put_conversation("resp_c", before, LATER + 60)

    def replace_first(call: Callable[..., Any], **kwargs: Any) -> Any:
        if hooked.calls["batch_get_item"] == 1:
            writer.put_conversation("resp_c", after, LATER + 60)
        return call(**kwargs)

    hooked = Hooked(client, batch_get_item=replace_first)
    reader = DynamoStateStore(table, client=hooked)
    assert reader.get_conversation("resp_c", LATER) == after
    assert hooked.calls["batch_get_item"] >= 2


def test_a_head_deleted_while_its_chunks_are_read(table: str, client: Any) -> None:
    writer = DynamoStateStore(table, client=client)
    writer.put_conversation("resp_x", os.urandom(3 * MB), LATER + 60)

    def delete_first(call: Callable[..., Any], **kwargs: Any) -> Any:
        if hooked.calls["batch_get_item"] == 1:
            assert writer.delete_conversation("resp_x") is True
        return call(**kwargs)

    hooked = Hooked(client, batch_get_item=delete_first)
    assert DynamoStateStore(table, client=hooked).get_conversation("resp_x", LATER) is None


# ------------------------------------------------------------ batches cut short


def test_unprocessed_items_and_keys_are_sent_again(table: str, client: Any) -> None:
    """DynamoDB may process part of a batch (throttling, the size limit):
    here each call gets only its first request through."""

    def first_write_only(call: Callable[..., Any], **kwargs: Any) -> Any:
        requests = kwargs["RequestItems"][table]
        call(RequestItems={table: requests[:1]})
        return {"UnprocessedItems": {table: requests[1:]} if requests[1:] else {}}

    def first_key_only(call: Callable[..., Any], **kwargs: Any) -> Any:
        wanted = kwargs["RequestItems"][table]
        reply = call(RequestItems={table: {**wanted, "Keys": wanted["Keys"][:1]}})
        if wanted["Keys"][1:]:
            reply["UnprocessedKeys"] = {table: {**wanted, "Keys": wanted["Keys"][1:]}}
        return reply

    hooked = Hooked(client, batch_write_item=first_write_only, batch_get_item=first_key_only)
    store = DynamoStateStore(table, client=hooked)
    data = os.urandom(2 * MB)
    store.put_conversation("resp_u", data, LATER + 60)
    pieces = math.ceil(len(zlib.compress(data)) / CONVERSATION_CHUNK_BYTES)
    assert hooked.calls["batch_write_item"] == pieces
    assert store.get_conversation("resp_u", LATER) == data
    assert hooked.calls["batch_get_item"] == pieces


def test_a_throttled_batch_is_tried_again_after_a_pause(table: str, client: Any) -> None:
    refusals = {"batch_write_item": 2, "batch_get_item": 2}

    def refuse_twice(name: str, unprocessed: str) -> Callable[..., Any]:
        def hook(call: Callable[..., Any], **kwargs: Any) -> Any:
            if refusals[name]:
                refusals[name] -= 1
                return {unprocessed: kwargs["RequestItems"]}
            return call(**kwargs)

        return hook

    hooked = Hooked(
        client,
        batch_write_item=refuse_twice("batch_write_item", "UnprocessedItems"),
        batch_get_item=refuse_twice("batch_get_item", "UnprocessedKeys"),
    )
    store = DynamoStateStore(table, client=hooked)
    data = os.urandom(MB)
    store.put_conversation("resp_w", data, LATER + 60)
    assert store.get_conversation("resp_w", LATER) == data
    assert refusals == {"batch_write_item": 0, "batch_get_item": 0}


def test_a_put_that_stays_throttled_fails_and_leaves_the_old_one(
    table: str, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamo_module, "_BATCH_ATTEMPTS", 3)
    DynamoStateStore(table, client=client).put_conversation("resp_f", b"old", LATER + 60)
    hooked = Hooked(client, batch_write_item=lambda call, **kwargs: {"UnprocessedItems": kwargs["RequestItems"]})
    store = DynamoStateStore(table, client=hooked)
    with pytest.raises(RuntimeError, match="throttled"):
        store.put_conversation("resp_f", os.urandom(MB), LATER + 60)
    assert store.get_conversation("resp_f", LATER) == b"old"
