"""LiveConfig: a source is checked at most every `every` seconds; a config
that does not load, or a source that fails, leaves the old one serving;
followers hear each new config; the active group is re-read at most every
ACTIVE_GROUP_SECONDS."""

from __future__ import annotations

import asyncio
import logging

import pytest
from ccproxy.config import Config, ConfigError, parse
from ccproxy.live import ACTIVE_GROUP_SECONDS, ACTIVE_GROUP_SETTING, ConfigSource, FileSource, LiveConfig
from ccproxy.stores.state import MemoryStateStore


def config(group: str) -> Config:
    return parse({"groups": {group: {"models": {}}, "other": {"models": {}}}, "active_group": group}, "test")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scripted(ConfigSource):
    every = 30.0

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.checks = 0

    def newer(self) -> Config | None:
        self.checks += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_source_is_checked_at_most_every_period_and_followers_hear_the_new_config():
    clock, source = Clock(), Scripted(None, config("b"))
    live = LiveConfig(config("a"), source, clock=clock)
    heard: list[str] = []
    live.follow(lambda new: heard.append(new.active_group))
    assert run(live.current()).active_group == "a" and source.checks == 0
    clock.now += 29.9
    assert run(live.current()).active_group == "a" and source.checks == 0
    clock.now += 0.1
    assert run(live.current()).active_group == "a" and source.checks == 1  # unchanged
    clock.now += 30
    assert run(live.current()).active_group == "b" and source.checks == 2
    assert heard == ["b"]


def test_a_bad_config_or_a_failing_source_leaves_the_old_one_serving(caplog):
    clock = Clock()
    source = Scripted(ConfigError("s3://bucket/key: groups: unknown key"), RuntimeError("unreachable"), config("c"))
    live = LiveConfig(config("a"), source, prepare=lambda c: c.model_copy(update={"retries": 7}), clock=clock)
    with caplog.at_level(logging.INFO, logger="ccproxy"):
        for _ in range(2):
            clock.now += 30
            assert run(live.current()).active_group == "a"
        clock.now += 30
        served = run(live.current())
    assert served.active_group == "c" and served.retries == 7  # prepared before it serves
    messages = [r.getMessage() for r in caplog.records]
    assert any("config not reloaded: s3://bucket/key: groups: unknown key" in m for m in messages)
    assert any("could not be checked" in m for m in messages)


def test_a_file_source_sees_a_change_once(tmp_path):
    path = tmp_path / "ccproxy.yaml"
    path.write_text("active_group: a\ngroups: {a: {models: {}}}\n")
    source = FileSource(path)
    assert source.newer() is None
    path.write_text("active_group: b\ngroups: {b: {models: {}}}\n")
    assert source.newer().active_group == "b"
    assert source.newer() is None
    path.write_text("groups: [not yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        source.newer()
    assert source.newer() is None  # reported once, not at every check
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        source.newer()


def test_the_active_group_is_read_from_the_state_store_at_most_every_period():
    clock, state = Clock(), MemoryStateStore()
    served = config("a")
    live = LiveConfig(served, clock=clock)
    assert run(live.active_group(state, served)) == "a"
    state.put_setting(ACTIVE_GROUP_SETTING, "other")
    assert run(live.active_group(state, served)) == "a"  # the view is fresh enough
    clock.now += ACTIVE_GROUP_SECONDS
    assert run(live.active_group(state, served)) == "other"
    state.put_setting(ACTIVE_GROUP_SETTING, None)
    clock.now += ACTIVE_GROUP_SECONDS
    assert run(live.active_group(state, served)) == "a"


def test_an_active_group_the_config_lacks_falls_back_to_the_configs_with_a_warning(caplog):
    clock, state = Clock(), MemoryStateStore()
    served = config("a")
    live = LiveConfig(served, clock=clock)
    state.put_setting(ACTIVE_GROUP_SETTING, "gone")
    with caplog.at_level(logging.WARNING, logger="ccproxy"):
        assert run(live.active_group(state, served)) == "a"
        clock.now += ACTIVE_GROUP_SECONDS
        assert run(live.active_group(state, served)) == "a"
    assert sum("'gone'" in r.getMessage() for r in caplog.records) == 1


def test_a_check_over_the_network_is_not_waited_for():
    """A slow S3 delays no request: the due check runs beside, and the
    config it brings serves from the request after it ends."""
    import threading

    release = threading.Event()

    class Slow(ConfigSource):
        every = 30.0
        blocks_on_network = True

        def newer(self) -> Config | None:
            release.wait(5)
            return config("b")

    async def scenario() -> list[str]:
        clock = Clock()
        live = LiveConfig(config("a"), Slow(), clock=clock)
        clock.now += 30
        served = [(await live.current()).active_group]  # the check starts; this request does not wait
        served.append((await live.current()).active_group)  # the same check still runs: no second one
        release.set()
        checking = live._checking
        assert checking is not None
        assert await asyncio.wait_for(checking, 5) is True
        served.append((await live.current()).active_group)
        return served

    assert run(scenario()) == ["a", "a", "b"]


def test_over_the_network_the_first_read_is_awaited_and_later_ones_run_beside():
    """A fresh Lambda instance must not serve the config's group while its
    first read of the switch is under way, even to concurrent requests;
    once it knows, a stale view is refreshed without holding anyone up."""

    class Remote(MemoryStateStore):
        blocks_on_network = True

        def __init__(self) -> None:
            super().__init__()
            self.reads = 0

        def get_setting(self, name: str) -> str | None:
            self.reads += 1
            return super().get_setting(name)

    async def scenario() -> tuple[list[str], list[str], int]:
        clock, state = Clock(), Remote()
        served = config("a")
        state.put_setting(ACTIVE_GROUP_SETTING, "other")
        live = LiveConfig(served, clock=clock)
        first = await asyncio.gather(*(live.active_group(state, served) for _ in range(3)))
        state.put_setting(ACTIVE_GROUP_SETTING, None)
        clock.now += ACTIVE_GROUP_SECONDS
        later = [await live.active_group(state, served)]  # the refresh starts; this request keeps the view
        reading = live._reading
        assert reading is not None
        await reading
        later.append(await live.active_group(state, served))
        return first, later, state.reads

    first, later, reads = run(scenario())
    assert first == ["other"] * 3 and later == ["other", "a"] and reads == 2
