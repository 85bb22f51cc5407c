"""From the client's request to upstream targets: a group's route rules
(routing by need), then its alias globs."""

from __future__ import annotations

import fnmatch
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from .config import Config, Group, Need, Shape, Target
from .errors import ProxyError
from .protocols.common import estimate_tokens, request_text
from .unified import Image, Request, ToolResult


@dataclass(frozen=True, slots=True)
class Resolution:
    group_name: str
    group: Group
    alias: str  # the matching alias glob
    model: str  # the client's model name, without any group@ part
    targets: tuple[Target, ...]
    rule: str | None = None  # the route rule that chose the targets ("route.0: thinking"), if one did
    # What is changed in the request: the choosing rule's own shape where it
    # has one, else the group's.
    shape: Shape | None = None


_GLOB_CHARS = frozenset("*?[")  # what makes an alias a glob (fnmatch's syntax)
_BOUNDARY_CHARS = frozenset("*?[]")  # what may end a glob's literal tail

# (position in config order, alias, its compiled fnmatch regex's match)
_Candidate = tuple[int, str, Callable]


class _AliasMatcher:
    """One group's aliases, compiled once: the first alias in config order
    that matches a model name wins, exactly as trying each glob in turn
    would, but without trying them all.

    - An alias with no `*`, `?` or `[` matches only itself: a dict lookup.
    - A glob is indexed by its literal head (what precedes its first `*`, `?`
      or `[`) or, when that is shorter, by its literal tail (what follows its
      last `*`, `?`, `[` or `]`). A name can only match the globs whose head
      it starts with or whose tail it ends with, so a lookup slices the name
      at each indexed length, takes those few globs and tries them in config
      order. Globs with neither (`*`, `*mini*`) are tried for every name.

    The head or tail only narrows the candidates; the glob's own regex
    decides, so the semantics are fnmatch's, case-sensitive, as before.
    """

    __slots__ = ("everywhere", "exact", "head_lengths", "heads", "models", "size", "tail_lengths", "tails")

    def __init__(self, models: dict[str, list[Target]]) -> None:
        self.models = models  # checked on use: another dict (or a resized one) is compiled afresh
        self.size = len(models)
        self.exact: dict[str, int] = {}
        self.heads: dict[str, list[_Candidate]] = {}
        self.tails: dict[str, list[_Candidate]] = {}
        self.everywhere: list[_Candidate] = []
        for index, alias in enumerate(models):
            if not _GLOB_CHARS.intersection(alias):
                self.exact[alias] = index
                continue
            candidate = (index, alias, re.compile(fnmatch.translate(alias)).match)
            head, tail = _literal_head(alias), _literal_tail(alias)
            if head and len(head) >= len(tail):
                self.heads.setdefault(head, []).append(candidate)
            elif tail:
                self.tails.setdefault(tail, []).append(candidate)
            else:
                self.everywhere.append(candidate)
        self.head_lengths = sorted({len(head) for head in self.heads})
        self.tail_lengths = sorted({len(tail) for tail in self.tails})

    def first(self, name: str) -> str | None:
        """The first alias in config order that matches `name`, or None."""
        exact = self.exact.get(name)
        found: list[_Candidate] = list(self.everywhere)
        size = len(name)
        for length in self.head_lengths:
            if length > size:
                break
            bucket = self.heads.get(name[:length])
            if bucket:
                found += bucket
        for length in self.tail_lengths:
            if length > size:
                break
            bucket = self.tails.get(name[size - length :])
            if bucket:
                found += bucket
        found.sort(key=_position)
        for index, alias, match in found:
            if exact is not None and index > exact:
                break  # the exact alias comes first in the config
            if match(name):
                return alias
        return None if exact is None else name


def _position(candidate: _Candidate) -> int:
    return candidate[0]


def _literal_head(glob: str) -> str:
    for position, char in enumerate(glob):
        if char in _GLOB_CHARS:
            return glob[:position]
    return glob


