"""The StateStore contract, run against every implementation.

`StateStoreContract` is reused by tests/integration/test_state_store_shared.py
for the DynamoDB store; subclasses provide the `store` fixture.
"""

from __future__ import annotations

import threading
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

NOW = 1_700_000_000.0


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


class TestMemoryStateStore(StateStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[StateStore]:
        store = MemoryStateStore()
        yield store
        store.close()


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
