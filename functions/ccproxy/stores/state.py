"""Shared state for key rotation: round-robin counters, cooldowns and usage.

Every server process and every Lambda instance must see the same counters and
cooldowns, or each would start its rotation at the first key and retry keys
another instance has just seen rate limited. Embedded, the state lives in a
SQLite file (shared by the processes on one machine); on AWS in one DynamoDB
table (CONTRACT.md section 3).

Entries are names like "openai#3f2a9c1b" (provider id, then a fingerprint of
the key): the store never sees a key itself.

The methods are synchronous: SQLite calls are short local writes, and the
caller runs the DynamoDB store in a worker thread.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Cooldown:
    entry: str
    until: float  # epoch seconds
    reason: str


@dataclass(frozen=True, slots=True)
class KeyUsage:
    entry: str
    day: str
    requests: int
    input_tokens: int
    output_tokens: int


class StateStore(ABC):
    # True where each call waits on the network: callers then make it from a
    # worker thread rather than the event loop.
    blocks_on_network = False

    @abstractmethod
    def next_turn(self, pool: str) -> int:
        """Atomically increment the pool's counter and return the value before
        the increment: 0, 1, 2, ... across all processes sharing the store."""

    @abstractmethod
    def cool(self, entry: str, until: float, reason: str) -> None:
        """Mark `entry` cooling until `until` (epoch seconds). An existing later
        cooldown wins, so a short retry-after never shortens a long one."""

    @abstractmethod
    def cooling(self, entries: Sequence[str], now: float) -> dict[str, Cooldown]:
        """Those of `entries` whose cooldown has not ended by `now`, in one
        round trip (this is on every request's path)."""

    @abstractmethod
    def cooldowns(self, now: float) -> list[Cooldown]:
        """All cooldowns not ended by `now`, sorted by entry (`ccproxy keys`)."""

    @abstractmethod
    def add_usage(self, entry: str, day: str, requests: int, input_tokens: int, output_tokens: int) -> None:
        """Atomically add to the entry's counts for `day`."""

    @abstractmethod
    def usage(self, day: str) -> list[KeyUsage]:
        """Every entry's counts for `day`, sorted by entry."""

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""


class MemoryStateStore(StateStore):
    """Process-local state, for unit tests of callers (and a single process
    that needs no persistence)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[str, int] = {}
        self._cool: dict[str, Cooldown] = {}
        self._usage: dict[tuple[str, str], KeyUsage] = {}

    def next_turn(self, pool: str) -> int:
        with self._lock:
            turn = self._turns.get(pool, 0)
            self._turns[pool] = turn + 1
            return turn

    def cool(self, entry: str, until: float, reason: str) -> None:
        with self._lock:
            current = self._cool.get(entry)
            if current is None or until > current.until:
                self._cool[entry] = Cooldown(entry, float(until), reason)

    def cooling(self, entries: Sequence[str], now: float) -> dict[str, Cooldown]:
        with self._lock:
            found = (self._cool.get(entry) for entry in entries)
            return {c.entry: c for c in found if c is not None and c.until > now}

    def cooldowns(self, now: float) -> list[Cooldown]:
        with self._lock:
            for entry in [e for e, c in self._cool.items() if c.until <= now]:
                del self._cool[entry]
            return sorted(self._cool.values(), key=lambda c: c.entry)

    def add_usage(self, entry: str, day: str, requests: int, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            old = self._usage.get((day, entry)) or KeyUsage(entry, day, 0, 0, 0)
            self._usage[(day, entry)] = KeyUsage(
                entry,
                day,
                old.requests + requests,
                old.input_tokens + input_tokens,
                old.output_tokens + output_tokens,
            )

    def usage(self, day: str) -> list[KeyUsage]:
        with self._lock:
            return sorted((u for (d, _), u in self._usage.items() if d == day), key=lambda u: u.entry)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (pool TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cooldowns (entry TEXT PRIMARY KEY, until REAL NOT NULL, reason TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL,
    entry TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    PRIMARY KEY (day, entry)
) WITHOUT ROWID;
"""

# RETURNING arrived in SQLite 3.35; upserts (ON CONFLICT DO UPDATE) in 3.24.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
# Stay well below SQLITE_MAX_VARIABLE_NUMBER (999 before SQLite 3.32).
_MAX_PARAMS = 900


class SqliteStateStore(StateStore):
    """A SQLite file shared by every process on the machine.

    WAL mode lets readers run beside the one writer; writes take the write lock
    up front (BEGIN IMMEDIATE) so two processes wait on busy_timeout instead of
    failing on a lock upgrade. One connection per store, used from any thread
    under a lock, since the server calls it from the event loop and workers.
    """

    def __init__(self, path: Path | str, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: no implicit transactions; ours are explicit.
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._use_wal(busy_timeout_ms / 1000)
        self._db.execute("PRAGMA synchronous = NORMAL")  # durable enough for counters, much faster in WAL
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def _use_wal(self, patience: float) -> None:
        """Switch the file to WAL. SQLite answers "locked" at once, without
        waiting on busy_timeout, when another process is switching or
        creating the same new file, as two servers starting together do: so
        try again until `patience` runs out."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def next_turn(self, pool: str) -> int:
        with self._write() as db:
            if _HAS_RETURNING:
                # fetchall: the statement must run to completion before COMMIT.
                rows = db.execute(
                    "INSERT INTO turns (pool, n) VALUES (?, 1) ON CONFLICT (pool) DO UPDATE SET n = n + 1 RETURNING n",
                    (pool,),
                ).fetchall()
            else:
                db.execute("INSERT OR IGNORE INTO turns (pool, n) VALUES (?, 0)", (pool,))
                db.execute("UPDATE turns SET n = n + 1 WHERE pool = ?", (pool,))
                rows = db.execute("SELECT n FROM turns WHERE pool = ?", (pool,)).fetchall()
        return int(rows[0][0]) - 1

    def cool(self, entry: str, until: float, reason: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO cooldowns (entry, until, reason) VALUES (?, ?, ?) "
                "ON CONFLICT (entry) DO UPDATE SET until = excluded.until, reason = excluded.reason "
                "WHERE excluded.until > cooldowns.until",
                (entry, float(until), reason),
            )

    def cooling(self, entries: Sequence[str], now: float) -> dict[str, Cooldown]:
        wanted = list(dict.fromkeys(entries))
        found: dict[str, Cooldown] = {}
        with self._lock:
            for start in range(0, len(wanted), _MAX_PARAMS):
                chunk = wanted[start : start + _MAX_PARAMS]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT entry, until, reason FROM cooldowns WHERE until > ? AND entry IN ({marks})",
                    (float(now), *chunk),
                ).fetchall()
                found.update((row[0], Cooldown(row[0], row[1], row[2])) for row in rows)
        return found

    def cooldowns(self, now: float) -> list[Cooldown]:
        # Expired rows are pruned here, lazily, rather than on the request path.
        with self._write() as db:
            db.execute("DELETE FROM cooldowns WHERE until <= ?", (float(now),))
            rows = db.execute("SELECT entry, until, reason FROM cooldowns ORDER BY entry").fetchall()
        return [Cooldown(*row) for row in rows]

    def add_usage(self, entry: str, day: str, requests: int, input_tokens: int, output_tokens: int) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO usage (day, entry, requests, input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (day, entry) DO UPDATE SET requests = requests + excluded.requests, "
                "input_tokens = input_tokens + excluded.input_tokens, "
                "output_tokens = output_tokens + excluded.output_tokens",
                (day, entry, int(requests), int(input_tokens), int(output_tokens)),
            )

    def usage(self, day: str) -> list[KeyUsage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT entry, day, requests, input_tokens, output_tokens FROM usage WHERE day = ? ORDER BY entry",
                (day,),
            ).fetchall()
        return [KeyUsage(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


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

    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        if client is None:
            import boto3  # lazily: importing this module stays cheap without AWS

            # botocore itself reads AWS_DEFAULT_REGION and AWS_ENDPOINT_URL;
            # AWS_REGION is what Lambda sets, so pass it on.
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
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


def state_store_from_env(config_dir: Path | None = None) -> StateStore:
    """CONTRACT.md section 3: CCPROXY_TABLE names a DynamoDB table; else a
    SQLite file at CCPROXY_STATE, else `.ccproxy/state.db` under the current
    directory (not beside the config, which may be read-only or shared).
    `config_dir` is accepted for symmetry with the other stores' factories."""
    table = os.environ.get("CCPROXY_TABLE")
    if table:
        return DynamoStateStore(table)
    path = os.environ.get("CCPROXY_STATE")
    return SqliteStateStore(Path(path) if path else Path(".ccproxy") / "state.db")
