"""Provider keys and access keys kept outside the config file.

The document is the same wherever it lives (a local JSON file or a Secrets
Manager secret):
    {"providers": {"openai": ["sk-..."]}, "access_keys": ["ccp-..."]}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..environment import Environment


class SecretsError(Exception):
    """The secrets document cannot be read or has the wrong shape."""


@dataclass(frozen=True, slots=True)
class Secrets:
    providers: dict[str, list[str]] = field(default_factory=dict)
    access_keys: list[str] = field(default_factory=list)


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
    if not isinstance(access_keys, list) or not all(isinstance(k, str) for k in access_keys):
        raise SecretsError(f"{source}: access_keys must be a list of strings")
    return Secrets({name: [k for k in keys if k] for name, keys in providers.items()}, [k for k in access_keys if k])


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
