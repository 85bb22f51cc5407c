"""The in-memory state store."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .base import Cooldown, KeyUsage, StateStore


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
