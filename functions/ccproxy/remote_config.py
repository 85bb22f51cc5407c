"""On AWS, the config `ccproxy config push` uploaded, as a config source.

Every function checks the object's ETag at most every CHECK_SECONDS (one
small S3 request that answers 304 while nothing changed) and takes a new
version with no rebuild or redeploy. The config packaged with the code is the
fallback: served while nothing was pushed, and again once the pushed object
is deleted.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .config import Config, ConfigError, from_text, load
from .live import ConfigSource
from .stores.config_object import Absent, ConfigObjectTooLarge, S3ConfigObject

log = logging.getLogger("ccproxy")

# How stale a function's config may be after a push, in seconds.
CHECK_SECONDS = 30.0


class S3Source(ConfigSource):
    """The pushed config in S3, with the packaged file behind it."""

    blocks_on_network = True

    def __init__(self, config_object: S3ConfigObject, packaged: str | Path, every: float = CHECK_SECONDS) -> None:
        self.config_object = config_object
        self.packaged = Path(packaged)
        self.every = every
        # The ETag of the version last read, served or refused (None: no
        # object read, or the last one was deleted).
        self._etag: str | None = None
        # A slow check may still run when the next one is due: one at a time.
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return self.config_object.url

    def initial(self) -> tuple[Config, bool]:
        """The config to start with, and whether it is the pushed one: that
        if there is one that loads (a cold start after a push serves it at
        once), else the packaged file. Raises ConfigError only when the
        packaged file does not load."""
        try:
            pushed = self.newer()
        except ConfigError as exc:
            log.error("pushed config refused: %s; serving the packaged config %s", exc, self.packaged)
            pushed = None
        except Exception:  # S3 unreachable or forbidden: the packaged file now, S3 again at the next check
            log.exception("%s could not be read; serving the packaged config %s for now", self, self.packaged)
            pushed = None
        if pushed is not None:
            return pushed, True
        return load(self.packaged), False

    def newer(self) -> Config | None:
        with self._lock:
            try:
                found = self.config_object.read_if_changed(self._etag)
            except ConfigObjectTooLarge as exc:
                self._etag = exc.etag
                raise ConfigError(str(exc)) from None
            if found is None:
                return None
            if isinstance(found, Absent):
                if self._etag is None:
                    return None
                self._etag = None
                log.warning("%s was deleted: serving the packaged config %s again", self, self.packaged)
                return load(self.packaged)
            self._etag = found.etag  # before parsing: a bad version is refused once, not at every check
            return from_text(found.body, str(self))
