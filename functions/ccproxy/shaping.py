"""A group's request shaping: what a group changes in a request before it is
encoded for the upstream, so that a small or local model can serve a client
whose prompt and tools were written for a large one.

The steps run in the config's order: literal replacements in the system
prompt, injected prompt text, the tool filter, the temperature ratio,
parameter defaults, overrides and ceilings. `extra_body` is merged into the
encoded upstream body. A step is applied to a copy: the client's request
stays as it came (its answer, and any conversation kept for it, are the
client's).
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Any

from .config import ParameterValues, PromptInjection, Shape, ToolFilter
from .protocols.common import effort_to_budget
from .routing import thinks
from .unified import Part, Reasoning, Request, Text, ToolResult


def shape_request(request: Request, shape: Shape, provider: str, model: str) -> tuple[Request, list[str]]:
    """The request as `shape` makes it for `provider/model`, and the names of
    the steps that changed something (for the exchange record)."""
    shaped = request.model_copy()
    applied: list[str] = []
    if shape.replace and _replace(shaped, shape):
        applied.append("replace")
    for index, injection in enumerate(shape.prompt):
        if _targets(injection.models, provider, model) and _inject(shaped, injection):
            applied.append(f"prompt[{index}]")
    if shape.tools is not None and _filter_tools(shaped, shape.tools):
        applied.append("tools")
    if shape.temperature_ratio is not None and shaped.temperature is not None:
        shaped.temperature = shaped.temperature * shape.temperature_ratio
        applied.append("temperature_ratio")
    if _set_parameters(shaped, shape.defaults, only_unset=True):
        applied.append("defaults")
    if _set_parameters(shaped, shape.overrides, only_unset=False):
        applied.append("overrides")
    if _clamp(shaped, shape):
        applied.append("limits")
    if shape.extra_body:
        applied.append("extra_body")
    return shaped, applied


def merge_body(body: dict[str, Any], extra: dict[str, Any]) -> None:
    """`extra` merged into the encoded body: a mapping into a mapping key by
    key, anything else replacing what was there."""
    for key, value in extra.items():
        current = body.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged = dict(current)
            merge_body(merged, value)
            body[key] = merged
        else:
            body[key] = copy.deepcopy(value)  # the body may be changed later; the config must not be


def _targets(pattern: str | None, provider: str, model: str) -> bool:
    """Whether an injection's `models` glob names this target (by its model,
    or as provider/model)."""
    if pattern is None:
        return True
    return fnmatch.fnmatchcase(model, pattern) or fnmatch.fnmatchcase(f"{provider}/{model}", pattern)


# ---------------------------------------------------------------- prompt text


def _replace(request: Request, shape: Shape) -> bool:
    """The find/replace pairs, on the system prompt and on any system turn
    in the conversation (where some clients put theirs)."""

    def replaced(text: str) -> str:
        for pair in shape.replace:
            text = text.replace(pair.find, pair.with_)
        return text

    changed = False
    if request.system:
        new = replaced(request.system)
        changed, request.system = new != request.system, new
    messages = list(request.messages)
    for position, message in enumerate(messages):
        if message.role != "system":
            continue
        content = [Text(text=replaced(p.text), cache=p.cache) if isinstance(p, Text) else p for p in message.content]
        if content != message.content:
            messages[position] = message.model_copy(update={"content": content})
            changed = True
    request.messages = messages
    return changed


def _inject(request: Request, injection: PromptInjection) -> bool:
    if injection.to == "system":
        request.system = _joined(request.system, injection.text, injection.mode)
        return True
    for position in range(len(request.messages) - 1, -1, -1):
        message = request.messages[position]
        if message.role == "user":
            messages = list(request.messages)
            messages[position] = message.model_copy(update={"content": _injected(message.content, injection)})
            request.messages = messages
            return True
    return False  # no user turn to add to


def _joined(text: str | None, added: str, mode: str) -> str:
    if mode == "replace" or not text:
        return added
    return f"{text}\n\n{added}" if mode == "append" else f"{added}\n\n{text}"


def _injected(content: list[Part], injection: PromptInjection) -> list[Part]:
    """A user turn's parts with the text added. Tool results stay first in
    the turn (upstreams want the answers to the calls before anything
    else), so prepended text goes after them; `replace` replaces the turn's
    text and keeps its other parts."""
    text = Text(text=injection.text)
    results = 0
    while results < len(content) and isinstance(content[results], ToolResult):
        results += 1
    if injection.mode == "append":
        return [*content, text]
    if injection.mode == "prepend":
        return [*content[:results], text, *content[results:]]
    others = [part for part in content if not isinstance(part, (Text, ToolResult))]
    return [*(part for part in content if isinstance(part, ToolResult)), text, *others]


# ---------------------------------------------------------------- tools


def _filter_tools(request: Request, tool_filter: ToolFilter) -> bool:
    """The tools the filter lets through; a forced choice of a tool that is
    gone falls back to the model's own choice."""

    def kept(name: str) -> bool:
        if tool_filter.keep is not None and not any(fnmatch.fnmatchcase(name, g) for g in tool_filter.keep):
            return False
        return not any(fnmatch.fnmatchcase(name, glob) for glob in tool_filter.drop)

    tools = [tool for tool in request.tools if kept(tool.name)]
    server_tools = [tool for tool in request.server_tools if kept(tool.name)]
    if len(tools) == len(request.tools) and len(server_tools) == len(request.server_tools):
        return False
    request.tools, request.server_tools = tools, server_tools
    choice = request.tool_choice
    if choice is not None:
        if not tools and not server_tools:
            request.tool_choice = None
        elif choice.mode == "tool" and choice.name is not None and not kept(choice.name):
            request.tool_choice = None
    return True


