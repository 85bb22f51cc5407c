"""The DynamoDB state store: one table shared by every Lambda instance."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from ...environment import Environment
from .base import Cooldown, KeyUsage, StateStore

USAGE_TTL = 90 * 86400  # seconds DynamoDB keeps a day's usage
COOLDOWN_TTL_SLACK = 60  # seconds a cooldown item outlives its end


def _n(value: float | int) -> dict[str, str]:
    """A DynamoDB number; repr keeps a float's full precision."""
    return {"N": repr(float(value)) if isinstance(value, float) else str(int(value))}


def _cooldown(item: dict[str, Any]) -> Cooldown:
    return Cooldown(item["entry"]["S"], float(item["until"]["N"]), item["reason"]["S"])


class DynamoStateStore(StateStore):
    """One DynamoDB table (partition key `pk`, TTL attribute `expires_at`):

      turn#<pool>            n                                   round-robin counter
      cool#<entry>           entry, until, reason, expires_at    cooldown
      usage#<day>#<entry>    entry, day, requests, input_tokens, output_tokens, expires_at

    TTL deletion is late and best effort, so reads always compare `until` with
    now. Scans are fine for `cooldowns` and `usage`: the table holds a few
    items per key and they serve an admin command, not requests.
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

    def close(self) -> None:
        self._client.close()
