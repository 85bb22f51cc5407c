"""The pool: order, weights, cooldowns."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from ccproxy.config import parse
from ccproxy.errors import ProxyError
from ccproxy.keys import KeyRing
from ccproxy.rotation import Rotation, cool_name, cooldown_for, smooth_order
from ccproxy.stores.secrets import NoSecrets
from ccproxy.stores.state import MemoryStateStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def rotation_for(models: dict, providers: dict | None = None):
    providers = providers or {
        "a": {"protocol": "openai", "base_url": "http://a", "keys": ["ka1", "ka2"]},
        "b": {"protocol": "gemini", "base_url": "http://b", "keys": ["kb1"]},
        "local": {"protocol": "ollama", "base_url": "http://c"},
    }
    config = parse({"providers": providers, "groups": {"default": {"models": models}}}, "test")
    clock = Clock()
    rotation = Rotation(KeyRing(config, NoSecrets()), MemoryStateStore(), clock=clock)
    targets = config.groups["default"].models["m"]
    return rotation, rotation.entries(targets, [t.weight for t in targets]), clock


def first_choices(rotation, entries, n):
    async def run():
        return [(await rotation.plan("pool", entries))[0] for _ in range(n)]

    return asyncio.run(run())


def test_smooth_order_spreads_weights():
    assert smooth_order([2, 1]) == [0, 1, 0]
    assert Counter(smooth_order([5, 3, 1])) == {0: 5, 1: 3, 2: 1}


def test_requests_go_round_every_key_of_every_target():
    rotation, entries, _ = rotation_for({"m": ["a/x", "b/y", "local/z"]})
    picked = [e.name for e in first_choices(rotation, entries, 8)]
    counts = Counter(picked)
    assert counts["a#" + entries[0].name.split("#")[1]] >= 2
    assert len(counts) == 4  # ka1, ka2, kb1 and the keyless local entry
    assert "local#keyless" in counts


def test_weights_split_traffic_300_to_200_100():
    rotation, entries, _ = rotation_for(
        {"m": [{"target": "b/y", "weight": 2}, "local/z"]},
    )
    picked = Counter(str(e.target) for e in first_choices(rotation, entries, 300))
    assert picked == {"b/y": 200, "local/z": 100}


def test_a_cooling_key_is_skipped_until_its_time_runs_out():
    rotation, entries, clock = rotation_for({"m": ["a/x"]})

    async def run():
        plan = await rotation.plan("pool", entries)
        await rotation.failed(plan[0], ProxyError(429, "slow", retry_after=30))
        skipped = [await rotation.plan("pool", entries) for _ in range(4)]
        clock.now += 31
        back = await rotation.plan("pool", entries)
        return plan[0], skipped, back

    cooled, skipped, back = asyncio.run(run())
    assert all(cooled.name not in [e.name for e in plan] for plan in skipped)
    assert cooled.name in [e.name for e in back]


def test_every_entry_cooling_is_a_429_with_the_soonest_retry_after():
    rotation, entries, _ = rotation_for({"m": ["a/x"]})

    async def run():
        await rotation.failed(entries[0], ProxyError(429, "slow", retry_after=40))
        await rotation.failed(entries[1], ProxyError(429, "slow", retry_after=12))
        await rotation.plan("pool", entries)

    with pytest.raises(ProxyError) as caught:
        asyncio.run(run())
    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(12)


def test_rate_limits_cool_per_model_and_bad_keys_on_every_model():
    rotation, entries, clock = rotation_for({"m": ["a/x"]})
    store = rotation.state
    asyncio.run(rotation.failed(entries[0], ProxyError(429, "slow", retry_after=5)))
    asyncio.run(rotation.failed(entries[1], ProxyError(401, "bad key")))
    cooling = {c.entry for c in store.cooldowns(clock.now)}
    assert cooling == {cool_name(entries[0]), entries[1].name}


@pytest.mark.parametrize(
    "error,seconds",
    [
        (ProxyError(429, "x", retry_after=7), 7),
        (ProxyError(429, "x"), 60),
        (ProxyError(403, "x"), 3600),
        (ProxyError(500, "x"), 10),
        (ProxyError(504, "x"), 10),
        (ProxyError(529, "x"), 10),
    ],
)
def test_cooldown_lengths(error, seconds):
    until, _ = cooldown_for(error, 1000.0)
    assert until - 1000.0 == pytest.approx(seconds)


def test_a_daily_quota_rests_until_the_quota_resets():
    now = 1_700_000_000.0
    until, reason = cooldown_for(ProxyError(429, "x", code="quota_per_day", retry_after=30), now)
    assert 3600 < until - now <= 86400 and "daily" in reason


def test_a_bad_request_says_nothing_about_the_key():
    assert cooldown_for(ProxyError(400, "x"), 0.0) is None


def test_usage_is_counted_per_key_per_day():
    rotation, entries, clock = rotation_for({"m": ["a/x"]})
    asyncio.run(rotation.used(entries[0], 10, 3))
    asyncio.run(rotation.used(entries[0], 5, None))
    (usage,) = rotation.state.usage("1970-01-12")
    assert (usage.entry, usage.requests, usage.input_tokens, usage.output_tokens) == (entries[0].name, 2, 15, 3)
    assert "ka1" not in usage.entry


def test_another_process_cooldown_is_seen_within_a_second():
    rotation, entries, clock = rotation_for({"m": ["a/x"]})
    other = Rotation(rotation.keys, rotation.state, clock=clock)

    async def run():
        before = await other.plan("pool", entries)           # other reads the store, and keeps the view
        await rotation.failed(entries[0], ProxyError(429, "slow", retry_after=60))
        mine = await rotation.plan("pool", entries)           # this process sees its own cooldown at once
        still = await other.plan("pool", entries)
        clock.now += 1.01
        later = await other.plan("pool", entries)
        return before, mine, still, later

    before, mine, still, later = asyncio.run(run())
    cooled = entries[0].name
    assert cooled in [e.name for e in before] and cooled not in [e.name for e in mine]
    assert cooled in [e.name for e in still], "the view is trusted for up to a second"
    assert cooled not in [e.name for e in later]