# ---------------------------------------------------------------- parameters


def _set_parameters(request: Request, values: ParameterValues, *, only_unset: bool) -> bool:
    changed = False
    for name in ("temperature", "top_p", "top_k", "max_tokens"):
        value = getattr(values, name)
        if value is not None and (getattr(request, name) is None or not only_unset):
            setattr(request, name, value)
            changed = True
    if values.reasoning_effort is not None or values.thinking_budget is not None:
        asked = request.reasoning
        said = asked is not None and (asked.enabled is not None or asked.effort or asked.budget_tokens is not None)
        if not (only_unset and said):
            reasoning = asked.model_copy() if asked is not None else Reasoning()
            if values.reasoning_effort is not None:
                reasoning.effort = values.reasoning_effort
                reasoning.enabled = values.reasoning_effort != "none"
                reasoning.budget_tokens = None
            if values.thinking_budget is not None:
                reasoning.budget_tokens = values.thinking_budget
                reasoning.enabled = values.thinking_budget > 0
                reasoning.effort = None
            request.reasoning = reasoning
            changed = True
    return changed


def _clamp(request: Request, shape: Shape) -> bool:
    """Ceilings on what the client asked for; a client that asked nothing
    gets the ceiling (an upstream's own default may be above it)."""
    limits, changed = shape.limits, False
    if limits.max_tokens is not None and (request.max_tokens is None or request.max_tokens > limits.max_tokens):
        request.max_tokens, changed = limits.max_tokens, True
    if limits.temperature is not None and request.temperature is not None and request.temperature > limits.temperature:
        request.temperature, changed = limits.temperature, True
    budget = limits.thinking_budget
    reasoning = request.reasoning
    if budget is not None and reasoning is not None and thinks(request):
        # An effort is a budget on the upstreams that take one: the ceiling holds for it too.
        asked = reasoning.budget_tokens if reasoning.budget_tokens is not None else effort_to_budget(reasoning.effort)
        if asked > budget:
            request.reasoning, changed = reasoning.model_copy(update={"budget_tokens": budget, "effort": None}), True
    return changed
