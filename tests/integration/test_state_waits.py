"""SQLite state calls made on the event loop never wait long on another
connection's write lock: the loop keeps running, and the writes still land
once the lock is free."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Self

from ccproxy.stores.state import Cooldown, KeyUsage, SqliteStateStore

NOW = 1_700_000_000.0
HOLD = 1.0  # seconds the other connection keeps the write lock
MAX_STALL = 0.05  # seconds the loop may go without a tick


class LockHolder:
    """Another connection (as another process would) holding the write lock."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path, self.seconds = path, seconds
        self.taken, self.released = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO turns (pool, n) VALUES ('other', 1)")
        self.taken.set()
        time.sleep(self.seconds)
        db.execute("COMMIT")
        db.close()
        self.released.set()

    def __enter__(self) -> Self:
        self.thread.start()
        assert self.taken.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(10)


async def _ticker(stalls: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.002)
        now = time.perf_counter()
        stalls.append(now - last)
        last = now


def test_writes_on_the_loop_do_not_block_it_and_land_after_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    try:
        assert store.next_turn("pool") == 0  # the shared counter before the lock
        calls: list[tuple[str, float]] = []
        stalls: list[float] = []

        async def main() -> list[int]:
            stop = asyncio.Event()
            ticker = asyncio.create_task(_ticker(stalls, stop))
            await asyncio.sleep(0.02)
            turns = []
            with LockHolder(path, HOLD) as holder:
                for i in range(5):
                    for name, call in (
                        ("next_turn", lambda: turns.append(store.next_turn("pool"))),
                        ("cool", lambda i=i: store.cool("p#1", NOW + 100 + i, "429")),
                        ("add_usage", lambda: store.add_usage("p#1", "2026-11-05", 1, 10, 2)),
                        ("cooling", lambda: store.cooling(["p#1", "p#2"], NOW)),
                    ):
                        started = time.perf_counter()
                        call()
                        calls.append((name, time.perf_counter() - started))
                        await asyncio.sleep(0.005)  # a tick between calls: each stall is one call's
                    # This process sees its own cooldown at once, lock or not.
                    assert store.cooling(["p#1"], NOW)["p#1"].until == NOW + 100 + i
                    await asyncio.sleep(0.1)
                assert not holder.released.is_set(), "the lock was released before the calls were done"
                while not holder.released.is_set():
                    await asyncio.sleep(0.01)
            # Once the lock is free, the owed writes land without anyone waiting for them.
            deadline = time.monotonic() + 5
            while store.usage("2026-11-05") == [] and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            stop.set()
            await ticker
            return turns

        turns = asyncio.run(main())
        worst_call = max(calls, key=lambda c: c[1])
        print(f"\nlock held {HOLD:.1f} s: longest loop stall {max(stalls) * 1000:.1f} ms, "
              f"longest call {worst_call[0]} {worst_call[1] * 1000:.1f} ms over {len(calls)} calls")
        assert max(stalls) < MAX_STALL, f"the loop stalled {max(stalls) * 1000:.0f} ms"
        assert worst_call[1] < MAX_STALL
        # The rotation went on locally while the shared counter was locked...
        assert turns == [1, 2, 3, 4, 5]
        # ...and every write landed in the file.
        assert store.usage("2026-11-05") == [KeyUsage("p#1", "2026-11-05", 5, 50, 10)]
        check = sqlite3.connect(path)
        try:
            assert check.execute("SELECT n FROM turns WHERE pool = 'pool'").fetchone()[0] == 6
            assert check.execute("SELECT until, reason FROM cooldowns WHERE entry = 'p#1'").fetchone() == (NOW + 104, "429")
        finally:
            check.close()
        assert store.next_turn("pool") == 6
    finally:
        store.close()


def test_calls_off_the_loop_still_wait_for_the_lock(tmp_path: Path) -> None:
    """The CLI and worker threads keep plain SQLite behaviour: the call waits
    (up to busy_timeout) and its write has landed when it returns."""
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    try:
        with LockHolder(path, 0.3) as holder:
            started = time.perf_counter()
            assert store.next_turn("pool") == 0
            assert holder.released.is_set()
            assert time.perf_counter() - started >= 0.2
            store.add_usage("p#1", "d", 1, 2, 3)
        assert store.usage("d") == [KeyUsage("p#1", "d", 1, 2, 3)]
    finally:
        store.close()


def test_close_lands_what_is_owed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)

    async def owe() -> None:
        store.cool("p#1", NOW + 5, "429")
        store.add_usage("p#1", "d", 2, 3, 4)
        assert store.next_turn("pool") == 0

    with LockHolder(path, 0.3):
        asyncio.run(owe())
        assert store._owes()
        store.close()  # waits (off the loop) for the lock, then writes
    again = SqliteStateStore(path)
    try:
        assert again.cooldowns(NOW) == [Cooldown("p#1", NOW + 5, "429")]
        assert again.usage("d") == [KeyUsage("p#1", "d", 2, 3, 4)]
        assert again.next_turn("pool") == 1
    finally:
        again.close()


def test_counter_adds_on_the_loop_under_the_lock_are_owed_and_land(tmp_path: Path) -> None:
    """An access key's counter (rpm, tokens per day) added while another
    process holds the lock is counted here at once and written afterwards:
    the shared count misses nothing."""
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    other = SqliteStateStore(path)  # another process's view of the file
    minute_end = time.time() + 60  # counters expire on the wall clock
    try:
        assert store.add_amount("rpm#k", 1, minute_end) == 1  # seen before the lock

        async def under_the_lock() -> list[int]:
            return [store.add_amount("rpm#k", 1, minute_end) for _ in range(3)]

        with LockHolder(path, 0.3) as holder:
            started = time.perf_counter()
            assert asyncio.run(under_the_lock()) == [2, 3, 4]
            assert time.perf_counter() - started < 0.3, "the loop waited for the lock"
            assert not holder.released.is_set()
        deadline = time.monotonic() + 5
        while other.read_amount("rpm#k", time.time()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert other.read_amount("rpm#k", time.time()) == 4
        assert not store._owes()
    finally:
        store.close()
        other.close()


def test_cooldowns_on_the_loop_under_the_lock_include_owed_ones(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    try:
        store.cool("a#1", NOW + 10, "x")
        store.cool("z#1", NOW - 10, "ended")

        async def look() -> list[Cooldown]:
            store.cool("m#1", NOW + 20, "owed")
            return store.cooldowns(NOW)

        with LockHolder(path, 0.3):
            started = time.perf_counter()
            listed = asyncio.run(look())
            assert time.perf_counter() - started < MAX_STALL
        assert listed == [Cooldown("a#1", NOW + 10, "x"), Cooldown("m#1", NOW + 20, "owed")]
    finally:
        store.close()


def test_uncontended_turns_and_cooldowns_on_the_loop_write_at_once(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    try:
        async def calls() -> list[int]:
            store.cool("p#1", NOW + 5, "x")
            store.add_usage("p#1", "d", 1, 1, 1)
            return [store.next_turn("pool") for _ in range(3)]

        assert asyncio.run(calls()) == [0, 1, 2]
        # Turns and cooldowns are written on the loop; usage always goes to
        # the worker (nothing on the request path reads it back).
        assert not store._turns_owed and not store._cools_owed
        assert store.next_turn("pool") == 3
        assert store.cooldowns(NOW) == [Cooldown("p#1", NOW + 5, "x")]
        assert store.usage("d") == [KeyUsage("p#1", "d", 1, 1, 1)]  # off the loop: waits for the worker
        assert not store._owes()
    finally:
        store.close()
