"""The state store interface and the records it hands back."""

from __future__ import annotations

import datetime
import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


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
    """What every process must share: round-robin turns, cooldowns and usage
    (the key rotation's), stored conversations (the Responses API's
    stored responses, kept for a later request to continue), and settings
    (small named values an operator changes while the servers run, such as
    the group `/switch` routes to).

    Conversations are opaque documents of up to tens of MB, named by an id
    the proxy made. The proxy calls `put_conversation`, `get_conversation`
    and `delete_conversation` from a worker thread (`asyncio.to_thread`)
    whatever the backend, never on the event loop: even a local write of
    several MB takes longer than the loop may stall. Every backend makes
    them safe to call from any thread.
    """

    # True where each call waits on the network: callers then make it from a
    # worker thread rather than the event loop. (The conversation methods
    # always are, whatever this says.)
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
        """Atomically add to the entry's counts for `day` (`utc_day(now).isoformat()`)."""

    @abstractmethod
    def usage(self, day: str) -> list[KeyUsage]:
        """Every entry's counts for `day`, sorted by entry."""

    @abstractmethod
    def add_amount(self, counter: str, amount: int, expires_at: float) -> int:
        """Atomically add `amount` to `counter` and return its value after
        the add, across all processes sharing the store. A counter whose
        `expires_at` (epoch seconds) has passed starts again from zero (and
        takes the new `expires_at`); otherwise its expiry stays as it was.
        Counters are named by the caller (an access key's name, never a
        key)."""

    @abstractmethod
    def read_amount(self, counter: str, now: float) -> int:
        """The counter's value, 0 when it is unknown or expired at `now`."""

    def count_window(self, counter: str, window_end: float) -> int:
        """Count one more in the window of `counter` ending at `window_end`
        (epoch seconds) and return the count so far, this one included: a
        per-minute request count, say. Each window is a counter of its own
        that expires with the window."""
        return self.add_amount(f"{counter}@{int(window_end)}", 1, window_end)

    @abstractmethod
    def put_conversation(self, conversation_id: str, data: bytes, expires_at: float) -> None:
        """Keep `data` (an opaque document, up to tens of MB) under
        `conversation_id` until `expires_at` (epoch seconds); a second put
        replaces it whole. A reader sees the old data or the new, never a mix.
        Call it from a worker thread."""

    @abstractmethod
    def get_conversation(self, conversation_id: str, now: float) -> bytes | None:
        """The data last put, or None when the id is unknown, deleted, or
        expired at `now` (expired when `expires_at <= now`; deletion by
        expiry is late, so this compares). Call it from a worker thread."""

    @abstractmethod
    def delete_conversation(self, conversation_id: str) -> bool:
        """Forget the conversation; False when there was nothing to forget, or
        only one already expired (by the clock). Call it from a worker thread."""

    @abstractmethod
    def get_setting(self, name: str) -> str | None:
        """The value last put under `name` by any process sharing the store;
        None when it was never set, or removed. Settings never expire."""

    @abstractmethod
    def put_setting(self, name: str, value: str | None) -> None:
        """Set `name` to `value` for every process sharing the store (the
        last put wins); None removes it."""

    def close(self) -> None:  # noqa: B027  (a store that holds nothing has nothing to release)
        """Release connections; the store is not used afterwards."""


def utc_day(now: float) -> datetime.date:
    """The UTC date at `now` (a time.time()): usage is counted by it, access
    keys expire by it. Worked out once a day, not once a request."""
    return _date_of_day(int(now // 86400))


@functools.lru_cache(maxsize=4)
def _date_of_day(days: int) -> datetime.date:
    return _EPOCH + datetime.timedelta(days=days)


_EPOCH = datetime.date(1970, 1, 1)
