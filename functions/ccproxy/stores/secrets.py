"""Provider keys and access keys kept outside the config file.

The document is the same wherever it lives (a local JSON file or a Secrets
Manager secret):
    {"providers": {"openai": ["sk-..."]}, "access_keys": ["ccp-...", {"name": "laptop", "key": "ccp-..."}]}

An access key is a plain string (may use everything) or a named key with a
scope and limits: {"name", "key", "groups", "models", "rpm",
"tokens_per_day", "expires"}, all but name and key optional.
"""

from __future__ import annotations

import datetime
import fnmatch
import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..environment import Environment


class SecretsError(Exception):
    """The secrets document cannot be read or has the wrong shape."""


@functools.lru_cache(maxsize=1024)
def fingerprint(key: str) -> str:
    """A short, stable name for a key that reveals nothing of it (computed
    once per key: every request names its access key by it)."""
    return "k-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class AccessKey:
    """A client's access key: its name (a plain string key is named by its
    fingerprint), its scope and its limits (None: no limit)."""

    name: str
    key: str = field(repr=False)
    groups: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None  # globs on the client's model name
    rpm: int | None = None
    tokens_per_day: int | None = None
    expires: datetime.date | None = None  # the last day it is valid (UTC)
    named: bool = True  # False for a plain string key

    @classmethod
    def plain(cls, key: str) -> AccessKey:
        return cls(fingerprint(key), key, named=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    def expired(self, today: datetime.date) -> bool:
        return self.expires is not None and today > self.expires

    def allows_group(self, group: str) -> bool:
        return self.groups is None or group in self.groups

    def allows_model(self, model: str) -> bool:
        return self.models is None or any(fnmatch.fnmatchcase(model, glob) for glob in self.models)

    def document(self) -> str | dict[str, Any]:
        """As the secrets document holds it."""
        if not self.named:
            return self.key
        found: dict[str, Any] = {"name": self.name, "key": self.key}
        if self.groups is not None:
            found["groups"] = list(self.groups)
        if self.models is not None:
            found["models"] = list(self.models)
        if self.rpm is not None:
            found["rpm"] = self.rpm
        if self.tokens_per_day is not None:
            found["tokens_per_day"] = self.tokens_per_day
        if self.expires is not None:
            found["expires"] = self.expires.isoformat()
        return found


ACCESS_KEY_FIELDS = frozenset({"name", "key", "groups", "models", "rpm", "tokens_per_day", "expires"})


def parse_access_key(value: Any, where: str) -> AccessKey:
    """One entry of `access_keys`: a string, or a named key. Raises
    ValueError saying what is wrong (never quoting the key)."""
    if isinstance(value, str):
        return AccessKey.plain(value)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: an access key is a string or an object with name and key")
    unknown = set(value) - ACCESS_KEY_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    name, key = value.get("name"), value.get("key")
    if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
        raise ValueError(f"{where}: a named access key needs a non-empty name and key")

    def names(field_name: str) -> tuple[str, ...] | None:
        found = value.get(field_name)
        if found is None:
            return None
        if isinstance(found, str):
            found = [found]
        if not isinstance(found, list) or not all(isinstance(g, str) and g for g in found):
            raise ValueError(f"{where} ({name}): {field_name} must be a list of strings")
        return tuple(found)

    def count(field_name: str) -> int | None:
        found = value.get(field_name)
        if found is None:
            return None
        if isinstance(found, bool) or not isinstance(found, int) or found < 1:
            raise ValueError(f"{where} ({name}): {field_name} must be a positive whole number")
        return found

    expires = value.get("expires")
    if expires is not None:
        try:
            expires = datetime.date.fromisoformat(str(expires))
        except ValueError:
            raise ValueError(f"{where} ({name}): expires must be a date, YYYY-MM-DD") from None
    return AccessKey(name, key, names("groups"), names("models"), count("rpm"), count("tokens_per_day"), expires)


def parse_access_keys(values: list[Any], where: str) -> list[AccessKey]:
    keys = [parse_access_key(v, f"{where}[{i}]") for i, v in enumerate(values) if v]
    seen: set[str] = set()
    for key in keys:
        if key.name in seen:
            raise ValueError(f"{where}: two access keys are named {key.name!r}")
        seen.add(key.name)
    return keys


@dataclass(frozen=True, slots=True)
class Secrets:
    providers: dict[str, list[str]] = field(default_factory=dict)
    access_keys: list[AccessKey] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """As the secrets file and the secret hold it."""
        return {"providers": self.providers, "access_keys": [k.document() for k in self.access_keys]}


def parse_secrets(data: Any, source: str) -> Secrets:
    if not isinstance(data, dict):
        raise SecretsError(f"{source}: must be a JSON object")
    unknown = set(data) - {"providers", "access_keys"}
    if unknown:
        raise SecretsError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    providers = data.get("providers") or {}
    access_keys = data.get("access_keys") or []
    if not isinstance(providers, dict) or not all(
        isinstance(keys, list) and all(isinstance(k, str) for k in keys) for keys in providers.values()
    ):
        raise SecretsError(f"{source}: providers must map provider ids to lists of key strings")
    if not isinstance(access_keys, list):
        raise SecretsError(f"{source}: access_keys must be a list of keys (strings or named keys)")
    try:
        parsed = parse_access_keys(access_keys, "access_keys")
    except ValueError as exc:
        raise SecretsError(f"{source}: {exc}") from None
    return Secrets({name: [k for k in keys if k] for name, keys in providers.items()}, parsed)


class SecretStore(Protocol):
    def get(self) -> Secrets:
        """The current secrets; implementations cache and refresh as they see fit."""


class NoSecrets:
    def get(self) -> Secrets:
        return Secrets()


class FileSecretStore:
    """A local JSON file, re-read when it changes on disk (looked at no more
    than once a second: every request asks)."""

    RECHECK_SECONDS = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: float | None = None
        self._secrets = Secrets()
        self._checked = float("-inf")

    def get(self) -> Secrets:
        now = time.monotonic()
        if now - self._checked < self.RECHECK_SECONDS:
            return self._secrets
        self._checked = now
        try:
            stamp = self.path.stat().st_mtime
        except OSError:
            self._secrets, self._stamp = Secrets(), None
            return self._secrets
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise SecretsError(f"{self.path}: not readable JSON ({exc})") from None
            self._secrets = parse_secrets(data, str(self.path))
            self._stamp = stamp
        return self._secrets


class AwsSecretStore:
    """A Secrets Manager secret read through Powertools Parameters, cached for
    `max_age` seconds so a rotated key takes effect without a redeploy."""

    def __init__(self, secret_id: str, max_age: int = 300) -> None:
        self.secret_id = secret_id
        self.max_age = max_age

    def get(self) -> Secrets:
        from aws_lambda_powertools.utilities import parameters

        try:
            data = parameters.get_secret(self.secret_id, transform="json", max_age=self.max_age)
        except parameters.exceptions.GetParameterError as exc:
            raise SecretsError(f"secret {self.secret_id}: cannot be read ({type(exc).__name__})") from None
        except parameters.exceptions.TransformParameterError:
            raise SecretsError(f"secret {self.secret_id}: not JSON") from None
        if data in (None, ""):
            return Secrets()
        return parse_secrets(data, f"secret {self.secret_id}")


def secret_store_from_env(config_path: Path | None, *, env: Environment | None = None) -> SecretStore:
    """CCPROXY_SECRET_ID, else CCPROXY_SECRETS_FILE,
    else secrets.json beside the config. `env` defaults to the process
    environment as it is now."""
    env = env or Environment.read()
    if env.secret_id:
        return AwsSecretStore(env.secret_id)
    if env.secrets_file:
        return FileSecretStore(env.secrets_file)
    if config_path is not None:
        return FileSecretStore(config_path.parent / "secrets.json")
    return NoSecrets()
