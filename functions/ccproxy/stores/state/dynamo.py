"""The DynamoDB state store: one table shared by every Lambda instance."""

from __future__ import annotations

import logging
import math
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...environment import Environment
from .base import Cooldown, KeyUsage, StateStore

USAGE_TTL = 90 * 86400  # seconds DynamoDB keeps a day's usage
COOLDOWN_TTL_SLACK = 60  # seconds a cooldown item outlives its end

# Compressed bytes of a conversation per item: an item holds at most 400 KB,
# attribute names and the key included, so this leaves room for them.
CONVERSATION_CHUNK_BYTES = 350 * 1024
# zlib's default: conversations are JSON, which it shrinks several times over.
_COMPRESS_LEVEL = 6
_WRITE_BATCH = 25  # requests BatchWriteItem takes at most
# Keys BatchGetItem takes at most; a reply holds at most 16 MB, and what
# does not fit comes back unprocessed, asked for again at once.
_READ_BATCH = 100
# Batch calls in a row that may make no progress (throttled) before giving up.
_BATCH_ATTEMPTS = 8
# Heads read for one get: a head replaced while its chunks were being read
# is read again, in case it is replaced again meanwhile.
_READ_ATTEMPTS = 3

log = logging.getLogger("ccproxy")


def _n(value: float | int) -> dict[str, str]:
    """A DynamoDB number; repr keeps a float's full precision."""
    return {"N": repr(float(value)) if isinstance(value, float) else str(int(value))}


def _cooldown(item: dict[str, Any]) -> Cooldown:
    return Cooldown(item["entry"]["S"], float(item["until"]["N"]), item["reason"]["S"])


def _head_key(conversation_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"conv#{conversation_id}"}}


def _chunk_key(conversation_id: str, generation: str, n: int) -> dict[str, Any]:
    return {"pk": {"S": f"conv#{conversation_id}#{generation}#{n}"}}


@dataclass(frozen=True, slots=True)
class _Head:
    """A conversation's head item: which put wrote it, and where its data is."""

    generation: str  # the put's nonce, in its chunks' keys and on each of them
    chunks: int  # 0: the data is in the head itself
    size: int  # bytes before compression
    stored: int  # bytes after
    until: float
    data: bytes | None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> _Head:
        return cls(
            item["gen"]["S"],
            int(item["chunks"]["N"]),
            int(item["size"]["N"]),
            int(item["stored"]["N"]),
            float(item["until"]["N"]),
            item["data"]["B"] if "data" in item else None,
        )

    def item(self, conversation_id: str) -> dict[str, Any]:
        item: dict[str, Any] = {
            **_head_key(conversation_id),
            "gen": {"S": self.generation},
            "chunks": _n(self.chunks),
            "size": _n(self.size),
            "stored": _n(self.stored),
            "until": _n(self.until),
            "expires_at": self.ttl(),
        }
        if self.data is not None:
            item["data"] = {"B": self.data}
        return item

    def chunk_item(self, conversation_id: str, n: int, piece: bytes) -> dict[str, Any]:
        return {
            **_chunk_key(conversation_id, self.generation, n),
            "gen": {"S": self.generation},
            "n": _n(n),
            "data": {"B": piece},
            "expires_at": self.ttl(),
        }

    def ttl(self) -> dict[str, str]:
        """Every item of the conversation goes with it (TTL takes whole seconds)."""
        return _n(math.ceil(self.until))


