"""The config file: providers, groups of aliases, access keys.

Loading fails fast with a message that names the file and the bad key, so a
typo is found at startup rather than on the first request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .environment import Environment
from .protocols import ProtocolName
from .stores.secrets import AccessKey, parse_access_keys

ToolMode = Literal["native", "compat"]
GroupToolMode = Literal["auto", "native", "compat"]


class ConfigError(Exception):
    """The config cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Provider(_Strict):
    protocol: ProtocolName
    base_url: str
    keys: list[str] = Field(default_factory=list)
    tool_mode: ToolMode = "native"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=600, gt=0)
    # This provider's HTTP proxy (else the environment's: HTTP(S)_PROXY, NO_PROXY).
    proxy: str | None = None
    # TLS trust: true (the system's CA bundle), false (no check), or the path of a CA bundle.
    verify: bool | str = True

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// proxy URL")
        return value

    @field_validator("verify")
    @classmethod
    def _ca_bundle(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and not os.path.exists(os.path.expanduser(value)):
            raise ValueError(f"no CA bundle at {value!r} (give true, false or the path of a CA bundle)")
        return value


class Target(_Strict):
    """One `provider/model` an alias routes to; `weight` is its share of the
    alias's traffic (the long form `{target: provider/model, weight: 2}`)."""

    provider: str
    model: str
    weight: int = Field(default=1, ge=1, le=100)

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


def _parse_targets(alias: str, targets: Any) -> Any:
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not targets:
        raise ValueError(f"{alias}: give a list of provider/model targets")
    return [_parse_target(alias, t) for t in targets]


# ---------------------------------------------------------------- shaping


class Replacement(_Strict):
    """A literal find/replace on the system prompt."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    find: str = Field(min_length=1)
    with_: str = Field(alias="with")


class PromptInjection(_Strict):
    """Text added to the system prompt or the last user turn, or replacing
    the system prompt; only for target models matching `models` when given."""

    mode: Literal["append", "prepend", "replace"] = "append"
    to: Literal["system", "last_user"] = "system"
    text: str
    models: str | None = None


class ToolFilter(_Strict):
    """Tools dropped by name glob, or only those kept (`drop` still applies
    to what `keep` lets through)."""

    drop: list[str] = Field(default_factory=list)
    keep: list[str] | None = None


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class ParameterValues(_Strict):
    """Model parameters a group sets: where the client gave none (`defaults`)
    or whatever it gave (`overrides`)."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: ReasoningEffort | None = None
    thinking_budget: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_kind_of_thinking(self) -> ParameterValues:
        if self.reasoning_effort is not None and self.thinking_budget is not None:
            raise ValueError("give reasoning_effort or thinking_budget, not both")
        return self


class ParameterLimits(_Strict):
    """Ceilings on what the client asks for."""

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    thinking_budget: int | None = Field(default=None, ge=0)


class Shape(_Strict):
    """What a group changes in each request before it is converted, in this
    order."""

    replace: list[Replacement] = Field(default_factory=list)
    prompt: list[PromptInjection] = Field(default_factory=list)
    tools: ToolFilter | None = None
    temperature_ratio: float | None = Field(default=None, ge=0, le=10)
    defaults: ParameterValues = Field(default_factory=ParameterValues)
    overrides: ParameterValues = Field(default_factory=ParameterValues)
    limits: ParameterLimits = Field(default_factory=ParameterLimits)
    # Merged into the encoded upstream body as it is (a mapping into a mapping).
    extra_body: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- routing by need


class Need(_Strict):
    """What a request must show for a route rule to take it; every condition
    given must hold."""

    input_tokens_over: int | None = Field(default=None, ge=0)
    thinking: bool | None = None
    images: bool | None = None
    model: str | None = None  # a glob on the client's model name

    def __str__(self) -> str:
        said = [
            name if value is True else f"no {name}" if value is False else f"{name} {value}"
            for name, value in self
            if value is not None
        ]
        return ", ".join(said)


class RouteRule(_Strict):
    when: Need
    targets: list[Target]
    # Shaping for the requests this rule takes, instead of the group's (a
    # small model for background calls wants fewer tools than the main one).
    shape: Shape | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        if value in ("thinking", "images"):
            return {value: True}
        if isinstance(value, str):
            raise ValueError(f"{value!r}: say thinking, images, or a mapping of input_tokens_over, model")
        return value

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        return _parse_targets("targets", value)

    @model_validator(mode="after")
    def _says_something(self) -> RouteRule:
        if not str(self.when):
            raise ValueError("when: give at least one condition")
        return self


class Group(_Strict):
    tool_mode: GroupToolMode = "auto"
    # Checked in order before the alias globs: the first rule the request meets chooses.
    route: list[RouteRule] = Field(default_factory=list)
    shape: Shape | None = None
    # Ordered: the first alias glob that matches a client's model wins.
    models: dict[str, list[Target]] = Field(default_factory=dict)

    @field_validator("models", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {str(alias): _parse_targets(alias, targets) for alias, targets in value.items()}


def _parse_target(alias: str, target: Any) -> Target:
    if isinstance(target, Target):
        return target
    if isinstance(target, dict):
        unknown = set(target) - {"target", "weight"}
        if unknown:
            raise ValueError(f"{alias}: unknown key {sorted(unknown)[0]!r} in a target (use target and weight)")
        weight = target.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
            raise ValueError(f"{alias}: weight must be a whole number from 1 to 100")
        parsed = _parse_target(alias, target.get("target"))
        return Target(provider=parsed.provider, model=parsed.model, weight=weight)
    if not isinstance(target, str) or "/" not in target:
        raise ValueError(f"{alias}: target {target!r} must be provider-id/model")
    provider, model = target.split("/", 1)
    if not provider or not model:
        raise ValueError(f"{alias}: target {target!r} must be provider-id/model")
    return Target(provider=provider, model=model)


class LogSettings(_Strict):
    """Research logs (the sink itself is chosen by the environment)."""

    sample: float = Field(default=1.0, ge=0, le=1)  # share of exchanges recorded
    max_body_bytes: int = Field(default=1_000_000, ge=1024)  # per captured body or stream


class FetchSettings(_Strict):
    """Images and documents ccproxy downloads for a client (for upstreams that
    take only inline data): caps, and the private hosts it may reach."""

    allow: list[str] = Field(default_factory=list)  # hosts or networks: "files.internal", "10.0.0.0/8"
    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    timeout: float = Field(default=30, gt=0)

    @field_validator("allow")
    @classmethod
    def _networks(cls, allow: list[str]) -> list[str]:
        from .fetch import FetchPolicy

        FetchPolicy(allow=tuple(allow))  # a malformed network fails when the config loads
        return allow


class Limits(_Strict):
    """What an outsider may make ccproxy hold: a client's request body, an
    upstream's whole answer (decompressed) and one record of its stream."""

    request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    answer_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    record_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)


class Conversations(_Strict):
    """Answers kept so that a client may continue a conversation by id (the
    Responses API's stored responses), and for how long."""

    keep_days: float = Field(default=30, gt=0)


class Config(_Strict):
    providers: dict[str, Provider] = Field(default_factory=dict)
    groups: dict[str, Group] = Field(default_factory=dict)
    active_group: str = "default"
    # Plain keys (strings, `env:NAME` allowed) or named keys with a scope and
    # limits (stores.secrets.AccessKey's fields; `key` may be `env:NAME`).
    access_keys: list[str | dict[str, Any]] = Field(default_factory=list)
    # How many more pool entries a request may try after the first fails
    # before its first byte, and how long all the tries together may take.
    retries: int = Field(default=2, ge=0, le=20)
    # The whole request, failovers and the stream included: Lambda stops a
    # function at 900 s, and bookkeeping needs a moment after the answer.
    deadline: float = Field(default=840, gt=0)
    logs: LogSettings = Field(default_factory=LogSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    limits: Limits = Field(default_factory=Limits)
    conversations: Conversations = Field(default_factory=Conversations)

    # The access keys as parsed, and as last built from their resolved values.
    _parsed_access_keys: list[AccessKey] | None = PrivateAttr(default=None)
    _resolved_access_keys: tuple[tuple[str | None, ...], tuple[AccessKey, ...]] | None = PrivateAttr(default=None)

    @field_validator("access_keys")
    @classmethod
    def _access_keys_shape(cls, value: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
        parse_access_keys(value, "access_keys")
        return value

    def resolved_access_keys(self) -> list[AccessKey]:
        """The access keys with `env:` references read (those unset left out).
        Every request asks: the entries are parsed once, and the keys built
        again only when a referenced variable changed."""
        entries = self._parsed_access_keys
        if entries is None:
            entries = self._parsed_access_keys = parse_access_keys(self.access_keys, "access_keys")
        resolved = tuple(resolve_secret(entry.key) for entry in entries)
        # Private attributes are read through pydantic's __getattr__: once each.
        built = self._resolved_access_keys
        if built is not None and built[0] == resolved:
            return list(built[1])
        found = self._build_access_keys(entries, resolved)
        self._resolved_access_keys = (resolved, tuple(found))
        return found

    @staticmethod
    def _build_access_keys(entries: list[AccessKey], resolved: tuple[str | None, ...]) -> list[AccessKey]:
        found = []
        for entry, key in zip(entries, resolved):
            if not key:
                continue
            if not entry.named:
                found.append(AccessKey.plain(key))
            else:
                found.append(
                    AccessKey(
                        entry.name, key, entry.groups, entry.models, entry.rpm, entry.tokens_per_day, entry.expires
                    )
                )
        return found

    def check_references(self) -> None:
        """Cross-references pydantic cannot see: targets name real providers,
        active_group names a real group."""
        for group_name, group in self.groups.items():
            pools = [(f"models.{alias}", targets) for alias, targets in group.models.items()]
            pools += [(f"route.{index}.targets", rule.targets) for index, rule in enumerate(group.route)]
            for alias, targets in pools:
                for target in targets:
                    if target.provider not in self.providers:
                        known = ", ".join(sorted(self.providers)) or "none"
                        raise ValueError(
                            f"groups.{group_name}.{alias}: unknown provider {target.provider!r} (providers: {known})"
                        )
        if self.groups and self.active_group not in self.groups:
            raise ValueError(f"active_group: no group named {self.active_group!r}")


def resolve_secret(value: str) -> str | None:
    """A literal key, or `env:NAME` read from the environment (None if unset)."""
    if value.startswith("env:"):
        # Not a setting of ccproxy's (those are in environment.Environment):
        # the config names whichever variable holds its key.
        return os.environ.get(value[4:]) or None
    return value or None


def parse(data: Any, source: str) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys")
    try:
        config = Config.model_validate(data)
        config.check_references()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"{source}: {where}: {message}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load(path: str | os.PathLike[str]) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    return from_text(text, str(path))


def from_text(text: str | bytes, source: str) -> Config:
    """A config from its YAML (or JSON) text; `source` names it in errors."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse(data, source)


def default_path(env: Environment | None = None) -> Path:
    """--config's default: $CCPROXY_CONFIG, then ./ccproxy.yaml. `env`
    defaults to the process environment as it is now."""
    return (env or Environment.read()).config or Path("ccproxy.yaml")
