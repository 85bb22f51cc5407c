"""The state store shared between processes, as the server's workers and the
Lambda instances share it: a SQLite file, and a DynamoDB table served over
HTTP by moto (boto3 unpatched, pointed at it by AWS_ENDPOINT_URL)."""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier, Semaphore
from pathlib import Path
from typing import Any

import pytest
from ccproxy.stores.state import DynamoStateStore, SqliteStateStore, StateStore, state_store_from_env

from tests.support.aws import MotoServer, moto_server  # noqa: F401  (the fixture)
from tests.unit.test_state_store import StateStoreContract

TURNS = 200
SPAWN = multiprocessing.get_context("spawn")  # fresh interpreters, as separate workers are


def _sqlite_turns(path: str, start: Barrier, results: Any) -> None:
    store = SqliteStateStore(Path(path))
    try:
        start.wait(timeout=30)
        results.put([store.next_turn("pool") for _ in range(TURNS)])
    finally:
        store.close()


def _dynamo_turns(table: str, mine: Semaphore, theirs: Semaphore, results: Any) -> None:
    # Built from the environment the parent set (AWS_ENDPOINT_URL etc.), as
    # a Lambda instance builds it.
    os.environ["CCPROXY_TABLE"] = table
    store = state_store_from_env(None)
    assert isinstance(store, DynamoStateStore)
    turns = []
    try:
        for _ in range(TURNS // 4):
            # Take turns: moto does not make concurrent updates atomic as
            # DynamoDB does, so the test shows sharing, not moto's locking.
            if not mine.acquire(timeout=30):
                raise TimeoutError("the other process stopped taking turns")
            try:
                turns.append(store.next_turn("pool"))
            finally:
                theirs.release()
        results.put(turns)
    finally:
        store.close()


def _run(processes: list[Any], results: Any) -> list[list[int]]:
    for process in processes:
        process.start()
    try:
        collected = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return collected


def test_two_processes_share_one_sqlite_counter(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    start = SPAWN.Barrier(2)
    results = SPAWN.Queue()
    processes = [SPAWN.Process(target=_sqlite_turns, args=(path, start, results)) for _ in range(2)]
    first, second = _run(processes, results)
    assert len(first) == len(second) == TURNS
    assert sorted(first + second) == list(range(2 * TURNS))
    # Each process saw its own turns in increasing order.
    assert first == sorted(first) and second == sorted(second)


def _open_at_once(path: str, start: Barrier, results: Any) -> None:
    start.wait(timeout=30)
    try:
        store = SqliteStateStore(Path(path))
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")
        return
    results.put(store.next_turn("pool"))
    store.close()


def test_two_processes_can_create_the_same_sqlite_file_at_once(tmp_path: Path) -> None:
    """Two servers started together open a state file that does not exist
    yet (SQLite refuses the WAL switch at once, without busy_timeout, while
    the other is making it)."""
    fork = multiprocessing.get_context("fork")  # cheap starts, so the opens do collide
    for attempt in range(20):
        path = str(tmp_path / f"state-{attempt}.db")
        start, results = fork.Barrier(2), fork.Queue()
        processes = [fork.Process(target=_open_at_once, args=(path, start, results)) for _ in range(2)]
        got = _run(processes, results)
        assert all(isinstance(turn, int) for turn in got), f"attempt {attempt}: {got}"
        assert sorted(got) == [0, 1]


def _seeded(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _sqlite_conversation(path: str, results: Any) -> None:
    """Reads what the parent put, and replaces it with its own."""
    store = SqliteStateStore(Path(path))
    try:
        found = store.get_conversation("resp_shared", 4_000_000_000.0)
        store.put_conversation("resp_shared", _seeded(2, 3_000_000), 4_000_000_060.0)
        results.put(found == _seeded(1, 5_000_000))
    finally:
        store.close()


def test_two_processes_share_sqlite_conversations(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SqliteStateStore(Path(path))
    try:
        store.put_conversation("resp_shared", _seeded(1, 5_000_000), 4_000_000_060.0)
        results = SPAWN.Queue()
        assert _run([SPAWN.Process(target=_sqlite_conversation, args=(path, results))], results) == [True]
        assert store.get_conversation("resp_shared", 4_000_000_000.0) == _seeded(2, 3_000_000)
    finally:
        store.close()


@pytest.fixture
def table(moto_server: MotoServer) -> str:  # noqa: F811
    return moto_server.create_state_table()


class TestDynamoStateStore(StateStoreContract):
    @pytest.fixture
    def store(self, table: str) -> Iterator[StateStore]:
        store = DynamoStateStore(table)
        yield store
        store.close()

    def test_ttl_attribute_is_set(self, table: str, moto_server: MotoServer) -> None:  # noqa: F811
        """TTL on `expires_at` lets DynamoDB drop ended cooldowns and old usage."""
        store = DynamoStateStore(table)
        try:
            store.cool("p#1", 1_700_000_000.5, "429")
            store.add_usage("p#1", "2026-11-05", 1, 2, 3)
        finally:
            store.close()
        dynamodb = moto_server.client("dynamodb")
        cool = dynamodb.get_item(TableName=table, Key={"pk": {"S": "cool#p#1"}})["Item"]
        assert cool["expires_at"] == {"N": str(1_700_000_001 + 60)}
        usage = dynamodb.get_item(TableName=table, Key={"pk": {"S": "usage#2026-11-05#p#1"}})["Item"]
        assert int(usage["expires_at"]["N"]) > 1_700_000_000 + 80 * 86400

    def test_cooling_reads_more_than_one_batch(self, table: str) -> None:
        store = DynamoStateStore(table)
        try:
            entries = [f"p#{i:04d}" for i in range(150)]
            for entry in entries[::10]:
                store.cool(entry, 2_000_000_000.0, "429")
            assert sorted(store.cooling(entries, 1_900_000_000.0)) == entries[::10]
        finally:
            store.close()


def test_two_processes_share_one_dynamodb_counter(table: str) -> None:
    first_turn, second_turn = SPAWN.Semaphore(1), SPAWN.Semaphore(0)
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(target=_dynamo_turns, args=(table, first_turn, second_turn, results)),
        SPAWN.Process(target=_dynamo_turns, args=(table, second_turn, first_turn, results)),
    ]
    first, second = _run(processes, results)
    assert sorted(first + second) == list(range(TURNS // 2))
    # They alternated, so each saw every other value.
    assert {tuple(sorted(first)), tuple(sorted(second))} == {
        tuple(range(0, TURNS // 2, 2)),
        tuple(range(1, TURNS // 2, 2)),
    }
