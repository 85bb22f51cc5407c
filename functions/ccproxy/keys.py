"""Provider keys and client access keys, from the config and the secret store."""

from __future__ import annotations

import hmac

from .config import Config, Provider, resolve_secret
from .errors import ProxyError
from .stores.secrets import AccessKey, SecretStore, fingerprint

__all__ = ["AccessKey", "KeyRing", "fingerprint", "identify", "matches", "scrub"]


class KeyRing:
    def __init__(self, config: Config, secrets: SecretStore) -> None:
        self.config = config  # the config serving now (a reload replaces it)
        self._secrets = secrets

    def follow(self, config: Config) -> None:
        """A new config serves."""
        self.config = config

    def provider_keys(self, provider_id: str) -> list[str | None]:
        """The provider's keys: its config `keys` plus the secret's list.
        A provider configured without any key is keyless: one `None` entry."""
        provider: Provider | None = self.config.providers.get(provider_id)
        if provider is None:  # a call planned under the config before a reload
            raise ProxyError(503, f"provider {provider_id!r} left the config while the request ran", kind="unavailable")
        keys = [k for k in (resolve_secret(ref) for ref in provider.keys) if k]
        for key in self._secrets.get().providers.get(provider_id, []):
            if key not in keys:
                keys.append(key)
        if keys:
            return list(keys)
        if provider.keys:
            missing = ", ".join(ref[4:] for ref in provider.keys if ref.startswith("env:"))
            hint = f"set {missing}" if missing else "add one to the config"
            raise ProxyError(
                500,
                f"provider {provider_id!r} has no API key: {hint}, or put its keys in the secrets",
                kind="internal",
                code="provider_key_missing",
            )
        return [None]

    def access_keys(self) -> list[AccessKey]:
        """The config's access keys, then the secrets'."""
        keys = self.config.resolved_access_keys()
        keys.extend(self._secrets.get().access_keys)
        return keys

    def check_access(self, presented: str | None, *, open_when_empty: bool) -> bool:
        """Whether `presented` is a valid access key. With no access key
        configured, the answer is `open_when_empty` (true only for a server on
        loopback). The comparison takes constant time for every configured key,
        whether or not one matches."""
        keys = self.access_keys()
        if not keys:
            return open_when_empty
        return identify(presented, keys) is not None

    def secrets(self) -> list[str]:
        """Every key this ring knows, for scrubbing records and logs."""
        found = {k.key for k in self.access_keys()}
        for provider_id in self.config.providers:
            try:
                found.update(k for k in self.provider_keys(provider_id) if k)
            except ProxyError:
                continue
        return sorted(found, key=len, reverse=True)


def matches(presented: str | None, keys: list[str]) -> bool:
    """Whether `presented` is one of `keys`, in constant time for every key,
    whether or not one matches."""
    if not presented:
        return False
    given = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


def identify(presented: str | None, keys: list[AccessKey]) -> AccessKey | None:
    """Which of `keys` was presented (None: none), comparing against every
    key in constant time, whether or not one matches."""
    if not presented:
        return None
    given = presented.encode()
    found: AccessKey | None = None
    for key in keys:
        if hmac.compare_digest(given, key.key.encode()) and found is None:
            found = key
    return found


REDACTED = "[redacted]"


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret replaced (an upstream error that echoes the
    key it was sent, say)."""
    for secret in secrets:
        if secret and len(secret) >= 8 and secret in text:
            text = text.replace(secret, REDACTED)
    return text