class DynamoStateStore(StateStore):
    """One DynamoDB table (partition key `pk`, TTL attribute `expires_at`):

      turn#<pool>            n                                   round-robin counter
      cool#<entry>           entry, until, reason, expires_at    cooldown
      usage#<day>#<entry>    entry, day, requests, input_tokens, output_tokens, expires_at
      amount#<counter>       n, until, expires_at                a counter (add_amount)
      conv#<id>              gen, chunks, size, stored, until, expires_at[, data]   conversation head
      conv#<id>#<gen>#<n>    gen, n, data, expires_at            chunk n of the put `gen`
      setting#<name>         value                               a setting (never expires)

    TTL deletion is late and best effort, so reads always compare `until` with
    now. Scans are fine for `cooldowns` and `usage`: the table holds a few
    items per key and they serve an admin command, not requests.

    A conversation is compressed (zlib); up to CONVERSATION_CHUNK_BYTES it
    sits in its head, beyond that in chunk items. A put writes its chunks
    first, under keys of its own (a fresh generation), and the head last:
    until the head lands, readers see the previous put whole, and once it
    has, the new one. The previous put's chunks are then deleted, best
    effort (TTL takes what is left). A reader takes the head, then the
    chunks it names, and checks each chunk's generation; a chunk missing
    means the head was replaced or deleted meanwhile, so it reads the head
    again, and answers None rather than anything mixed.
    """

    blocks_on_network = True

    def __init__(self, table_name: str, client: Any = None, *, env: Environment | None = None) -> None:
        self.table_name = table_name
        if client is None:
            import boto3  # lazily: importing this module stays cheap without AWS

            # botocore itself reads AWS_DEFAULT_REGION and AWS_ENDPOINT_URL;
            # AWS_REGION is what Lambda sets, so pass it on.
            region = (env or Environment.read()).aws_region
            client = boto3.client("dynamodb", region_name=region)
        self._client = client

    def next_turn(self, pool: str) -> int:
        reply = self._client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": f"turn#{pool}"}},
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        return int(reply["Attributes"]["n"]["N"]) - 1

    def cool(self, entry: str, until: float, reason: str) -> None:
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": f"cool#{entry}"}},
                UpdateExpression="SET #entry = :entry, #until = :until, #reason = :reason, expires_at = :expires",
                ConditionExpression="attribute_not_exists(#until) OR #until < :until",
                ExpressionAttributeNames={"#entry": "entry", "#until": "until", "#reason": "reason"},
                ExpressionAttributeValues={
                    ":entry": {"S": entry},
                    ":until": _n(float(until)),
                    ":reason": {"S": reason},
                    ":expires": _n(math.ceil(until) + COOLDOWN_TTL_SLACK),
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            pass  # a later cooldown is already there: it wins

    def cooling(self, entries: Sequence[str], now: float) -> dict[str, Cooldown]:
        # BatchGetItem rejects duplicate keys and takes at most 100 keys.
        wanted = list(dict.fromkeys(entries))
        found: dict[str, Cooldown] = {}
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [{"pk": {"S": f"cool#{e}"}} for e in wanted[start : start + 100]],
                    "ProjectionExpression": "#entry, #until, #reason",
                    "ExpressionAttributeNames": {"#entry": "entry", "#until": "until", "#reason": "reason"},
                    "ConsistentRead": True,
                }
            }
            for attempt in range(8):
                reply = self._client.batch_get_item(RequestItems=request)
                for item in reply.get("Responses", {}).get(self.table_name, []):
                    cooldown = _cooldown(item)
                    if cooldown.until > now:
                        found[cooldown.entry] = cooldown
                # Keys still unprocessed after the retries count as not
                # cooling: trying a cooling key costs one failed request.
                request = reply.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.02 * 2**attempt)  # throttled: back off, as AWS advises
        return found

    def _scan(self, prefix: str, extra_filter: str = "", values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "begins_with(pk, :prefix)" + extra_filter,
            "ExpressionAttributeValues": {":prefix": {"S": prefix}, **(values or {})},
            "ConsistentRead": True,
        }
        if "#until" in extra_filter:
            kwargs["ExpressionAttributeNames"] = {"#until": "until"}
        for page in self._client.get_paginator("scan").paginate(**kwargs):
            items.extend(page.get("Items", []))
        return items

    def cooldowns(self, now: float) -> list[Cooldown]:
        items = self._scan("cool#", " AND #until > :now", {":now": _n(float(now))})
        return sorted((_cooldown(item) for item in items), key=lambda c: c.entry)

    def add_usage(self, entry: str, day: str, requests: int, input_tokens: int, output_tokens: int) -> None:
        self._client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": f"usage#{day}#{entry}"}},
            UpdateExpression=(
                "SET #entry = :entry, #day = :day, expires_at = :expires "
                "ADD requests :requests, input_tokens :input, output_tokens :output"
            ),
            ExpressionAttributeNames={"#entry": "entry", "#day": "day"},
            ExpressionAttributeValues={
                ":entry": {"S": entry},
                ":day": {"S": day},
                ":expires": _n(int(time.time()) + USAGE_TTL),
                ":requests": _n(int(requests)),
                ":input": _n(int(input_tokens)),
                ":output": _n(int(output_tokens)),
            },
        )

    def add_amount(self, counter: str, amount: int, expires_at: float) -> int:
        key = {"pk": {"S": f"amount#{counter}"}}
        names = {"#until": "until"}
        for _ in range(8):
            now = time.time()
            values = {
                ":amount": _n(int(amount)),
                ":until": _n(float(expires_at)),
                ":expires": _n(math.ceil(expires_at) + COOLDOWN_TTL_SLACK),
                ":now": _n(now),
            }
            try:
                reply = self._client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    UpdateExpression=(
                        "ADD n :amount SET #until = if_not_exists(#until, :until), "
                        "expires_at = if_not_exists(expires_at, :expires)"
                    ),
                    ConditionExpression="attribute_not_exists(#until) OR #until > :now",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    ReturnValues="UPDATED_NEW",
                )
                return int(reply["Attributes"]["n"]["N"])
            except self._client.exceptions.ConditionalCheckFailedException:
                pass  # expired: it starts again, unless another process restarted it first
            try:
                self._client.put_item(
                    TableName=self.table_name,
                    Item={**key, "n": values[":amount"], "until": values[":until"], "expires_at": values[":expires"]},
                    ConditionExpression="#until <= :now",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={":now": values[":now"]},
                )
                return int(amount)
            except self._client.exceptions.ConditionalCheckFailedException:
                continue
        raise RuntimeError(f"counter {counter}: kept changing under each add")

    def read_amount(self, counter: str, now: float) -> int:
        reply = self._client.get_item(
            TableName=self.table_name, Key={"pk": {"S": f"amount#{counter}"}}, ConsistentRead=True
        )
        item = reply.get("Item")
        if not item or float(item.get("until", {}).get("N", "0")) <= now:
            return 0
        return int(item.get("n", {}).get("N", "0"))

    def usage(self, day: str) -> list[KeyUsage]:
        items = self._scan(f"usage#{day}#")
        found = [
            KeyUsage(
                item["entry"]["S"],
                item["day"]["S"],
                int(item.get("requests", {}).get("N", "0")),
                int(item.get("input_tokens", {}).get("N", "0")),
                int(item.get("output_tokens", {}).get("N", "0")),
            )
            for item in items
        ]
        # The prefix of day "2026-01-0" would also match day "2026-01-01".
        return sorted((u for u in found if u.day == day), key=lambda u: u.entry)

    def get_setting(self, name: str) -> str | None:
        reply = self._client.get_item(
            TableName=self.table_name, Key={"pk": {"S": f"setting#{name}"}}, ConsistentRead=True
        )
        item = reply.get("Item")
        return item["value"]["S"] if item and "value" in item else None

    def put_setting(self, name: str, value: str | None) -> None:
        key = {"pk": {"S": f"setting#{name}"}}
        if value is None:
            self._client.delete_item(TableName=self.table_name, Key=key)
        else:
            self._client.put_item(TableName=self.table_name, Item={**key, "value": {"S": str(value)}})

    # ------------------------------------------------------------ conversations

    def put_conversation(self, conversation_id: str, data: bytes, expires_at: float) -> None:
        stored = zlib.compress(data, _COMPRESS_LEVEL)
        step = CONVERSATION_CHUNK_BYTES
        pieces = [stored[i : i + step] for i in range(0, len(stored), step)] if len(stored) > step else []
        head = _Head(
            uuid.uuid4().hex, len(pieces), len(data), len(stored), float(expires_at), None if pieces else stored
        )
        self._batch_write(
            [{"PutRequest": {"Item": head.chunk_item(conversation_id, n, piece)}} for n, piece in enumerate(pieces)]
        )
        reply = self._client.put_item(
            TableName=self.table_name, Item=head.item(conversation_id), ReturnValues="ALL_OLD"
        )
        if reply.get("Attributes"):
            self._drop_chunks(conversation_id, _Head.from_item(reply["Attributes"]))

    def get_conversation(self, conversation_id: str, now: float) -> bytes | None:
        seen: str | None = None
        for _ in range(_READ_ATTEMPTS):
            head = self._read_head(conversation_id)
            if head is None or head.until <= now or head.generation == seen:
                # Unknown, expired, or the same head twice with its chunks
                # missing: they are lost, and no data is better than some.
                return None
            stored = head.data if head.chunks == 0 else self._read_chunks(conversation_id, head)
            if stored is not None and len(stored) == head.stored:
                data = zlib.decompress(stored)
                if len(data) != head.size:
                    raise ValueError(f"conversation {conversation_id}: stored data does not match its head")
                return data
            seen = head.generation
        return None

    def delete_conversation(self, conversation_id: str) -> bool:
        reply = self._client.delete_item(
            TableName=self.table_name, Key=_head_key(conversation_id), ReturnValues="ALL_OLD"
        )
        if not reply.get("Attributes"):
            return False
        head = _Head.from_item(reply["Attributes"])
        self._drop_chunks(conversation_id, head)
        return head.until > time.time()

    def _read_head(self, conversation_id: str) -> _Head | None:
        reply = self._client.get_item(TableName=self.table_name, Key=_head_key(conversation_id), ConsistentRead=True)
        return _Head.from_item(reply["Item"]) if "Item" in reply else None

    def _read_chunks(self, conversation_id: str, head: _Head) -> bytes | None:
        """The head's chunks joined, or None when any is missing or another put's."""
        keys = [_chunk_key(conversation_id, head.generation, n) for n in range(head.chunks)]
        found: dict[int, bytes] = {}
        for item in self._batch_get(keys):
            if item.get("gen", {}).get("S") == head.generation:
                found[int(item["n"]["N"])] = item["data"]["B"]
        if len(found) != head.chunks:
            return None
        return b"".join(found[n] for n in range(head.chunks))

    def _drop_chunks(self, conversation_id: str, head: _Head) -> None:
        """Delete a replaced or deleted head's chunks, best effort."""
        keys = [_chunk_key(conversation_id, head.generation, n) for n in range(head.chunks)]
        try:
            self._batch_write([{"DeleteRequest": {"Key": key}} for key in keys])
        except Exception as exc:  # noqa: BLE001  (no reader reaches them any more; TTL deletes them)
            log.warning("conversation %s: old chunks left for TTL to delete (%s)", conversation_id, exc)

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in groups of 25, unprocessed items sent again."""
        for start in range(0, len(requests), _WRITE_BATCH):
            pending: dict[str, Any] = {self.table_name: requests[start : start + _WRITE_BATCH]}
            stalled = 0
            while pending:
                before = len(pending[self.table_name])
                pending = self._client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                stalled = self._after_batch(bool(pending) and len(pending[self.table_name]) == before, stalled)

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """BatchGetItem in groups of 100, consistent, unprocessed keys asked again."""
        items: list[dict[str, Any]] = []
        for start in range(0, len(keys), _READ_BATCH):
            pending: dict[str, Any] = {
                self.table_name: {"Keys": keys[start : start + _READ_BATCH], "ConsistentRead": True}
            }
            stalled = 0
            while pending:
                reply = self._client.batch_get_item(RequestItems=pending)
                got = reply.get("Responses", {}).get(self.table_name, [])
                items.extend(got)
                pending = reply.get("UnprocessedKeys") or {}
                stalled = self._after_batch(bool(pending) and not got, stalled)
        return items

    @staticmethod
    def _after_batch(stalled_now: bool, stalled: int) -> int:
        """Count batch calls in a row that made no progress, backing off
        after each (throttled, as AWS advises); raise after too many. A
        reply cut short by its size limit made progress: asked again at once."""
        if not stalled_now:
            return 0
        if stalled + 1 >= _BATCH_ATTEMPTS:
            raise RuntimeError("DynamoDB kept refusing a batch of conversation items (throttled)")
        time.sleep(0.02 * 2**stalled)
        return stalled + 1

    def close(self) -> None:
        self._client.close()
