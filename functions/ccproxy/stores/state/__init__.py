"""Shared state for key rotation: round-robin counters, cooldowns and usage;
and the conversations the proxy keeps (the Responses API's stored responses).

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
(see SqliteStateStore). The conversation methods are the exception: they move
megabytes, so the caller runs them in a worker thread with every backend.

The interface is in `base`, each backend in its own module (`memory`,
`sqlite`, `dynamo`). Importing the DynamoDB one here is cheap: it imports
boto3 only when it builds a client, so a process without AWS never loads it.
"""

from __future__ import annotations

from pathlib import Path

from ...environment import Environment
from .base import Cooldown, KeyUsage, StateStore, utc_day
from .dynamo import DynamoStateStore
from .memory import MemoryStateStore
from .sqlite import SqliteStateStore

__all__ = [
    "Cooldown",
    "DynamoStateStore",
    "KeyUsage",
    "MemoryStateStore",
    "SqliteStateStore",
    "StateStore",
    "state_store_from_env",
    "utc_day",
]


def state_store_from_env(config_dir: Path | None = None, *, env: Environment | None = None) -> StateStore:
    """CCPROXY_TABLE names a DynamoDB table; else a
    SQLite file at CCPROXY_STATE, else `.ccproxy/state.db` under the current
    directory (not beside the config, which may be read-only or shared).
    `config_dir` is accepted for symmetry with the other stores' factories;
    `env` defaults to the process environment as it is now."""
    env = env or Environment.read()
    if env.table:
        return DynamoStateStore(env.table, env=env)
    return SqliteStateStore(env.state or Path(".ccproxy") / "state.db")
