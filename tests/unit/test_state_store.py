"""The StateStore contract, run against every implementation.

`StateStoreContract` is reused by tests/integration/test_state_store_shared.py
for the DynamoDB store; subclasses provide the `store` fixture.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ccproxy.stores.state import (
    Cooldown,
    DynamoStateStore,
    KeyUsage,
    MemoryStateStore,
    SqliteStateStore,
    StateStore,
    state_store_from_env,
)
from ccproxy.stores.state.sqlite import PURGE_PER_PUT

NOW = 1_700_000_000.0
# Conversations: stores drop the expired by the real clock as well (SQLite
# on each put), so these times lie in the future.
LATER = 4_000_000_000.0
MB = 1024 * 1024


def incompressible(size: int) -> bytes:
    return os.urandom(size)


def conversation_document(size: int) -> bytes:
    """JSON like a stored conversation: compresses well."""
    turns: list[dict[str, str]] = []
    total = 0
    while total < size:
        content = f"turn {len(turns)}: " + "lorem ipsum " * 40
        turns.append({"role": "user" if len(turns) % 2 == 0 else "assistant", "content": content})
        total += len(content)
    return json.dumps({"id": "resp_1", "input": turns}).encode()


class StateStoreContract:
    def test_next_turn_counts_from_zero_per_pool(self, store: StateStore) -> None:
        assert [store.next_turn("openai") for _ in range(4)] == [0, 1, 2, 3]
        assert store.next_turn("gemini") == 0
        assert store.next_turn("openai") == 4
        assert store.next_turn("gemini") == 1

    def test_next_turn_from_many_threads_has_no_duplicates(self, store: StateStore) -> None:
        turns: list[int] = []
        lock = threading.Lock()

        def take() -> None:
            mine = [store.next_turn("pool") for _ in range(25)]
            with lock:
                turns.extend(mine)

        threads = [threading.Thread(target=take) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(turns) == list(range(200))

    def test_cooling_returns_only_entries_not_yet_ended(self, store: StateStore) -> None:
        store.cool("openai#aaaa1111", NOW + 30, "429")
        store.cool("openai#bbbb2222", NOW - 1, "429")
        cooling = store.cooling(["openai#aaaa1111", "openai#bbbb2222", "openai#cccc3333"], NOW)
        assert cooling == {"openai#aaaa1111": Cooldown("openai#aaaa1111", NOW + 30, "429")}
        # A cooldown ends at `until`: not cooling at that instant or after.
        assert store.cooling(["openai#aaaa1111"], NOW + 30) == {}
        assert store.cooling(["openai#aaaa1111"], NOW + 29.5) != {}

    def test_cooling_of_no_entries_and_duplicates(self, store: StateStore) -> None:
        assert store.cooling([], NOW) == {}
        store.cool("p#1", NOW + 5, "x")
        assert list(store.cooling(["p#1", "p#1", "p#2"], NOW)) == ["p#1"]

    def test_cooling_keeps_fractional_seconds(self, store: StateStore) -> None:
        store.cool("p#1", NOW + 0.123456, "retry-after")
        assert store.cooling(["p#1"], NOW)["p#1"].until == NOW + 0.123456

    def test_later_cooldown_wins(self, store: StateStore) -> None:
        store.cool("p#1", NOW + 600, "quota")
        store.cool("p#1", NOW + 10, "429")
        assert store.cooling(["p#1"], NOW)["p#1"] == Cooldown("p#1", NOW + 600, "quota")
        store.cool("p#1", NOW + 900, "401")
        assert store.cooling(["p#1"], NOW)["p#1"] == Cooldown("p#1", NOW + 900, "401")

    def test_a_new_cooldown_replaces_an_ended_one(self, store: StateStore) -> None:
        store.cool("p#1", NOW - 100, "old")
        store.cool("p#1", NOW + 100, "new")
        assert store.cooling(["p#1"], NOW)["p#1"].reason == "new"

    def test_cooldowns_lists_current_ones_sorted(self, store: StateStore) -> None:
        store.cool("z#2", NOW + 20, "b")
        store.cool("a#1", NOW + 10, "a")
        store.cool("m#3", NOW - 10, "ended")
        assert store.cooldowns(NOW) == [Cooldown("a#1", NOW + 10, "a"), Cooldown("z#2", NOW + 20, "b")]
        assert store.cooldowns(NOW + 15) == [Cooldown("z#2", NOW + 20, "b")]
        assert store.cooldowns(NOW + 20) == []

    def test_add_usage_accumulates(self, store: StateStore) -> None:
        store.add_usage("openai#aaaa1111", "2026-11-05", 1, 100, 20)
        store.add_usage("openai#aaaa1111", "2026-11-05", 1, 50, 5)
        store.add_usage("openai#aaaa1111", "2026-11-05", 2, 0, 0)
        assert store.usage("2026-11-05") == [KeyUsage("openai#aaaa1111", "2026-11-05", 4, 150, 25)]

    def test_usage_is_per_day_and_sorted(self, store: StateStore) -> None:
        store.add_usage("b#2", "2026-11-05", 1, 10, 1)
        store.add_usage("a#1", "2026-11-05", 2, 20, 2)
        store.add_usage("a#1", "2026-11-06", 3, 30, 3)
        store.add_usage("a#1", "2026-11-0", 9, 9, 9)  # a prefix of the other days
        assert store.usage("2026-11-05") == [
            KeyUsage("a#1", "2026-11-05", 2, 20, 2),
            KeyUsage("b#2", "2026-11-05", 1, 10, 1),
        ]
        assert store.usage("2026-11-06") == [KeyUsage("a#1", "2026-11-06", 3, 30, 3)]
        assert store.usage("2026-11-0") == [KeyUsage("a#1", "2026-11-0", 9, 9, 9)]
        assert store.usage("2026-11-07") == []

    def test_kinds_of_state_do_not_mix(self, store: StateStore) -> None:
        # Counters, cooldowns and usage may share one keyspace (DynamoDB).
        store.next_turn("p#1")
        store.add_usage("p#1", "2026-11-05", 1, 1, 1)
        assert store.cooldowns(NOW) == []
        assert store.cooling(["p#1"], NOW) == {}
        store.cool("p#1", NOW + 5, "x")
        assert store.usage("2026-11-05") == [KeyUsage("p#1", "2026-11-05", 1, 1, 1)]
        assert store.next_turn("p#1") == 1

    # ------------------------------------------------------------ conversations

    def test_conversation_round_trip_small(self, store: StateStore) -> None:
        store.put_conversation("resp_small", b'{"input": []}', LATER + 60)
        assert store.get_conversation("resp_small", LATER) == b'{"input": []}'

    def test_conversation_round_trip_empty(self, store: StateStore) -> None:
        store.put_conversation("resp_empty", b"", LATER + 60)
        assert store.get_conversation("resp_empty", LATER) == b""

    def test_conversation_round_trip_large_incompressible(self, store: StateStore) -> None:
        data = incompressible(5 * MB)
        store.put_conversation("resp_large", data, LATER + 60)
        assert store.get_conversation("resp_large", LATER) == data

    def test_conversation_round_trip_large_document(self, store: StateStore) -> None:
        data = conversation_document(8 * MB)
        store.put_conversation("resp_doc", data, LATER + 60)
        assert store.get_conversation("resp_doc", LATER) == data

    def test_unknown_conversation_is_none(self, store: StateStore) -> None:
        assert store.get_conversation("resp_unknown", LATER) is None
        store.put_conversation("resp_known", b"x", LATER + 60)
        assert store.get_conversation("resp_unknown", LATER) is None
        assert store.get_conversation("resp_know", LATER) is None

    def test_a_second_put_replaces_the_conversation(self, store: StateStore) -> None:
        large, larger = incompressible(2 * MB), incompressible(3 * MB)
        for data in (b"first", large, b"second", larger, large, b"third"):
            store.put_conversation("resp_r", data, LATER + 60)
            assert store.get_conversation("resp_r", LATER) == data
        # The expiry is replaced too, either way.
        store.put_conversation("resp_r", b"short", LATER + 10)
        assert store.get_conversation("resp_r", LATER + 20) is None
        store.put_conversation("resp_r", b"long", LATER + 100)
        assert store.get_conversation("resp_r", LATER + 20) == b"long"

    def test_conversation_expires_at_expires_at(self, store: StateStore) -> None:
        store.put_conversation("resp_e", b"data", LATER + 60.5)
        assert store.get_conversation("resp_e", LATER) == b"data"
        assert store.get_conversation("resp_e", LATER + 60.25) == b"data"
        assert store.get_conversation("resp_e", LATER + 60.5) is None
        assert store.get_conversation("resp_e", LATER + 3600) is None
        # Reads compare and never delete: an earlier clock still finds it.
        assert store.get_conversation("resp_e", LATER) == b"data"

    def test_large_conversation_expires_too(self, store: StateStore) -> None:
        data = incompressible(2 * MB)
        store.put_conversation("resp_le", data, LATER + 60)
        assert store.get_conversation("resp_le", LATER + 60) is None
        assert store.get_conversation("resp_le", LATER + 59) == data

    def test_delete_conversation(self, store: StateStore) -> None:
        store.put_conversation("resp_d", b"data", LATER + 60)
        store.put_conversation("resp_kept", b"kept", LATER + 60)
        assert store.delete_conversation("resp_d") is True
        assert store.get_conversation("resp_d", LATER) is None
        assert store.delete_conversation("resp_d") is False
        assert store.delete_conversation("resp_never") is False
        assert store.get_conversation("resp_kept", LATER) == b"kept"

    def test_delete_large_conversation(self, store: StateStore) -> None:
        store.put_conversation("resp_dl", incompressible(2 * MB), LATER + 60)
        assert store.delete_conversation("resp_dl") is True
        assert store.get_conversation("resp_dl", LATER) is None
        store.put_conversation("resp_dl", b"again", LATER + 60)
        assert store.get_conversation("resp_dl", LATER) == b"again"

    def test_deleting_an_expired_conversation_is_false(self, store: StateStore) -> None:
        expired = time.time() - 60
        store.put_conversation("resp_x", b"data", expired)
        assert store.delete_conversation("resp_x") is False
        assert store.get_conversation("resp_x", expired - 60) is None  # forgotten all the same

    def test_conversations_from_many_threads(self, store: StateStore) -> None:
        datas = {f"resp_t{i}": incompressible(400_000 + i) for i in range(6)}
        errors: list[BaseException] = []

        def work(conversation_id: str, data: bytes) -> None:
            try:
                for _ in range(2):
                    store.put_conversation(conversation_id, data, LATER + 60)
                    assert store.get_conversation(conversation_id, LATER) == data
            except BaseException as exc:  # reported to the test
                errors.append(exc)

        threads = [threading.Thread(target=work, args=item) for item in datas.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert {c: store.get_conversation(c, LATER) for c in datas} == datas

    def test_conversations_do_not_mix_with_other_state(self, store: StateStore) -> None:
        store.put_conversation("p#1", b"conversation", LATER + 60)
        store.put_conversation("2026-11-05", b"conversation", LATER + 60)
        assert store.cooldowns(NOW) == []
        assert store.cooling(["p#1"], NOW) == {}
        assert store.usage("2026-11-05") == []
        assert store.next_turn("p#1") == 0
        store.cool("p#1", NOW + 5, "x")
        store.add_usage("p#1", "2026-11-05", 1, 1, 1)
        assert store.get_conversation("p#1", LATER) == b"conversation"
        assert store.cooldowns(NOW) == [Cooldown("p#1", NOW + 5, "x")]


class TestMemoryStateStore(StateStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[StateStore]:
        store = MemoryStateStore()
        yield store
        store.close()


class TestMemoryConversationBounds:
    def test_oldest_dropped_beyond_the_count(self) -> None:
        store = MemoryStateStore(max_conversations=3)
        for i in range(4):
            store.put_conversation(f"c{i}", b"x", LATER)
        assert [store.get_conversation(f"c{i}", NOW) for i in range(4)] == [None, b"x", b"x", b"x"]

    def test_oldest_dropped_beyond_the_bytes(self) -> None:
        store = MemoryStateStore(max_conversation_bytes=100)
        for i in range(3):
            store.put_conversation(f"c{i}", bytes(40), LATER)
        assert [store.get_conversation(f"c{i}", NOW) is not None for i in range(3)] == [False, True, True]

    def test_a_replaced_conversation_counts_once(self) -> None:
        store = MemoryStateStore(max_conversations=2, max_conversation_bytes=100)
        store.put_conversation("a", bytes(40), LATER)
        for _ in range(10):
            store.put_conversation("b", bytes(40), LATER)
        assert store.get_conversation("a", NOW) == bytes(40)
        # A put counts as new: the one put again is the last to go.
        store.put_conversation("a", bytes(40), LATER)
        store.put_conversation("c", bytes(40), LATER)
        assert [store.get_conversation(c, NOW) is not None for c in "abc"] == [True, False, True]

    def test_expired_dropped_before_the_oldest(self) -> None:
        clock = [NOW]
        store = MemoryStateStore(max_conversations=3, clock=lambda: clock[0])
        store.put_conversation("old", b"x", NOW + 1000)
        store.put_conversation("ending", b"x", NOW + 10)
        store.put_conversation("newer", b"x", NOW + 1000)
        clock[0] = NOW + 20
        store.put_conversation("newest", b"x", NOW + 1000)
        assert [store.get_conversation(c, NOW) is not None for c in ("old", "ending", "newer", "newest")] == [
            True,
            False,
            True,
            True,
        ]

    def test_the_conversation_just_put_is_kept_even_alone_over_budget(self) -> None:
        store = MemoryStateStore(max_conversation_bytes=100)
        store.put_conversation("small", bytes(10), LATER)
        store.put_conversation("huge", bytes(1000), LATER)
        assert store.get_conversation("huge", NOW) == bytes(1000)
        assert store.get_conversation("small", NOW) is None

    def test_the_data_is_a_copy(self) -> None:
        store = MemoryStateStore()
        buffer = bytearray(b"before")
        store.put_conversation("c", buffer, LATER)  # type: ignore[arg-type]  (a caller's buffer)
        buffer[:] = b"after!"
        assert store.get_conversation("c", NOW) == b"before"


class TestSqliteStateStore(StateStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[StateStore]:
        store = SqliteStateStore(tmp_path / "nested" / "state.db")
        yield store
        store.close()

    def test_state_outlives_the_store(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        first = SqliteStateStore(path)
        first.next_turn("p")
        first.cool("p#1", NOW + 5, "x")
        first.add_usage("p#1", "d", 1, 2, 3)
        first.close()
        second = SqliteStateStore(path)
        try:
            assert second.next_turn("p") == 1
            assert second.cooldowns(NOW) == [Cooldown("p#1", NOW + 5, "x")]
            assert second.usage("d") == [KeyUsage("p#1", "d", 1, 2, 3)]
        finally:
            second.close()

    def test_conversations_shared_by_two_stores_on_one_file(self, tmp_path: Path) -> None:
        """As two server processes share them."""
        first, second = SqliteStateStore(tmp_path / "state.db"), SqliteStateStore(tmp_path / "state.db")
        try:
            data = incompressible(5 * MB)
            first.put_conversation("resp_s", data, LATER + 60)
            assert second.get_conversation("resp_s", LATER) == data
            second.put_conversation("resp_s", b"replaced", LATER + 60)
            assert first.get_conversation("resp_s", LATER) == b"replaced"
            assert first.delete_conversation("resp_s") is True
            assert second.get_conversation("resp_s", LATER) is None
            assert second.delete_conversation("resp_s") is False
        finally:
            first.close()
            second.close()

    def test_conversations_outlive_the_store(self, tmp_path: Path) -> None:
        first = SqliteStateStore(tmp_path / "state.db")
        first.put_conversation("resp_o", b"kept", LATER + 60)
        first.close()
        second = SqliteStateStore(tmp_path / "state.db")
        try:
            assert second.get_conversation("resp_o", LATER) == b"kept"
        finally:
            second.close()

    def test_an_existing_database_gains_the_conversations_table(self, tmp_path: Path) -> None:
        path = tmp_path / "state.db"
        old = sqlite3.connect(path)
        old.executescript(
            "CREATE TABLE turns (pool TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE cooldowns (entry TEXT PRIMARY KEY, until REAL NOT NULL, reason TEXT NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE usage (day TEXT NOT NULL, entry TEXT NOT NULL, requests INTEGER NOT NULL, "
            "input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, PRIMARY KEY (day, entry)) WITHOUT ROWID;"
            "INSERT INTO turns VALUES ('p', 7);"
        )
        old.close()
        store = SqliteStateStore(path)
        try:
            assert store.next_turn("p") == 7
            store.put_conversation("resp_n", b"new", LATER + 60)
            assert store.get_conversation("resp_n", LATER) == b"new"
        finally:
            store.close()

    def test_a_put_deletes_expired_conversations_a_few_at_a_time(self, tmp_path: Path) -> None:
        store = SqliteStateStore(tmp_path / "state.db")
        expired = time.time() - 60

        def stored() -> set[str]:
            with sqlite3.connect(store.path) as db:
                return {row[0] for row in db.execute("SELECT id FROM conversations")}

        try:
            with sqlite3.connect(store.path) as db:  # a backlog, as after a quiet week
                db.executemany(
                    "INSERT INTO conversations (id, data, expires_at) VALUES (?, ?, ?)",
                    [(f"resp_old{i}", b"x" * 1000, expired - i) for i in range(PURGE_PER_PUT + 4)],
                )
            store.put_conversation("resp_live", b"live", LATER + 60)
            # At most PURGE_PER_PUT deleted, the longest expired first.
            assert stored() == {"resp_live", "resp_old0", "resp_old1", "resp_old2", "resp_old3"}
            store.put_conversation("resp_new", b"new", LATER + 60)
            assert stored() == {"resp_live", "resp_new"}
        finally:
            store.close()

    def test_conversations_wait_for_the_lock_even_on_the_loop(self, tmp_path: Path) -> None:
        """They take the patient connection wherever they are called from: a
        lock held longer than the loop's short wait delays them, and they
        neither fail nor are owed."""
        store = SqliteStateStore(tmp_path / "state.db", loop_busy_ms=5)
        other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
        release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        try:
            other.execute("BEGIN IMMEDIATE")
            release.start()

            async def on_the_loop() -> bytes | None:
                store.put_conversation("resp_l", b"waited", LATER + 60)
                return store.get_conversation("resp_l", LATER)

            started = time.monotonic()
            assert asyncio.run(on_the_loop()) == b"waited"
            assert time.monotonic() - started >= 0.25
        finally:
            release.join()
            other.close()
            store.close()

    def test_conversations_in_worker_threads_beside_the_loop(self, tmp_path: Path) -> None:
        store = SqliteStateStore(tmp_path / "state.db")
        datas = {f"resp_w{i}": incompressible(MB + i) for i in range(4)}

        async def serve() -> tuple[list[int], dict[str, bytes | None]]:
            async def keep(conversation_id: str, data: bytes) -> bytes | None:
                await asyncio.to_thread(store.put_conversation, conversation_id, data, LATER + 60)
                return await asyncio.to_thread(store.get_conversation, conversation_id, LATER)

            tasks = [asyncio.create_task(keep(*item)) for item in datas.items()]
            turns = []
            for _ in range(50):  # the loop goes on using the store meanwhile
                turns.append(store.next_turn("pool"))
                await asyncio.sleep(0)
            found = await asyncio.gather(*tasks)
            return turns, dict(zip(datas, found, strict=True))

        try:
            turns, found = asyncio.run(serve())
            assert found == datas
        finally:
            store.close()
        # The loop's turns went on beside the long writes (owed, if they
        # found the lock taken), and every one of them reached the counter.
        assert len(turns) == 50
        again = SqliteStateStore(tmp_path / "state.db")
        try:
            assert again.next_turn("pool") == 50
        finally:
            again.close()

    def test_uses_wal(self, tmp_path: Path) -> None:
        store = SqliteStateStore(tmp_path / "state.db")
        try:
            assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            store.close()


class TestStateStoreFromEnv:
    def test_table_means_dynamodb(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CCPROXY_TABLE", "ccproxy-state")
        monkeypatch.setenv("AWS_REGION", "eu-west-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        store = state_store_from_env(None)
        try:
            assert isinstance(store, DynamoStateStore)
            assert store.table_name == "ccproxy-state"
            assert store._client.meta.region_name == "eu-west-1"
        finally:
            store.close()

    def test_state_path(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("CCPROXY_TABLE", raising=False)
        monkeypatch.setenv("CCPROXY_STATE", str(tmp_path / "x" / "s.db"))
        store = state_store_from_env(tmp_path)
        try:
            assert isinstance(store, SqliteStateStore)
            assert (tmp_path / "x" / "s.db").exists()
        finally:
            store.close()

    def test_default_is_dot_ccproxy_in_the_current_directory(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.delenv("CCPROXY_TABLE", raising=False)
        monkeypatch.delenv("CCPROXY_STATE", raising=False)
        monkeypatch.chdir(tmp_path)
        store = state_store_from_env(tmp_path / "elsewhere")
        try:
            assert isinstance(store, SqliteStateStore)
            assert (tmp_path / ".ccproxy" / "state.db").exists()
        finally:
            store.close()


class SettingsContract:
    """Settings (`ccproxy switch`'s active group): small named values every
    process sharing the store reads; subclasses provide the `store` fixture."""

    def test_a_setting_never_put_is_none(self, store: StateStore) -> None:
        assert store.get_setting("active_group") is None

    def test_put_replace_and_remove(self, store: StateStore) -> None:
        store.put_setting("active_group", "second")
        assert store.get_setting("active_group") == "second"
        store.put_setting("active_group", "free")
        assert store.get_setting("active_group") == "free"
        store.put_setting("active_group", None)
        assert store.get_setting("active_group") is None
        store.put_setting("active_group", None)  # removing what is not there is no error
        assert store.get_setting("active_group") is None
        store.put_setting("active_group", "second")
        assert store.get_setting("active_group") == "second"

    def test_settings_are_separate_by_name(self, store: StateStore) -> None:
        store.put_setting("a", "1")
        store.put_setting("b", "2")
        store.put_setting("a", None)
        assert (store.get_setting("a"), store.get_setting("b")) == (None, "2")

    def test_settings_do_not_mix_with_other_state(self, store: StateStore) -> None:
        store.put_setting("p#1", "value")
        store.add_amount("p#1", 3, LATER)
        store.cool("p#1", NOW + 5, "x")
        store.put_conversation("p#1", b"conversation", LATER + 60)
        assert store.get_setting("p#1") == "value"
        assert store.read_amount("p#1", NOW) == 3
        assert store.cooldowns(NOW) == [Cooldown("p#1", NOW + 5, "x")]
        assert store.get_conversation("p#1", LATER) == b"conversation"
        assert store.next_turn("p#1") == 0


class TestMemorySettings(SettingsContract):
    @pytest.fixture
    def store(self) -> Iterator[StateStore]:
        store = MemoryStateStore()
        yield store
        store.close()


class TestSqliteSettings(SettingsContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[StateStore]:
        store = SqliteStateStore(tmp_path / "state.db")
        yield store
        store.close()

    def test_two_stores_on_one_file_see_each_others_settings(self, tmp_path: Path) -> None:
        """As two server processes and the `ccproxy switch` command do."""
        first, second = SqliteStateStore(tmp_path / "state.db"), SqliteStateStore(tmp_path / "state.db")
        try:
            first.put_setting("active_group", "second")
            assert second.get_setting("active_group") == "second"
            second.put_setting("active_group", "free")
            assert first.get_setting("active_group") == "free"
            first.put_setting("active_group", None)
            assert second.get_setting("active_group") is None
        finally:
            first.close()
            second.close()

    def test_a_store_on_the_loop_reads_what_another_wrote(self, tmp_path: Path) -> None:
        """The server reads the active group on its event loop."""
        server, command = SqliteStateStore(tmp_path / "state.db"), SqliteStateStore(tmp_path / "state.db")

        async def on_the_loop() -> str | None:
            return server.get_setting("active_group")

        try:
            assert asyncio.run(on_the_loop()) is None
            command.put_setting("active_group", "second")
            assert asyncio.run(on_the_loop()) == "second"
        finally:
            server.close()
            command.close()

    def test_settings_outlive_the_store(self, tmp_path: Path) -> None:
        first = SqliteStateStore(tmp_path / "state.db")
        first.put_setting("active_group", "second")
        first.close()
        second = SqliteStateStore(tmp_path / "state.db")
        try:
            assert second.get_setting("active_group") == "second"
        finally:
            second.close()

    def test_an_existing_database_gains_the_settings_table(self, tmp_path: Path) -> None:
        """A state file from before settings: opened, it keeps its state and takes settings."""
        path = tmp_path / "state.db"
        old = sqlite3.connect(path)
        old.executescript(
            "CREATE TABLE turns (pool TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE cooldowns (entry TEXT PRIMARY KEY, until REAL NOT NULL, reason TEXT NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE usage (day TEXT NOT NULL, entry TEXT NOT NULL, requests INTEGER NOT NULL, "
            "input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, PRIMARY KEY (day, entry)) WITHOUT ROWID;"
            "CREATE TABLE amounts (counter TEXT PRIMARY KEY, n INTEGER NOT NULL, expires_at REAL NOT NULL) "
            "WITHOUT ROWID;"
            "CREATE TABLE conversations (id TEXT PRIMARY KEY, data BLOB NOT NULL, expires_at REAL NOT NULL);"
            "INSERT INTO turns VALUES ('p', 7);"
            "INSERT INTO conversations VALUES ('resp_old', x'6f6c64', 4000000060);"
        )
        old.close()
        store = SqliteStateStore(path)
        try:
            assert store.get_setting("active_group") is None
            store.put_setting("active_group", "second")
            assert store.get_setting("active_group") == "second"
            assert store.next_turn("p") == 7
            assert store.get_conversation("resp_old", LATER) == b"old"
        finally:
            store.close()
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT name, value FROM settings").fetchall() == [("active_group", "second")]

    def test_a_put_on_the_loop_meeting_a_lock_is_owed_then_lands(self, tmp_path: Path) -> None:
        """Another process holding the write lock does not stall the loop:
        the put is owed, this store reads it back at once, and it lands
        once the lock is free. A put off the loop meanwhile lands after it."""
        store = SqliteStateStore(tmp_path / "state.db", loop_busy_ms=5)
        reader = SqliteStateStore(tmp_path / "state.db")
        other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
        try:
            other.execute("BEGIN IMMEDIATE")

            async def on_the_loop() -> tuple[float, str | None]:
                started = time.monotonic()
                store.put_setting("active_group", "owed")
                return time.monotonic() - started, store.get_setting("active_group")

            took, seen = asyncio.run(on_the_loop())
            assert took < 0.5 and seen == "owed"
            assert reader.get_setting("active_group") is None  # not landed: the lock is still held
            release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
            release.start()
            try:
                store.put_setting("active_group", "later")  # off the loop: waits for the lock, lands last
            finally:
                release.join()
            assert reader.get_setting("active_group") == "later"
            assert store.get_setting("active_group") == "later"
        finally:
            other.close()
            reader.close()
            store.close()