def _literal_tail(glob: str) -> str:
    # Stopping at `]` too keeps a bracket expression's inside out of the tail.
    for position in range(len(glob) - 1, -1, -1):
        if glob[position] in _BOUNDARY_CHARS:
            return glob[position + 1 :]
    return glob


# Compiled matchers per Config object: a config is not changed once loaded
# (a reload or a model_copy makes a new object, compiled on first use).
# Pydantic models are unhashable, so the cache is keyed by id, holding a weak
# reference that tells a reused id from the same object and drops the entry
# when the config goes.
_matchers: dict[int, tuple[weakref.ref, dict[str, _AliasMatcher]]] = {}


def _forget(key: int) -> Callable[[weakref.ref], None]:
    def forget(ref: weakref.ref) -> None:  # the config is gone
        entry = _matchers.get(key)
        if entry is not None and entry[0] is ref:
            del _matchers[key]

    return forget


def _matcher(config: Config, group_name: str, group: Group) -> _AliasMatcher:
    key = id(config)
    entry = _matchers.get(key)
    if entry is None or entry[0]() is not config:
        entry = _matchers[key] = (weakref.ref(config, _forget(key)), {})
    matcher = entry[1].get(group_name)
    if matcher is None or matcher.models is not group.models or matcher.size != len(group.models):
        matcher = entry[1][group_name] = _AliasMatcher(group.models)
    return matcher


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


def resolve(config: Config, group_name: str, model: str, request: Request | None = None) -> Resolution:
    """The targets for `model` in the group: those of the first route rule
    the request meets, else those of the first alias glob that matches.
    Without a request (embeddings), only rules on the model name apply."""
    explicit, alias_name = split_group(model)
    if explicit is not None:
        group_name = explicit
    group = group_named(config, group_name)
    if not alias_name:
        raise ProxyError(400, "the request names no model", kind="invalid_request", param="model")
    if group.route:
        needs = _Needs(alias_name, request)
        for index, rule in enumerate(group.route):
            if needs.met(rule.when):
                name = f"route.{index}"
                shape = rule.shape if rule.shape is not None else group.shape
                return Resolution(
                    group_name, group, name, alias_name, tuple(rule.targets), f"{name}: {rule.when}", shape
                )
    alias = _matcher(config, group_name, group).first(alias_name)
    if alias is not None:
        return Resolution(group_name, group, alias, alias_name, tuple(group.models[alias]), shape=group.shape)
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


class _Needs:
    """What a request shows, each worked out once and only when a rule asks."""

    def __init__(self, model: str, request: Request | None) -> None:
        self.model = model
        self.request = request
        self._tokens: int | None = None

    def met(self, need: Need) -> bool:
        request = self.request
        if need.model is not None and not fnmatch.fnmatchcase(self.model, need.model):
            return False
        if need.thinking is not None and (request is None or thinks(request) != need.thinking):
            return False
        if need.images is not None and (request is None or has_images(request) != need.images):
            return False
        if need.input_tokens_over is not None:
            if request is None:
                return False
            if self._tokens is None:
                self._tokens = estimate_tokens(request_text(request))
            if self._tokens <= need.input_tokens_over:
                return False
        return True


def thinks(request: Request) -> bool:
    """Whether the client asked the model to think (a budget, an effort
    above none, or thinking turned on)."""
    reasoning = request.reasoning
    if reasoning is None or reasoning.enabled is False:
        return False
    if reasoning.budget_tokens is not None:
        return reasoning.budget_tokens > 0
    if reasoning.effort is not None:
        return reasoning.effort != "none"
    return bool(reasoning.enabled)


def has_images(request: Request) -> bool:
    for message in request.messages:
        for part in message.content:
            if isinstance(part, Image):
                return True
            if isinstance(part, ToolResult) and any(isinstance(inner, Image) for inner in part.content):
                return True
    return False
