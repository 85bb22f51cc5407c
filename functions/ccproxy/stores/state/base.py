"""The state store interface and the records it hands back."""

from __future__ import annotations

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
