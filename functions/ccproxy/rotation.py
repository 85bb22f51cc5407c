"""Global key rotation: an alias's targets and their keys form one pool whose
turn is taken from the shared state store, so every process and every Lambda
instance goes round the same pool together. Keys that fail cool down, through
the same store, and are skipped until their time runs out.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .config import Target
from .errors import ProxyError
from .keys import KeyRing, fingerprint
from .stores.state import Cooldown, StateStore, utc_day

# How long a key rests after each kind of failure: a rate limit for
# what the upstream asked, or a minute; bad credentials for long; a server
# error or a timeout briefly.
RATE_LIMIT_DEFAULT = 60.0
AUTH_FAILURE = 3600.0
SERVER_FAILURE = 10.0
MAX_COOLDOWN = 86400.0
RATE_LIMIT_REASONS = frozenset({"rate limited", "daily quota exhausted"})
# How long a process trusts what it last read of a pool's cooldowns. Its own
# failures are seen at once; another process's within this time. It saves a
# store round trip per request (a network call on DynamoDB).
COOLDOWN_VIEW_SECONDS = 1.0
MAX_CACHED_ORDERS = 1024


@dataclass(frozen=True, slots=True)
class Entry:
    """One (target, key) of a pool. `name` identifies the key in the store
    without revealing it; `key` is None for a keyless provider."""

    target: Target
    key: str | None
    name: str


def key_name(provider: str, key: str | None) -> str:
    return f"{provider}#{fingerprint(key) if key else 'keyless'}"


def smooth_order(weights: Sequence[int]) -> list[int]:
    """Indexes in smooth weighted round-robin order (each index appears
    `weight` times, spread out rather than bunched), so that a 2:1 split is
    A B A, A B A... and never A A B B."""
    current = [0] * len(weights)
    total = sum(weights)
    order = []
    for _ in range(total):
        for i, weight in enumerate(weights):
            current[i] += weight
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


def cooldown_for(error: ProxyError, now: float) -> tuple[float, str] | None:
    """How long the key that caused `error` should rest, and why; None for
    errors that say nothing about the key (a bad request)."""
    status = error.status
    if status == 429:
        if error.code == "quota_per_day":
            return _next_pacific_midnight(now), "daily quota exhausted"
        wait = error.retry_after if error.retry_after is not None else RATE_LIMIT_DEFAULT
        return now + min(max(wait, 1.0), MAX_COOLDOWN), "rate limited"
    if status in (401, 403):
        return now + AUTH_FAILURE, f"rejected ({status})"
    if status >= 500 or status == 408:
        wait = error.retry_after if error.retry_after is not None else SERVER_FAILURE
        return now + min(wait, MAX_COOLDOWN), f"failing ({status})"
    return None


def _next_pacific_midnight(now: float) -> float:
    """Google resets daily quotas at midnight Pacific time (UTC-8 taken as a
    fixed offset: an hour early in summer is a harmless error)."""
    pacific = datetime.timezone(datetime.timedelta(hours=-8))
    moment = datetime.datetime.fromtimestamp(now, pacific)
    midnight = (moment + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.timestamp()


class Rotation:
    """Orders a pool's entries for one request: from the shared turn onward,
    cooling entries left out."""

    def __init__(self, keys: KeyRing, state: StateStore, *, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.state = state
        self.clock = clock
        self._views: dict[tuple[str, ...], tuple[float, dict[str, Cooldown]]] = {}
        self._orders: dict[tuple, list[Entry]] = {}

    async def _call(self, function, *args):
        # A store that blocks on the network (DynamoDB) runs in a worker
        # thread; SQLite answers in microseconds, less than a thread hop.
        if self.state.blocks_on_network:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    def entries(self, targets: Sequence[Target], weights: Sequence[int]) -> list[Entry]:
        """Every (target, key), each target's keys repeated by its weight and
        spread smoothly. Raises ProxyError (provider_key_missing) when no
        target has a key at all. The order is worked out once per pool and
        set of keys (it runs on every request)."""
        found: list[tuple[Target, int, tuple[str | None, ...]]] = []
        missing: ProxyError | None = None
        for target, weight in zip(targets, weights):
            try:
                found.append((target, weight, tuple(self.keys.provider_keys(target.provider))))
            except ProxyError as error:
                missing = missing or error
        if not found:
            assert missing is not None
            raise missing
        signature = tuple((target.provider, target.model, weight, keys) for target, weight, keys in found)
        order = self._orders.get(signature)
        if order is None:
            if len(self._orders) >= MAX_CACHED_ORDERS:  # keys were rotated many times: start afresh
                self._orders.clear()
            order = self._orders[signature] = _order(found)
        return order

    async def plan(self, pool: str, entries: list[Entry]) -> list[Entry]:
        """The entries to try, in order, for this request. Raises a 429 with
        the soonest Retry-After when every one is cooling."""
        turn = 0 if len(entries) == 1 else await self._call(self.state.next_turn, pool)
        start = turn % len(entries)
        rotated = entries[start:] + entries[:start]
        unique = list({entry.name + "|" + str(entry.target): entry for entry in rotated}.values())
        now = self.clock()
        cooling = await self._cooling(tuple(sorted({n for e in unique for n in (e.name, cool_name(e))})), now)
        ready = [e for e in unique if e.name not in cooling and cool_name(e) not in cooling]
        if ready:
            return ready
        soonest = min(c.until for c in cooling.values())
        wait = max(1.0, soonest - now)
        if all(c.reason in RATE_LIMIT_REASONS for c in cooling.values()):
            raise ProxyError(
                429,
                f"every key for this model is rate limited; retry in {round(wait)} s",
                kind="rate_limit",
                code="all_keys_cooling",
                retry_after=wait,
            )
        # Failing upstreams are not the client's doing: not a rate limit.
        raise ProxyError(
            503,
            f"every upstream for this model is failing or refusing its key; retry in {round(wait)} s",
            kind="unavailable",
            code="all_keys_cooling",
            retry_after=wait,
        )

    async def _cooling(self, names: tuple[str, ...], now: float) -> dict[str, Cooldown]:
        view = self._views.get(names)
        if view is None or now - view[0] >= COOLDOWN_VIEW_SECONDS:
            view = (now, await self._call(self.state.cooling, names, now))
            self._views[names] = view
        return {name: c for name, c in view[1].items() if c.until > now}

    async def failed(self, entry: Entry, error: ProxyError, alternatives: bool = True) -> None:
        """Cool the entry's key after an upstream failure. A server error
        cools it only where the pool has another entry to go to: with none,
        resting it would only turn the next requests away unanswered (and one
        client's odd request can make a server fail for no fault of the key)."""
        now = self.clock()
        cooldown = cooldown_for(error, now)
        if cooldown is None:
            return
        if not alternatives and (error.status >= 500 or error.status == 408):
            return
        until, reason = cooldown
        # Bad credentials are the key's own fault on every model; rate limits
        # and server trouble are counted per model (Gemini's quotas are).
        name = entry.name if error.status in (401, 403) else cool_name(entry)
        await self._call(self.state.cool, name, until, reason)
        self._views.clear()  # this process sees its own cooldown at once

    async def used(self, entry: Entry, input_tokens: int | None, output_tokens: int | None) -> None:
        day = utc_day(self.clock()).isoformat()
        await self._call(self.state.add_usage, entry.name, day, 1, input_tokens or 0, output_tokens or 0)


def _order(found: Sequence[tuple[Target, int, tuple[str | None, ...]]]) -> list[Entry]:
    groups = [[Entry(target, key, key_name(target.provider, key)) for key in keys] for target, _, keys in found]
    positions = [0] * len(groups)
    order: list[Entry] = []
    # Each target's turns spread by weight; within a target, its keys in turn.
    rounds = max(len(keys) for keys in groups)
    for index in smooth_order([weight for _, weight, _ in found]) * rounds:
        keys = groups[index]
        order.append(keys[positions[index] % len(keys)])
        positions[index] += 1
    return order


def cool_name(entry: Entry) -> str:
    """The store name of the entry's key on the entry's model."""
    return f"{entry.name}#{entry.target.model}"
