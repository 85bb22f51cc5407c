"""What a named access key may do, enforced before any upstream is called:
its expiry, its revocation, its groups and models, its requests per minute
and its tokens per day; and its usage, counted once each answer is complete.

The counters live in the shared state store, so every process and every
Lambda instance sees the same ones. They are named by the key's name (and
its fingerprint, for a revocation), never by the key.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Callable

from .errors import ProxyError
from .keys import AccessKey
from .stores.state import StateStore, utc_day

log = logging.getLogger("ccproxy")

# How long a process trusts what it last read of a key's revocation: a
# revoked key is refused everywhere within this time, even by a process that
# has not re-read its secrets yet.
REVOCATION_VIEW_SECONDS = 30.0
# How long the store remembers a revocation: far longer than any process
# takes to re-read the secrets the key was removed from.
REVOCATION_KEPT_SECONDS = 365 * 86400
# A day's token counter outlives its day by this much (it is read only
# during its day).
DAY_SLACK_SECONDS = 3600


def revoked_counter(key: AccessKey) -> str:
    return f"access-revoked#{key.fingerprint}"


def rpm_counter(key: AccessKey) -> str:
    return f"access-rpm#{key.name}#{key.fingerprint}"


def tokens_counter(key: AccessKey, day: str) -> str:
    return f"access-tokens#{day}#{key.name}#{key.fingerprint}"


def usage_entry(name: str, model: str) -> str:
    """The usage entry (StateStore.add_usage) of an access key on a model."""
    return f"access#{name}#{model}"


def revoke(state: StateStore, key: AccessKey, now: float | None = None) -> None:
    """Record in the store that `key` is revoked (`ccproxy access revoke`)."""
    now = time.time() if now is None else now
    state.add_amount(revoked_counter(key), 1, now + REVOCATION_KEPT_SECONDS)


def next_utc_midnight(now: float) -> float:
    day = utc_day(now) + datetime.timedelta(days=1)
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp()


class AccessControl:
    """Admits a request presented with an access key, or refuses it with a
    ProxyError in the client's shape: 401 for an expired or revoked key, 403
    outside its groups or models, 429 over its limits (with Retry-After)."""

    def __init__(
        self,
        state: StateStore,
        *,
        clock: Callable[[], float] = time.time,
        revocation_view_seconds: float = REVOCATION_VIEW_SECONDS,
    ) -> None:
        self.state = state
        self.clock = clock
        self.revocation_view_seconds = revocation_view_seconds
        self._revoked: dict[str, tuple[float, bool]] = {}  # fingerprint -> (read at, revoked)

    async def _call(self, function, *args):
        # As the rotation does: a store that blocks on the network runs in a
        # worker thread; SQLite answers in microseconds, less than a thread hop.
        if self.state.blocks_on_network:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    async def admit(self, key: AccessKey, group: str) -> None:
        now = self.clock()
        if key.expired(utc_day(now)):
            raise ProxyError(401, f"access key {key.name!r} has expired", kind="authentication", code="key_expired")
        if await self._is_revoked(key, now):
            raise ProxyError(401, "missing or invalid access key", kind="authentication", code="invalid_api_key")
        if not key.allows_group(group):
            raise ProxyError(
                403, f"access key {key.name!r} may not use group {group!r}", kind="permission", code="group_not_allowed"
            )
        if key.tokens_per_day is not None:
            used = await self._call(self.state.read_amount, tokens_counter(key, utc_day(now).isoformat()), now)
            if used >= key.tokens_per_day:
                raise ProxyError(
                    429,
                    f"access key {key.name!r} has used its {key.tokens_per_day} tokens for today (UTC)",
                    kind="rate_limit",
                    code="tokens_per_day",
                    retry_after=max(1.0, next_utc_midnight(now) - now),
                )
        if key.rpm is not None:
            window_end = (int(now) // 60 + 1) * 60
            count = await self._call(self.state.count_window, rpm_counter(key), float(window_end))
            if count > key.rpm:
                raise ProxyError(
                    429,
                    f"access key {key.name!r} is over its {key.rpm} requests per minute",
                    kind="rate_limit",
                    code="rpm",
                    retry_after=max(1.0, window_end - now),
                )

    @staticmethod
    def check_model(key: AccessKey | None, model: str) -> None:
        """403 when the client's model name is outside the key's `models`."""
        if key is not None and not key.allows_model(model):
            raise ProxyError(
                403, f"access key {key.name!r} may not use model {model!r}", kind="permission", code="model_not_allowed"
            )

    async def used(self, key: AccessKey, model: str, input_tokens: int, output_tokens: int) -> None:
        """Count one answer: the key's usage by model, and its tokens today."""
        now = self.clock()
        day = utc_day(now).isoformat()
        await self._call(self.state.add_usage, usage_entry(key.name, model), day, 1, input_tokens, output_tokens)
        if key.tokens_per_day is not None and input_tokens + output_tokens > 0:
            await self._call(
                self.state.add_amount,
                tokens_counter(key, day),
                input_tokens + output_tokens,
                next_utc_midnight(now) + DAY_SLACK_SECONDS,
            )

    async def _is_revoked(self, key: AccessKey, now: float) -> bool:
        seen = self._revoked.get(key.fingerprint)
        if seen is not None and now - seen[0] < self.revocation_view_seconds:
            return seen[1]
        try:
            revoked = await self._call(self.state.read_amount, revoked_counter(key), now) > 0
        except Exception:  # the store unreachable: what was last known holds
            log.exception("could not read whether access key %s is revoked", key.name)
            return seen[1] if seen is not None else False
        if len(self._revoked) > 4096:
            self._revoked.clear()
        self._revoked[key.fingerprint] = (now, revoked)
        return revoked
