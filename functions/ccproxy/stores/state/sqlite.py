"""The SQLite state store: one file shared by the processes on a machine."""

from __future__ import annotations

import asyncio
import atexit
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .base import Cooldown, KeyUsage, StateStore

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
CREATE TABLE IF NOT EXISTS amounts (
    counter TEXT PRIMARY KEY,
    n INTEGER NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversations (id TEXT PRIMARY KEY, data BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_by_expiry ON conversations (expires_at);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
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
# Expired conversations deleted by each put, at most: enough to keep up with
# the puts, few enough that a put never pays for a backlog of large rows.
PURGE_PER_PUT = 16
# Expired counters (add_amount) are deleted once every this many adds.
PRUNE_AMOUNTS_EVERY = 512

log = logging.getLogger("ccproxy")


@dataclass(frozen=True, slots=True)
class _OwedBatch:
    """A copy of what was owed, written in one transaction."""

    turns: dict[str, int]
    cools: dict[str, Cooldown]
    usage: dict[tuple[str, str], tuple[int, int, int]]
    amounts: dict[str, tuple[int, float]]  # counter: (amount, expires_at)
    settings: dict[str, str | None]  # name: value (None: removed)


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

    Settings are a small write like the others: `put_setting` on the loop
    with the lock taken is owed (the last value put wins; this process
    reads it back at once, the others once it lands), and `get_setting`
    refused a read on the loop answers the value this process last saw.

    Bounding the wait (rather than running every call in a thread) keeps the
    common, uncontended call a microsecond-scale local write, less than a
    thread hop, and needs no change to the synchronous interface.

    Two connections, each under its own lock: the loop's with the short
    busy_timeout, and the patient one for everything off the loop and the
    worker, so the loop never queues behind a thread's long wait. Owed
    writes are flushed by `close()` and at interpreter exit.

    Conversations (megabytes each) always take the patient connection,
    wherever they are called from: the caller runs them in a worker thread,
    as the interface asks, and they then wait for the write lock as long as
    any call off the loop does. Nothing about them is ever owed. Each put
    also deletes a few expired conversations (`PURGE_PER_PUT`), so the table
    does not keep what nobody reads again. The table is a rowid one, unlike
    the others: WITHOUT ROWID suits small rows, not blobs.
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
        # Writes owed by calls on the loop that found the lock taken; the
        # kinds commute (sums, a later cooldown wins, a setting is one name's
        # last value), so they may land in any order, together, in one
        # transaction.
        self._owed = threading.Condition(threading.Lock())
        self._turns_owed: dict[str, int] = {}
        self._cools_owed: dict[str, Cooldown] = {}
        self._usage_owed: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._last_turn: dict[str, int] = {}
        # What this process last knew of each counter (see add_amount).
        self._amounts_seen: dict[str, tuple[int, float]] = {}
        self._amounts_owed: dict[str, tuple[int, float]] = {}
        self._amount_adds = 0
        # Settings this process put on the loop and still owes, and the
        # values it last read or wrote (what a refused read on the loop answers).
        self._settings_owed: dict[str, str | None] = {}
        self._settings_seen: dict[str, str | None] = {}
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

    def add_amount(self, counter: str, amount: int, expires_at: float) -> int:
        """On the event loop with the write lock taken for longer than
        `loop_busy_ms`, the add is counted from what this process last saw of
        the counter and owed: the worker writes it once the lock is free, so
        the shared count misses nothing (a limit holds per process for that
        moment rather than stalling every request)."""
        now = time.time()
        db, lock, on_loop = self._connection()
        try:
            with self._transaction(db, lock):
                value = self._add_amount(db, counter, int(amount), float(expires_at), now)
                self._amount_adds += 1
                if self._amount_adds % PRUNE_AMOUNTS_EVERY == 0:
                    db.execute("DELETE FROM amounts WHERE expires_at <= ?", (now,))
        except sqlite3.OperationalError as exc:
            if not (on_loop and _is_busy(exc)):
                raise
            seen, until = self._amounts_seen.get(counter, (0, 0.0))
            value = (seen if until > now else 0) + int(amount)
            with self._owed:
                owed, owed_until = self._amounts_owed.get(counter, (0, 0.0))
                self._amounts_owed[counter] = (owed + int(amount), max(owed_until, float(expires_at)))
            self._wake_worker()
        if len(self._amounts_seen) > 4096:
            self._amounts_seen.clear()
        self._amounts_seen[counter] = (value, float(expires_at))
        return value

    @staticmethod
    def _add_amount(db: sqlite3.Connection, counter: str, amount: int, expires_at: float, now: float) -> int:
        db.execute(
            "INSERT INTO amounts (counter, n, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (counter) DO UPDATE SET "
            "n = CASE WHEN amounts.expires_at <= ? THEN excluded.n ELSE amounts.n + excluded.n END, "
            "expires_at = CASE WHEN amounts.expires_at <= ? THEN excluded.expires_at "
            "ELSE amounts.expires_at END",
            (counter, amount, expires_at, now, now),
        )
        return int(db.execute("SELECT n FROM amounts WHERE counter = ?", (counter,)).fetchall()[0][0])

    def read_amount(self, counter: str, now: float) -> int:
        db, lock, on_loop = self._connection()
        try:
            with lock:
                rows = db.execute(
                    "SELECT n FROM amounts WHERE counter = ? AND expires_at > ?", (counter, float(now))
                ).fetchall()
        except sqlite3.OperationalError as exc:
            if not (on_loop and _is_busy(exc)):
                raise
            seen, until = self._amounts_seen.get(counter, (0, 0.0))
            return seen if until > now else 0
        return int(rows[0][0]) if rows else 0

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

    def get_setting(self, name: str) -> str | None:
        with self._owed:
            if name in self._settings_owed:
                return self._settings_owed[name]
        db, lock, on_loop = self._connection()
        try:
            with lock:
                row = db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        except sqlite3.OperationalError as exc:
            if not (on_loop and _is_busy(exc)):
                raise
            return self._settings_seen.get(name)
        value = None if row is None else str(row[0])
        self._settings_seen[name] = value
        return value

    def put_setting(self, name: str, value: str | None) -> None:
        value = None if value is None else str(value)
        db, lock, on_loop = self._connection()
        with self._owed:
            queued = name in self._settings_owed
            if queued:  # behind a value still owed: written straight away, that one would land after it
                self._settings_owed[name] = value
        if queued:
            self._settings_seen[name] = value
            self._wake_worker()
            if not on_loop and not self._settle(self.busy_timeout_ms / 1000):
                raise sqlite3.OperationalError(f"database is locked: setting {name} not written yet")
            return
        try:
            with self._transaction(db, lock):
                self._put_setting(db, name, value)
        except sqlite3.OperationalError as exc:
            if not (on_loop and _is_busy(exc)):
                raise
            with self._owed:
                self._settings_owed[name] = value
            self._wake_worker()
        self._settings_seen[name] = value

    @staticmethod
    def _put_setting(db: sqlite3.Connection, name: str, value: str | None) -> None:
        if value is None:
            db.execute("DELETE FROM settings WHERE name = ?", (name,))
        else:
            db.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def put_conversation(self, conversation_id: str, data: bytes, expires_at: float) -> None:
        with self._transaction(self._patient, self._patient_lock) as db:
            db.execute(
                "DELETE FROM conversations WHERE id IN "
                "(SELECT id FROM conversations WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
                (time.time(), PURGE_PER_PUT),
            )
            db.execute(
                "INSERT INTO conversations (id, data, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
                (conversation_id, data, float(expires_at)),
            )

    def get_conversation(self, conversation_id: str, now: float) -> bytes | None:
        with self._patient_lock:
            row = self._patient.execute(
                "SELECT data FROM conversations WHERE id = ? AND expires_at > ?", (conversation_id, float(now))
            ).fetchone()
        return None if row is None else bytes(row[0])

    def delete_conversation(self, conversation_id: str) -> bool:
        with self._transaction(self._patient, self._patient_lock) as db:
            row = db.execute("SELECT expires_at FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        return row is not None and row[0] > time.time()

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
        return bool(
            self._turns_owed or self._cools_owed or self._usage_owed or self._amounts_owed or self._settings_owed
        )

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
        a settle or close end the wait at once, and so do owed counter adds
        (a limit is read from them) and settings (other processes wait for them)."""
        batch_end = time.monotonic() + USAGE_BATCH_SECONDS
        while not (
            self._turns_owed
            or self._cools_owed
            or self._amounts_owed
            or self._settings_owed
            or self._settling
            or self._closed
        ):
            remaining = batch_end - time.monotonic()
            if remaining <= 0:
                return
            self._owed.wait(remaining)

    def _write_owed(self) -> None:
        """The worker: writes everything owed in one transaction, waiting on
        the lock patiently, off the loop; tries again while it cannot."""
        failures = 0
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._write_batch(batch)
            except Exception as exc:  # noqa: BLE001  (locked past busy_timeout, mostly; the data is kept either way)
                failures += 1
                if not self._wait_to_retry(exc, failures):
                    return
                continue
            failures = 0
            self._forget_written(batch)

    def _next_batch(self) -> _OwedBatch | None:
        """Wait until something is owed and take a copy of it all; None once
        the store is closed with nothing owed."""
        with self._owed:
            while not self._owes() and not self._closed:
                self._owed.wait()
            if not self._owes():
                return None
            self._gather_usage()
            return _OwedBatch(
                dict(self._turns_owed),
                dict(self._cools_owed),
                dict(self._usage_owed),
                dict(self._amounts_owed),
                dict(self._settings_owed),
            )

    def _write_batch(self, batch: _OwedBatch) -> None:
        with self._transaction(self._patient, self._patient_lock) as db:
            for pool, count in batch.turns.items():
                self._add_turns(db, pool, count)
            for cooldown in batch.cools.values():
                self._put_cooldown(db, cooldown)
            for (day, entry), counts in batch.usage.items():
                self._put_usage(db, day, entry, counts)
            for counter, (amount, expires_at) in batch.amounts.items():
                self._add_amount(db, counter, amount, expires_at, time.time())
            for name, value in batch.settings.items():
                self._put_setting(db, name, value)

    def _wait_to_retry(self, exc: Exception, failures: int) -> bool:
        """Back off after a failed write; False when the store has closed
        meanwhile, and what is owed is lost."""
        with self._owed:
            if self._closed:
                log.error("state writes lost: the store closed while the database stayed locked (%s)", exc)
                return False
            log.warning("state writes waiting on a locked database (%s); trying again", exc)
            self._owed.wait(_RETRY_DELAYS[min(failures, len(_RETRY_DELAYS)) - 1])
        return True

    def _forget_written(self, batch: _OwedBatch) -> None:
        with self._owed:  # landed: owed no more (unless owed again meanwhile)
            for pool, count in batch.turns.items():
                left = self._turns_owed.get(pool, 0) - count
                if left > 0:
                    self._turns_owed[pool] = left
                else:
                    self._turns_owed.pop(pool, None)
            for entry, cooldown in batch.cools.items():
                if self._cools_owed.get(entry) is cooldown:
                    del self._cools_owed[entry]
            for key, counts in batch.usage.items():
                now_owed = self._usage_owed.get(key, (0, 0, 0))
                rest = (now_owed[0] - counts[0], now_owed[1] - counts[1], now_owed[2] - counts[2])
                if any(rest):
                    self._usage_owed[key] = rest
                else:
                    self._usage_owed.pop(key, None)
            for counter, (amount, _) in batch.amounts.items():
                owed, until = self._amounts_owed.get(counter, (0, 0.0))
                if owed - amount > 0:
                    self._amounts_owed[counter] = (owed - amount, until)
                else:
                    self._amounts_owed.pop(counter, None)
            for name, value in batch.settings.items():
                # Put again meanwhile with another value: that one is still owed.
                if name in self._settings_owed and self._settings_owed[name] == value:
                    del self._settings_owed[name]
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
