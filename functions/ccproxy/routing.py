"""From the client's model name to upstream targets: groups and alias globs."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache

from .config import Config, Group, Target
from .errors import ProxyError


@dataclass(frozen=True, slots=True)
class Resolution:
    group_name: str
    group: Group
    alias: str          # the matching alias glob
    model: str          # the client's model name, without any group@ part
    targets: tuple[Target, ...]


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def split_group(model: str) -> tuple[str | None, str]:
    """`group@alias` names a group whatever the route says."""
    group, at, alias = model.partition("@")
    return (group, alias) if at and group else (None, model)


def group_named(config: Config, name: str) -> Group:
    group = config.groups.get(name)
    if group is None:
        known = ", ".join(sorted(config.groups)) or "none configured"
        raise ProxyError(404, f"no group named {name!r} (groups: {known})", kind="not_found")
    return group


def resolve(config: Config, group_name: str, model: str) -> Resolution:
    explicit, alias_name = split_group(model)
    if explicit is not None:
        group_name = explicit
    group = group_named(config, group_name)
    if not alias_name:
        raise ProxyError(400, "the request names no model", kind="invalid_request", param="model")
    for alias, targets in group.models.items():
        if _glob(alias).match(alias_name):
            return Resolution(group_name, group, alias, alias_name, tuple(targets))
    aliases = ", ".join(group.models) or "none"
    raise ProxyError(
        404,
        f"model {alias_name!r} matches no alias of group {group_name!r} (aliases: {aliases})",
        kind="not_found",
        code="model_not_found",
    )


def listed_models(group: Group) -> list[str]:
    """The names a group offers in model listings: its aliases, in order."""
    return list(group.models)
