"""The config a running proxy serves, and the group `/switch` names, kept
current without a restart or a redeploy.

- The config comes from a `ConfigSource` (the local file `ccproxy serve`
  was given, or on AWS the object `ccproxy config push` uploaded) checked at
  most every `source.every` seconds. A new config that does not load is
  refused: the error is logged once and the config before it goes on
  serving.
- The active group is what `ccproxy switch` wrote to the state store, shared
  by every process and Lambda instance; each re-reads it at most every
  `ACTIVE_GROUP_SECONDS`. Without one written, the config's `active_group`.

A request takes one config for its whole life (`LiveConfig.current`): a
reload in the middle of it changes nothing under it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from .config import Config, ConfigError, load
from .stores.state import StateStore

log = logging.getLogger("ccproxy")

# The state store's name for the group `ccproxy switch` chose.
ACTIVE_GROUP_SETTING = "active_group"
# How stale a process's view of the active group may be, in seconds.
ACTIVE_GROUP_SECONDS = 2.0


class ConfigSource(ABC):
    """Where a newer config may come from."""

    # Seconds between two checks.
    every: float = 1.0
    # True where a check waits on the network: it then runs in a worker thread.
    blocks_on_network = False

    @abstractmethod
    def newer(self) -> Config | None:
        """The config as the source holds it now if it changed since the last
        check (or since the source was made), else None. Raises ConfigError
        when what changed cannot be used; the next check does not read it
        again unless it changes again."""


class FileSource(ConfigSource):
    """The config file on this machine: a change of its modification time,
    size or inode (an editor that saves by renaming) is a change."""

    every = 1.0

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seen = self._signature()

    def __str__(self) -> str:
        return str(self.path)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def newer(self) -> Config | None:
        signature = self._signature()
        if signature == self._seen:
            return None
        self._seen = signature
        return load(self.path)


class LiveConfig:
    """The config now, and the active group now. `prepare` is applied to
    each config a source brings before it serves (on Lambda, dropping the
    keys a config names)."""

    def __init__(
        self,
        config: Config,
        source: ConfigSource | None = None,
        prepare: Callable[[Config], Config] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.source = source
        self._prepare = prepare
        self._clock = clock
        self._checked = clock()
        self._followers: list[Callable[[Config], None]] = []
        self._active: tuple[str | None, float] | None = None  # (what the store said, when it was read)
        self._warned: str | None = None  # the missing active group last logged
        self._checking: asyncio.Task[bool] | None = None  # a check over the network under way
        self._reading: asyncio.Task[None] | None = None  # a read of the active group under way

    def follow(self, follower: Callable[[Config], None]) -> None:
        """Call `follower` with each new config once it serves."""
        self._followers.append(follower)

    async def current(self) -> Config:
        """The config to serve this request with, after a check of the source
        when one is due. A check over the network is not waited for: this
        request is served by the config in hand, and a newer one serves from
        the request after the check ends (a slow S3 delays no one)."""
        source = self.source
        if source is None or self._clock() - self._checked < source.every:
            return self.config
        if source.blocks_on_network:
            if self._checking is None or self._checking.done():
                self._checking = asyncio.get_running_loop().create_task(self.check())
            return self.config
        await self.check()
        return self.config

    async def check(self) -> bool:
        """Look at the source now; whether a new config was taken."""
        source = self.source
        if source is None:
            return False
        self._checked = self._clock()  # before the wait: concurrent requests do not check again
        try:
            newer = await asyncio.to_thread(source.newer) if source.blocks_on_network else source.newer()
            if newer is None:
                return False
            if self._prepare is not None:
                newer = self._prepare(newer)
        except ConfigError as exc:
            log.error("config not reloaded: %s; still serving the one loaded before", exc)
            return False
        except Exception as exc:  # the source itself failed (S3 unreachable): try again at the next check
            # One line, not a traceback: it repeats at every check while the source is down.
            log.error(
                "config source %s could not be checked (%s: %s); still serving the one loaded before",
                source,
                type(exc).__name__,
                exc,
            )
            return False
        self.config = newer
        for follower in self._followers:
            follower(newer)
        log.info("config reloaded from %s", source)
        return True

    async def watch(self) -> None:
        """Check the source every `source.every` seconds until cancelled (a
        local server, so that a change is taken and a bad file is reported
        without waiting for a request)."""
        source = self.source
        if source is None:
            return
        while True:
            await asyncio.sleep(source.every)
            await self.check()

    async def active_group(self, state: StateStore, config: Config) -> str:
        """The group `/switch` routes to: the one `ccproxy switch` wrote to
        the state store, else (or while the config has no such group)
        `config.active_group`. The first read is waited for (until it, this
        process does not know the choice); a later one over the network
        runs beside the request, as a config check does."""
        now = self._clock()
        reading = self._reading
        if self._active is None:
            if reading is None or reading.done():
                reading = self._reading = asyncio.get_running_loop().create_task(self._read_active(state, now))
            await asyncio.shield(reading)
        elif now - self._active[1] >= ACTIVE_GROUP_SECONDS and (reading is None or reading.done()):
            if state.blocks_on_network:
                self._reading = asyncio.get_running_loop().create_task(self._read_active(state, now))
            else:  # a local file answers in microseconds
                await self._read_active(state, now)
        chosen = self._active[0] if self._active is not None else None
        if chosen is None or chosen in config.groups:
            return chosen or config.active_group
        if chosen != self._warned:
            self._warned = chosen
            log.warning(
                "the active group %r (ccproxy switch) is not in the config; /switch serves %r until it is switched",
                chosen,
                config.active_group,
            )
        return config.active_group

    async def _read_active(self, state: StateStore, now: float) -> None:
        """What the state store says now; on failure, the last answer stands
        (none yet: the config's group) until the next read."""
        try:
            if state.blocks_on_network:
                chosen = await asyncio.to_thread(state.get_setting, ACTIVE_GROUP_SETTING)
            else:
                chosen = state.get_setting(ACTIVE_GROUP_SETTING)
        except Exception as exc:
            log.error("could not read the active group from the state store (%s: %s)", type(exc).__name__, exc)
            chosen = self._active[0] if self._active is not None else None
        self._active = (chosen, now)
