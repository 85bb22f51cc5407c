"""The in-memory state store."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .base import Cooldown, KeyUsage, StateStore

# Conversations kept in memory at most, by count and by bytes: a process
# that needs no persistence must not grow without end either. Beyond
# either, the expired go first, then the least recently put.
MAX_CONVERSATIONS = 4096
MAX_CONVERSATION_BYTES = 256 * 1024 * 1024
# Counters kept before the expired ones are dropped.
MAX_AMOUNTS = 4096


class MemoryStateStore(StateStore):
    """Process-local state, for unit tests of callers (and a single process
    that needs no persistence).

    Conversations are bounded by `max_conversations` and
    `max_conversation_bytes`: a put beyond either drops the expired ones,
    then the oldest puts, until both hold again. The conversation just put
    is always kept, even one larger than the byte budget on its own."""

    def __init__(
        self,
        *,
        max_conversations: int = MAX_CONVERSATIONS,
        max_conversation_bytes: int = MAX_CONVERSATION_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._turns: dict[str, int] = {}
        self._cool: dict[str, Cooldown] = {}
        self._usage: dict[tuple[str, str], KeyUsage] = {}
        self._amounts: dict[str, tuple[int, float]] = {}  # counter -> (value, expires_at)
        # id -> (data, expires_at), oldest put first.
        self._conversations: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._conversation_bytes = 0
        self._settings: dict[str, str] = {}
        self.max_conversations = max_conversations
        self.max_conversation_bytes = max_conversation_bytes
        self._clock = clock

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

    def add_amount(self, counter: str, amount: int, expires_at: float) -> int:
        now = self._clock()
        with self._lock:
            value, until = self._amounts.get(counter, (0, 0.0))
            if until <= now:
                value, until = 0, float(expires_at)
            value += int(amount)
            self._amounts[counter] = (value, until)
            if len(self._amounts) > MAX_AMOUNTS:
                for name in [c for c, (_, e) in self._amounts.items() if e <= now]:
                    del self._amounts[name]
            return value

    def read_amount(self, counter: str, now: float) -> int:
        with self._lock:
            value, until = self._amounts.get(counter, (0, 0.0))
        return value if until > now else 0

    def put_conversation(self, conversation_id: str, data: bytes, expires_at: float) -> None:
        data = bytes(data)  # the caller's buffer may change afterwards
        with self._lock:
            self._forget(conversation_id)
            self._conversations[conversation_id] = (data, float(expires_at))
            self._conversation_bytes += len(data)
            if self._over_bounds():
                self._drop_expired(self._clock())
            while self._over_bounds() and len(self._conversations) > 1:
                self._forget(next(iter(self._conversations)))

    def get_conversation(self, conversation_id: str, now: float) -> bytes | None:
        with self._lock:
            found = self._conversations.get(conversation_id)
        if found is None or found[1] <= now:
            return None
        return found[0]

    def delete_conversation(self, conversation_id: str) -> bool:
        with self._lock:
            found = self._forget(conversation_id)
            return found is not None and found[1] > self._clock()

    def get_setting(self, name: str) -> str | None:
        with self._lock:
            return self._settings.get(name)

    def put_setting(self, name: str, value: str | None) -> None:
        with self._lock:
            if value is None:
                self._settings.pop(name, None)
            else:
                self._settings[name] = str(value)

    def _forget(self, conversation_id: str) -> tuple[bytes, float] | None:
        found = self._conversations.pop(conversation_id, None)
        if found is not None:
            self._conversation_bytes -= len(found[0])
        return found

    def _over_bounds(self) -> bool:
        return (
            len(self._conversations) > self.max_conversations or self._conversation_bytes > self.max_conversation_bytes
        )

    def _drop_expired(self, now: float) -> None:
        for conversation_id in [c for c, (_, expires_at) in self._conversations.items() if expires_at <= now]:
            self._forget(conversation_id)
