"""Shared state for key rotation: round-robin counters, cooldowns and usage.

Every server process and every Lambda instance must see the same counters and
cooldowns, or each would start its rotation at the first key and retry keys
another instance has just seen rate limited. Embedded, the state lives in a
SQLite file (shared by the processes on one machine); on AWS in one DynamoDB
table (as the README's Deploy section says).

Entries are names like "openai#3f2a9c1b" (provider id, then a fingerprint of
the key): the store never sees a key itself.

The methods are synchronous: SQLite calls are short local writes, and the
caller runs the DynamoDB store in a worker thread. A SQLite call made on the
event loop never waits more than a few milliseconds on another process's lock
(see SqliteStateStore).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
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

    def close(self) -> None:  # noqa: B027  (a store that holds nothing has nothing to release)
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


# How long a call made on the event loop may wait for another process's write
# lock: a few milliseconds, then the write is handed to a worker thread. See
# SqliteStateStore.
LOOP_BUSY_MS = 5
# How long the worker waits before trying again when even its patient wait
# ran out (another process held the lock for longer than busy_timeout).
_RETRY_DELAYS = (0.05, 0.2, 1.0, 5.0)
# How long usage counted on the loop may wait to be written: the worker sums
# a busy second's answers into one transaction, and is woken once per batch.
USAGE_BATCH_SECONDS = 0.5

log = logging.getLogger("ccproxy")


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteStateStore(StateStore):
    """A SQLite file shared by every process on the machine.

    WAL mode lets readers run beside the one writer; writes take the write lock
    up front (BEGIN IMMEDIATE) so two processes wait on busy_timeout instead of
    failing on a lock upgrade.

    The methods stay synchronous (the rotation calls them from the event loop,
    the CLI from plain code), so how long a call may wait depends on where it
    is made:

    - Off the event loop (the CLI, worker threads, tests) a call waits for
      another process's write lock up to `busy_timeout_ms`, as a plain SQLite
      call does, and returns once its write has landed.
    - On a running event loop a call may wait `loop_busy_ms` (a few ms) only:
      waiting longer would stall every request the process serves, and a
      lock is held by another process for as long as it likes (a long
      checkpoint, `sqlite3` at a prompt in a transaction). When the lock is
      still taken, the write is owed instead: kept in memory and written by
      a worker thread, patiently and retried, once the lock is free. The
      call returns at once: `cool` with its write pending
      (this process's `cooling` and `cooldowns` include owed cooldowns, so
      it sees its own at once); `next_turn` with the turn after the last
      one this process saw, so the rotation goes on locally, while the
      shared counter is still owed its increment. Reads on the loop do not
      wait on writers in WAL mode; if one is refused all the same, `cooling`
      answers from what this process owes (a cooling key then costs one
      failed request, as with DynamoDB's unprocessed keys) and `usage`, an
      admin read, raises.

    `add_usage` on the loop is always owed, whether the lock is free or
    not: nothing on the request path reads usage back, and the worker sums
    what arrives meanwhile into one transaction.

    Bounding the wait (rather than running every call in a thread) keeps the
    common, uncontended call a microsecond-scale local write, less than a
    thread hop, and needs no change to the synchronous interface.

    Two connections, each under its own lock: the loop's with the short
    busy_timeout, and the patient one for everything off the loop and the
    worker, so the loop never queues behind a thread's long wait. Owed
    writes are flushed by `close()` and at interpreter exit.
    """

    def __init__(self, path: Path | str, busy_timeout_ms: int = 10_000, loop_busy_ms: int = LOOP_BUSY_MS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        # Off the loop, and the worker's.
        self._patient_lock = threading.Lock()
        self._patient = self._connect(busy_timeout_ms)
        self._use_wal(busy_timeout_ms / 1000)
        self._patient.execute("PRAGMA synchronous = NORMAL")  # durable enough for counters, much faster in WAL
        with self._transaction(self._patient, self._patient_lock) as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        # On the event loop.
        self._lock = threading.Lock()
        self._db = self._connect(loop_busy_ms)
        self._db.execute("PRAGMA synchronous = NORMAL")
        # Writes owed by calls on the loop that found the lock taken; all
        # three kinds commute (sums, and a later cooldown wins), so they may
        # land in any order, together, in one transaction.
        self._owed = threading.Condition(threading.Lock())
        self._turns_owed: dict[str, int] = {}
        self._cools_owed: dict[str, Cooldown] = {}
        self._usage_owed: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._last_turn: dict[str, int] = {}
        self._worker: threading.Thread | None = None
        self._closed = False
        self._settling = 0  # callers waiting for everything owed to land: no batching meanwhile
        _open_stores.add(self)

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; ours are explicit.
        db = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        return db

    def _use_wal(self, patience: float) -> None:
        """Switch the file to WAL. SQLite answers "locked" at once, without
        waiting on busy_timeout, when another process is switching or
        creating the same new file, as two servers starting together do: so
        try again until `patience` runs out."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self._patient.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    @staticmethod
    @contextmanager
    def _transaction(db: sqlite3.Connection, lock: threading.Lock) -> Iterator[sqlite3.Connection]:
        with lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _connection(self) -> tuple[sqlite3.Connection, threading.Lock, bool]:
        """The connection for a call made here, its lock, and whether the
        call is on the event loop."""
        if _on_event_loop():
            return self._db, self._lock, True
        return self._patient, self._patient_lock, False

    # ------------------------------------------------------------ the statements

    @staticmethod
    def _add_turns(db: sqlite3.Connection, pool: str, count: int) -> int:
        """The counter after adding `count`."""
        if _HAS_RETURNING:
            # fetchall: the statement must run to completion before COMMIT.
            rows = db.execute(
                "INSERT INTO turns (pool, n) VALUES (?, ?) ON CONFLICT (pool) DO UPDATE SET n = n + excluded.n "
                "RETURNING n",
                (pool, count),
            ).fetchall()
        else:
            db.execute("INSERT OR IGNORE INTO turns (pool, n) VALUES (?, 0)", (pool,))
            db.execute("UPDATE turns SET n = n + ? WHERE pool = ?", (count, pool))
            rows = db.execute("SELECT n FROM turns WHERE pool = ?", (pool,)).fetchall()
        return int(rows[0][0])

    @staticmethod
    def _put_cooldown(db: sqlite3.Connection, cooldown: Cooldown) -> None:
        db.execute(
            "INSERT INTO cooldowns (entry, until, reason) VALUES (?, ?, ?) "
            "ON CONFLICT (entry) DO UPDATE SET until = excluded.until, reason = excluded.reason "
            "WHERE excluded.until > cooldowns.until",
            (cooldown.entry, cooldown.until, cooldown.reason),
        )

    @staticmethod
    def _put_usage(db: sqlite3.Connection, day: str, entry: str, counts: tuple[int, int, int]) -> None:
        db.execute(
            "INSERT INTO usage (day, entry, requests, input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (day, entry) DO UPDATE SET requests = requests + excluded.requests, "
            "input_tokens = input_tokens + excluded.input_tokens, "
            "output_tokens = output_tokens + excluded.output_tokens",
            (day, entry, *counts),
        )

    # ------------------------------------------------------------ the interface

    def next_turn(self, pool: str) -> int:
        db, lock, on_loop = self._connection()
        try:
            with self._transaction(db, lock):
                turn = self._add_turns(db, pool, 1) - 1
        except sqlite3.OperationalError as exc:
            if not (on_loop and _is_busy(exc)):
                raise
            with self._owed:
                turn = self._last_turn.get(pool, -1) + 1
                self._last_turn[pool] = turn
                self._turns_owed[pool] = self._turns_owed.get(pool, 0) + 1
            self._wake_worker()
            return turn
        self._last_turn[pool] = turn
        return turn

    def cool(self, entry: str, until: float, reason: str) -> None:
        cooldown = Cooldown(entry, float(until), reason)
        db, lock, on_loop = self._connection()
        try:
            with self._transaction(db, lock):
                self._put_cooldown(db, cooldown)
        except sqlite3.OperationalError as exc:
            if not (on_loop and _is_busy(exc)):
                raise
            with self._owed:
                owed = self._cools_owed.get(entry)
                if owed is None or cooldown.until > owed.until:
                    self._cools_owed[entry] = cooldown
            self._wake_worker()

    def add_usage(self, entry: str, day: str, requests: int, input_tokens: int, output_tokens: int) -> None:
        counts = (int(requests), int(input_tokens), int(output_tokens))
        db, lock, on_loop = self._connection()
        if on_loop:
            # Every answer adds usage, and nothing on the request path reads
            # it back: so it is always owed, and the worker sums what arrives
            # meanwhile into one transaction, off the loop (a commit per
            # answer cost the loop about a tenth of a millisecond).
            with self._owed:
                first = not self._usage_owed
                owed = self._usage_owed.get((day, entry), (0, 0, 0))
                self._usage_owed[(day, entry)] = (owed[0] + counts[0], owed[1] + counts[1], owed[2] + counts[2])
            if first:
                self._wake_worker()
            return
        with self._transaction(db, lock):
            self._put_usage(db, day, entry, counts)

    def cooling(self, entries: Sequence[str], now: float) -> dict[str, Cooldown]:
        wanted = list(dict.fromkeys(entries))
        found: dict[str, Cooldown] = {}
        db, lock, on_loop = self._connection()
        if not on_loop:
            self._settle(self.busy_timeout_ms / 1000)
        try:
            with lock:
                for start in range(0, len(wanted), _MAX_PARAMS):
                    chunk = wanted[start : start + _MAX_PARAMS]
                    marks = ",".join("?" * len(chunk))
                    rows = db.execute(
                        f"SELECT entry, until, reason FROM cooldowns WHERE until > ? AND entry IN ({marks})",
                        (float(now), *chunk),
                    ).fetchall()
                    found.update((row[0], Cooldown(row[0], row[1], row[2])) for row in rows)
        except sqlite3.OperationalError as exc:
            if not (on_loop and _is_busy(exc)):
                raise
            # Refused a read (rare in WAL mode): what this process owes is all it knows.
        return self._with_owed_cools(found, wanted, now)

    def cooldowns(self, now: float) -> list[Cooldown]:
        db, lock, on_loop = self._connection()
        if not on_loop:
            self._settle(self.busy_timeout_ms / 1000)
        try:
            # Expired rows are pruned here, lazily, rather than on the request path.
            with self._transaction(db, lock):
                db.execute("DELETE FROM cooldowns WHERE until <= ?", (float(now),))
                rows = db.execute("SELECT entry, until, reason FROM cooldowns ORDER BY entry").fetchall()
        except sqlite3.OperationalError as exc:
            if not (on_loop and _is_busy(exc)):
                raise
            with lock:  # no pruning this time: readers do not wait on the writer
                rows = db.execute(
                    "SELECT entry, until, reason FROM cooldowns WHERE until > ? ORDER BY entry", (float(now),)
                ).fetchall()
        found = {row[0]: Cooldown(*row) for row in rows}
        return sorted(self._with_owed_cools(found, None, now).values(), key=lambda c: c.entry)

    def usage(self, day: str) -> list[KeyUsage]:
        """Counts as written: on the event loop, counts still owed to a locked
        database are not in them yet; off it, they are written first."""
        db, lock, on_loop = self._connection()
        if not on_loop:
            self._settle(self.busy_timeout_ms / 1000)
        with lock:
            rows = db.execute(
                "SELECT entry, day, requests, input_tokens, output_tokens FROM usage WHERE day = ? ORDER BY entry",
                (day,),
            ).fetchall()
        return [KeyUsage(*row) for row in rows]

    def close(self) -> None:
        """Writes what is owed (waiting up to busy_timeout), then closes."""
        self._settle(self.busy_timeout_ms / 1000)
        with self._owed:
            self._closed = True
            self._owed.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=1)
        with self._lock:
            self._db.close()
        with self._patient_lock:
            self._patient.close()
        _open_stores.discard(self)

    # ------------------------------------------------------------ owed writes

    def _with_owed_cools(self, found: dict[str, Cooldown], wanted: list[str] | None, now: float) -> dict[str, Cooldown]:
        if not self._cools_owed:
            return found
        with self._owed:
            owed = list(self._cools_owed.values())
        for cooldown in owed:
            if cooldown.until <= now or (wanted is not None and cooldown.entry not in wanted):
                continue
            known = found.get(cooldown.entry)
            if known is None or cooldown.until > known.until:
                found[cooldown.entry] = cooldown
        return found

    def _owes(self) -> bool:
        return bool(self._turns_owed or self._cools_owed or self._usage_owed)

    def _wake_worker(self) -> None:
        with self._owed:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._write_owed, name="ccproxy-state-writer", daemon=True)
                self._worker.start()
            self._owed.notify_all()

    def _settle(self, timeout: float) -> bool:
        """Wait (off the loop) until nothing is owed; False if `timeout` ran out."""
        deadline = time.monotonic() + timeout
        with self._owed:
            self._settling += 1
            self._owed.notify_all()  # a batch being gathered is written now
            try:
                while self._owes():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._owed.wait(remaining)
            finally:
                self._settling -= 1
        return True

    def _gather_usage(self) -> None:
        """Give usage counted on the loop a moment to pile up (holding the
        condition; it is released while waiting). Owed turns or cooldowns,
        a settle or close end the wait at once."""
        batch_end = time.monotonic() + USAGE_BATCH_SECONDS
        while not (self._turns_owed or self._cools_owed or self._settling or self._closed):
            remaining = batch_end - time.monotonic()
            if remaining <= 0:
                return
            self._owed.wait(remaining)

    def _write_owed(self) -> None:
        """The worker: writes everything owed in one transaction, waiting on
        the lock patiently, off the loop; tries again while it cannot."""
        failures = 0
        while True:
            with self._owed:
                while not self._owes() and not self._closed:
                    self._owed.wait()
                if not self._owes():
                    return
                self._gather_usage()
                turns, cools, usage = dict(self._turns_owed), dict(self._cools_owed), dict(self._usage_owed)
            try:
                with self._transaction(self._patient, self._patient_lock) as db:
                    for pool, count in turns.items():
                        self._add_turns(db, pool, count)
                    for cooldown in cools.values():
                        self._put_cooldown(db, cooldown)
                    for (day, entry), counts in usage.items():
                        self._put_usage(db, day, entry, counts)
            except Exception as exc:  # noqa: BLE001  (locked past busy_timeout, mostly; the data is kept either way)
                failures += 1
                with self._owed:
                    if self._closed:
                        log.error("state writes lost: the store closed while the database stayed locked (%s)", exc)
                        return
                    log.warning("state writes waiting on a locked database (%s); trying again", exc)
                    self._owed.wait(_RETRY_DELAYS[min(failures, len(_RETRY_DELAYS)) - 1])
                continue
            failures = 0
            with self._owed:  # landed: owed no more (unless owed again meanwhile)
                for pool, count in turns.items():
                    left = self._turns_owed.get(pool, 0) - count
                    if left > 0:
                        self._turns_owed[pool] = left
                    else:
                        self._turns_owed.pop(pool, None)
                for entry, cooldown in cools.items():
                    if self._cools_owed.get(entry) is cooldown:
                        del self._cools_owed[entry]
                for key, counts in usage.items():
                    now_owed = self._usage_owed.get(key, (0, 0, 0))
                    rest = (now_owed[0] - counts[0], now_owed[1] - counts[1], now_owed[2] - counts[2])
                    if any(rest):
                        self._usage_owed[key] = rest
                    else:
                        self._usage_owed.pop(key, None)
                self._owed.notify_all()


# Stores with writes possibly owed, flushed at interpreter exit (the server
# does not close its store). atexit runs before daemon threads are stopped.
_open_stores: weakref.WeakSet[SqliteStateStore] = weakref.WeakSet()


@atexit.register
def _settle_open_stores() -> None:
    for store in list(_open_stores):
        try:
            store._settle(store.busy_timeout_ms / 1000)
        except Exception as exc:  # noqa: BLE001  (exiting: say so, nothing more to do)
            log.warning("state writes owed at exit not written (%s)", exc)


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
    """CCPROXY_TABLE names a DynamoDB table; else a
    SQLite file at CCPROXY_STATE, else `.ccproxy/state.db` under the current
    directory (not beside the config, which may be read-only or shared).
    `config_dir` is accepted for symmetry with the other stores' factories."""
    table = os.environ.get("CCPROXY_TABLE")
    if table:
        return DynamoStateStore(table)
    path = os.environ.get("CCPROXY_STATE")
    return SqliteStateStore(Path(path) if path else Path(".ccproxy") / "state.db")
