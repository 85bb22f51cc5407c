"""Fake OpenAI Responses API upstream (`POST {base}/responses`).

Validation follows the openai SDK's request types (response_create_params
and the input item and tool params) and the errors the real API is known to
give: unknown parameters are refused, tools are flat, every function call in
`input` needs its output and every output its call, reasoning items come back
only as this API made them. Answers are whole `response` objects or the full
event sequence (response.created ... response.completed) with
`sequence_number`s, the way the SDK's `client.responses.stream()` checks them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .base import Context, Dialect, Endpoint, ErrorKind, Recorded, Rejection, StreamPlan, dumps
from .checks import Problems, join, kind
from .openai import ERROR_TYPES, TOOL_NAME
from .scenarios import CACHED_TOKENS, CALL_IDS, COUNT_TOKENS, OUTPUT_TOKENS, PROMPT_TOKENS, Call, Turn, pieces

CREATED = 1700000000
RESPONSE_ID = "resp_fake0123456789abcdef"
MESSAGE_ID = "msg_fake0123456789abcdef"
REASONING_ID = "rs_fake0123456789abcdef"
SEARCH_ID = "ws_fake0123456789abcdef"
ITEM_IDS = ("fc_fake0123456789abcdef0", "fc_fake0123456789abcdef1")
CUSTOM_ITEM_IDS = ("ctc_fake0123456789abcdef0", "ctc_fake0123456789abcdef1")
# What this API hands out as a reasoning item's encrypted_content; anything
# else sent back is another vendor's (or made up) and cannot be decrypted.
ENCRYPTED = "gAAAAABfakeEncryptedReasoning0123456789-_fakeFernetToken=="

# response_create_params.ResponseCreateParamsBase, plus `stream`, plus
# `client_metadata` (string to string), which the SDK's types lack but Codex
# sends the API with every request, over HTTP and websocket alike.
TOP_LEVEL = {
    "access_programs", "background", "background_options", "client_metadata", "context_management", "conversation",
    "image", "include",
    "input", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream", "stream_options",
    "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
}  # fmt: skip
# input_token_count_params (POST /responses/input_tokens).
COUNT_TOP_LEVEL = {
    "conversation", "input", "instructions", "model", "parallel_tool_calls", "personality", "previous_response_id",
    "reasoning", "text", "tool_choice", "tools", "truncation",
}  # fmt: skip
# ResponseCompactParams (POST /responses/compact).
COMPACT_TOP_LEVEL = {
    "image", "input", "instructions", "model", "previous_response_id", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "service_tier",
}  # fmt: skip
# What the fake's compaction item carries (the API's is opaque, encrypted).
COMPACTED = "gAAAA-fake-compaction"
INCLUDABLE = (
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url", "code_interpreter_call.outputs",
    "reasoning.encrypted_content", "message.output_text.logprobs",
)  # fmt: skip
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
SUMMARIES = ("auto", "concise", "detailed")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")
ROLES = ("user", "assistant", "system", "developer")
ITEM_STATUSES = ("in_progress", "completed", "incomplete")
MIN_OUTPUT_TOKENS = 16  # "integer below minimum value. Expected a value >= 16"

# The keys each input item type may carry (response_input_item_param).
ITEM_KEYS: dict[str, set[str]] = {
    "message": {"type", "role", "content", "id", "status", "phase"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status", "namespace", "caller", "async"},
    "function_call_output": {"type", "call_id", "output", "id", "status", "caller", "name", "namespace"},
    "custom_tool_call": {"type", "call_id", "name", "input", "id", "namespace", "caller", "async"},
    "custom_tool_call_output": {"type", "call_id", "output", "id", "caller"},
    "reasoning": {"type", "id", "summary", "content", "encrypted_content", "status"},
    "item_reference": {"type", "id"},
    "web_search_call": {"type", "id", "status", "action"},
}
# Item types the API knows that no conversion produces; accepted unchecked.
OTHER_ITEM_TYPES = (
    "computer_call", "computer_call_output", "file_search_call", "image_generation_call", "code_interpreter_call",
    "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call",
    "compaction", "compaction_trigger", "tool_search_call", "tool_search_output", "additional_tools", "program",
    "program_output", "exec",
)  # fmt: skip
# Each item type's id prefix ("Expected an ID that begins with 'fc'").
ID_PREFIXES = {"message": "msg", "function_call": "fc", "reasoning": "rs", "web_search_call": "ws", "custom_tool_call": "ctc"}
PART_KEYS: dict[str, set[str]] = {
    "input_text": {"type", "text", "prompt_cache_breakpoint"},
    "input_image": {"type", "image_url", "file_id", "detail", "prompt_cache_breakpoint"},
    "input_file": {"type", "file_data", "file_id", "file_url", "filename", "detail", "prompt_cache_breakpoint"},
    "output_text": {"type", "text", "annotations", "logprobs"},
    "refusal": {"type", "refusal"},
}
INPUT_PARTS = ("input_text", "input_image", "input_file")
OUTPUT_PARTS = ("output_text", "refusal")
FUNCTION_TOOL_KEYS = {"type", "name", "description", "parameters", "strict", "defer_loading", "allowed_callers", "output_schema"}
CUSTOM_TOOL_KEYS = {"type", "name", "description", "format", "defer_loading", "allowed_callers"}
WEB_SEARCH_KEYS = {"type", "filters", "search_context_size", "user_location", "external_web_access", "search_content_types"}
WEB_SEARCH_TYPES = ("web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11")
# Hosted tools of the ToolParam union no conversion produces; accepted unchecked.
OTHER_TOOL_TYPES = (
    "file_search", "computer", "computer_use_preview", "mcp", "code_interpreter", "programmatic_tool_calling",
    "image_generation", "local_shell", "shell", "namespace", "tool_search", "apply_patch",
)  # fmt: skip
FORMAT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# tool_choice objects that name a hosted tool by its type (ToolChoiceTypesParam
# and its siblings): "web_search" is not one of them, only the preview.
HOSTED_CHOICES = (
    "file_search", "web_search_preview", "web_search_preview_2025_03_11", "computer", "computer_use_preview",
    "computer_use", "image_generation", "code_interpreter", "mcp", "shell", "apply_patch", "programmatic_tool_calling",
)  # fmt: skip


# -- validation ---------------------------------------------------------------


@dataclass
class Calls:
    """The tool calls `input` makes and answers, to pair them up: each output
    answers a call made earlier, each call is answered."""

    made: dict[str, str] = field(default_factory=dict)  # call_id -> "function" | "custom"
    answered: set[str] = field(default_factory=set)


def validate(body: dict[str, Any], *, count: bool = False) -> list[str]:
    """Every reason the Responses API would refuse this request (or this
    input_tokens count request)."""
    p = Problems()
    p.unknown_keys(body, COUNT_TOP_LEVEL if count else TOP_LEVEL, "", "Unknown parameter")
    continued = body.get("previous_response_id") is not None or body.get("conversation") is not None
    if not count or body.get("model") is not None:
        p.string(body, "model", "", required=body.get("prompt") is None and not count, nonempty=True)
    p.string(body, "instructions", "")
    _input(p, body, continued)
    tools = _tools(p, body)
    _tool_choice(p, body, tools)
    _text(p, body)
    _reasoning(p, body)
    _previous(p, body)
    if not count:
        _generation(p, body)
    return p.items


def validate_compact(body: dict[str, Any]) -> list[str]:
    """Every reason the API would refuse this compaction request."""
    p = Problems()
    p.unknown_keys(body, COMPACT_TOP_LEVEL, "", "Unknown parameter")
    p.string(body, "model", "", required=True, nonempty=True)
    p.string(body, "instructions", "")
    p.string(body, "prompt_cache_key", "")
    p.one_of(body, "service_tier", "", SERVICE_TIERS)
    p.one_of(body, "prompt_cache_retention", "", ("in_memory", "24h"))
    _input(p, body, body.get("previous_response_id") is not None)
    _previous(p, body)
    return p.items


def _input(p: Problems, body: dict[str, Any], continued: bool) -> None:
    value = body.get("input")
    if value is None:
        if not continued and body.get("prompt") is None:
            p.add("input", "field required")
        return
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        p.add("input", f"must be a string or an array of input items, got {kind(value)}")
        return
    if not value and not continued:
        p.add("input", "an array of input items must not be empty")
    calls = Calls()
    for i, item in enumerate(value):
        _item(p, item, join("input", i), body, calls, continued)
    _reasoning_followers(p, value)
    for call_id, how in calls.made.items():
        if call_id not in calls.answered:
            what = "function call" if how == "function" else "custom tool call"
            p.add("input", f"No tool output found for {what} {call_id}.")


def _item(p: Problems, item: Any, path: str, body: dict[str, Any], calls: Calls, continued: bool) -> None:
    if not isinstance(item, dict):
        p.add(path, f"must be an object, got {kind(item)}")
        return
    itype = item.get("type", "message" if "role" in item else None)
    if itype in OTHER_ITEM_TYPES:
        return
    if itype not in ITEM_KEYS:
        p.add(join(path, "type"), f"Invalid value: {itype!r}. Supported values are: {sorted(ITEM_KEYS)} (and hosted tool items)")
        return
    p.unknown_keys(item, ITEM_KEYS[itype], path, "Unknown parameter")
    _item_id(p, item, path, itype)
    p.one_of(item, "status", path, ITEM_STATUSES)
    if itype == "message":
        _message(p, item, path)
    elif itype in ("function_call", "custom_tool_call"):
        _call(p, item, path, calls, "function" if itype == "function_call" else "custom")
    elif itype in ("function_call_output", "custom_tool_call_output"):
        _output(p, item, path, calls, "function" if itype == "function_call_output" else "custom", continued)
    elif itype == "reasoning":
        _reasoning_item(p, item, path, body)
    elif itype == "item_reference":
        _reference(p, item, path)
    else:
        _search_call(p, item, path)


def _item_id(p: Problems, item: dict[str, Any], path: str, itype: str) -> None:
    """An item's own id (not its call_id) must be one of this API's, by its
    prefix: a chat-completions call id there is the classic mix-up."""
    item_id = p.string(item, "id", path, required=itype == "item_reference", nonempty=True)
    prefix = ID_PREFIXES.get(itype)
    if item_id and prefix and not item_id.startswith(prefix):
        p.add(join(path, "id"), f"Invalid {item_id!r}. Expected an ID that begins with {prefix!r}.")


def _message(p: Problems, item: dict[str, Any], path: str) -> None:
    role = p.one_of(item, "role", path, ROLES, required=True)
    allowed = OUTPUT_PARTS if role == "assistant" else INPUT_PARTS
    content = item.get("content")
    cpath = join(path, "content")
    if content is None:
        p.add(cpath, "field required")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        p.add(cpath, f"must be a string or an array of content parts, got {kind(content)}")
        return
    for j, part in enumerate(content):
        _part(p, part, join(cpath, j), allowed)


def _part(p: Problems, part: Any, path: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(part, dict):
        p.add(path, f"must be an object, got {kind(part)}")
        return
    ptype = part.get("type")
    if ptype not in allowed:
        p.add(join(path, "type"), f"Invalid value: {ptype!r}. Supported values are: {list(allowed)}")
        return
    p.unknown_keys(part, PART_KEYS[ptype], path, "Unknown parameter")
    if ptype in ("input_text", "output_text"):
        p.string(part, "text", path, required=True)
        p.array(part, "annotations", path)
    elif ptype == "refusal":
        p.string(part, "refusal", path, required=True)
    elif ptype == "input_image":
        _image(p, part, path)
    else:
        if not any(part.get(k) for k in ("file_data", "file_id", "file_url")):
            p.add(path, "one of file_data, file_id or file_url is required")
        p.string(part, "filename", path)


def _image(p: Problems, part: dict[str, Any], path: str) -> None:
    # `detail` is Required in the SDK's type, but the API defaults it to
    # "auto" and real clients (Codex) leave it out.
    url = p.string(part, "image_url", path)
    if url is None and not part.get("file_id"):
        p.add(path, "one of image_url or file_id is required")
    if url is not None and not url.startswith(("http://", "https://", "data:image/")):
        p.add(join(path, "image_url"), "must be an http(s) URL or a data:image/...;base64 URL")
    p.one_of(part, "detail", path, ("low", "high", "auto", "original"))


def _call(p: Problems, item: dict[str, Any], path: str, calls: Calls, how: str) -> None:
    call_id = p.string(item, "call_id", path, required=True, nonempty=True)
    p.string(item, "name", path, required=True, nonempty=True)
    if how == "function":
        arguments = p.string(item, "arguments", path, required=True)
        if arguments is not None:
            try:
                json.loads(arguments)
            except ValueError:
                p.add(join(path, "arguments"), f"is not valid JSON: {arguments!r}")
    else:
        p.string(item, "input", path, required=True)
    if call_id:
        if call_id in calls.made:
            p.add(join(path, "call_id"), f"Duplicate call_id {call_id!r}")
        calls.made[call_id] = how


def _output(p: Problems, item: dict[str, Any], path: str, calls: Calls, how: str, continued: bool) -> None:
    # call_id is Optional in the SDK's type (programmatic callers); a plain
    # function call output without one answers nothing.
    call_id = p.string(item, "call_id", path, required=True, nonempty=True)
    output = item.get("output")
    if output is None:
        p.add(join(path, "output"), "field required")
    elif isinstance(output, list):
        for j, part in enumerate(output):
            _part(p, part, join(join(path, "output"), j), INPUT_PARTS)
    elif not isinstance(output, str):
        p.add(join(path, "output"), f"must be a string or an array of content parts, got {kind(output)}")
    if not call_id:
        return
    made = calls.made.get(call_id)
    what = "function call output" if how == "function" else "custom tool call output"
    if made is None and not continued:
        p.add(path, f"No tool call found for {what} with call_id {call_id}.")
    elif made is not None and made != how:
        p.add(path, f"the {what} with call_id {call_id} answers a {made} call")
    calls.answered.add(call_id)


def _reasoning_item(p: Problems, item: dict[str, Any], path: str, body: dict[str, Any]) -> None:
    summary = p.array(item, "summary", path, required=True)
    for j, part in enumerate(summary or []):
        spath = join(join(path, "summary"), j)
        if not isinstance(part, dict) or part.get("type") != "summary_text" or not isinstance(part.get("text"), str):
            p.add(spath, 'must be {"type": "summary_text", "text": string}')
    for j, part in enumerate(p.array(item, "content", path) or []):
        if not isinstance(part, dict) or part.get("type") != "reasoning_text" or not isinstance(part.get("text"), str):
            p.add(join(join(path, "content"), j), 'must be {"type": "reasoning_text", "text": string}')
    encrypted = p.string(item, "encrypted_content", path)
    if encrypted is not None:
        if encrypted != ENCRYPTED:
            p.add(join(path, "encrypted_content"), "could not be verified: this API did not make it")
        return
    item_id = item.get("id")
    if not item_id:
        p.add(path, "a reasoning item needs its encrypted_content or the id of a stored one")
    elif item_id != REASONING_ID:
        p.add(path, f"Item with id {item_id!r} not found.")
    elif body.get("store") is False:
        p.add(path, f"Item with id {item_id!r} not found. Items are not persisted when `store` is set to false.")


def _reasoning_followers(p: Problems, items: list[Any]) -> None:
    """A reasoning item comes back only with the output it led to."""
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") != "reasoning":
            continue
        following = items[i + 1] if i + 1 < len(items) else None
        if not isinstance(following, dict):
            p.add(join("input", i), "Item of type 'reasoning' was provided without its required following item.")
            continue
        ftype = following.get("type", "message")
        if ftype in ("function_call_output", "custom_tool_call_output") or (
            ftype == "message" and following.get("role") != "assistant"
        ):
            p.add(join("input", i), "Item of type 'reasoning' was provided without its required following item.")


def _reference(p: Problems, item: dict[str, Any], path: str) -> None:
    item_id = item.get("id")
    known = {MESSAGE_ID, REASONING_ID, SEARCH_ID, *ITEM_IDS, *CUSTOM_ITEM_IDS}
    if isinstance(item_id, str) and item_id not in known:
        p.add(path, f"Item with id {item_id!r} not found.")


def _search_call(p: Problems, item: dict[str, Any], path: str) -> None:
    p.string(item, "id", path, required=True)
    p.one_of(item, "status", path, ("in_progress", "searching", "completed", "failed"), required=True)
    action = p.obj(item, "action", path, required=True)
    if action is not None:
        p.one_of(action, "type", join(path, "action"), ("search", "open_page", "find_in_page"), required=True)


def _tools(p: Problems, body: dict[str, Any]) -> dict[str, str]:
    """Check the tools; return each named tool's type."""
    names: dict[str, str] = {}
    for i, tool in enumerate(p.array(body, "tools", "") or []):
        path = join("tools", i)
        if not isinstance(tool, dict):
            p.add(path, f"must be an object, got {kind(tool)}")
            continue
        ttype = tool.get("type")
        if ttype == "function":
            name = _function_tool(p, tool, path)
        elif ttype == "custom":
            name = _custom_tool(p, tool, path)
        elif ttype in WEB_SEARCH_TYPES:
            p.unknown_keys(tool, WEB_SEARCH_KEYS, path, "Unknown parameter")
            continue
        elif ttype in OTHER_TOOL_TYPES:
            continue
        else:
            p.add(join(path, "type"), f"Invalid value: {ttype!r}. Supported values are: function, custom, web_search, ...")
            continue
        if name is not None:
            if name in names:
                p.add(join(path, "name"), f"duplicate tool name {name!r}")
            names[name] = ttype
    return names


def _tool_name(p: Problems, tool: dict[str, Any], path: str) -> str | None:
    name = p.string(tool, "name", path, required=True)
    if name is not None and not TOOL_NAME.match(name):
        p.add(join(path, "name"), f"{name!r} does not match '^[a-zA-Z0-9_-]{{1,64}}$'")
    return name


def _function_tool(p: Problems, tool: dict[str, Any], path: str) -> str | None:
    if "function" in tool:
        p.add(join(path, "function"), "Unknown parameter: Responses tools are flat, not nested under 'function' as in Chat Completions")
    p.unknown_keys({k: v for k, v in tool.items() if k != "function"}, FUNCTION_TOOL_KEYS, path, "Unknown parameter")
    name = _tool_name(p, tool, path)
    p.string(tool, "description", path)
    # Both are Required (nullable) in the SDK's FunctionToolParam. Without
    # `strict` the API makes the schema strict itself: every property becomes
    # required, so a tool with optional parameters changes meaning unasked.
    for key in ("parameters", "strict"):
        if key not in tool:
            p.add(join(path, key), "field required (may be null); without strict the API makes the schema strict")
    parameters = p.obj(tool, "parameters", path)
    if parameters is not None and parameters.get("type", "object") != "object":
        p.add(join(path, "parameters"), "must be a JSON Schema of type 'object'")
    p.boolean(tool, "strict", path)
    if tool.get("strict") is True and parameters is not None:
        for problem in strict_schema_problems(parameters, ()):
            p.add(join(path, "parameters"), f"Invalid schema for function {name!r}: {problem}")
    return name


def strict_schema_problems(schema: Any, context: tuple[str, ...]) -> list[str]:
    """What strict mode refuses in a schema: every object must close its
    properties (additionalProperties false) and require them all."""
    if not isinstance(schema, dict):
        return []
    found = []
    where = f"In context={context}"
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            found.append(f"{where}, 'additionalProperties' is required to be supplied and to be false.")
        properties = schema.get("properties") or {}
        missing = [k for k in properties if k not in (schema.get("required") or [])]
        if missing:
            found.append(f"{where}, 'required' is required to be supplied and to be an array including every key "
                         f"in properties. Missing {missing[0]!r}.")  # fmt: skip
        for key, sub in properties.items():
            found += strict_schema_problems(sub, (*context, "properties", key))
    for key in ("items", "anyOf", "$defs", "definitions"):
        sub = schema.get(key)
        subs = sub if isinstance(sub, list) else list(sub.values()) if key in ("$defs", "definitions") and isinstance(sub, dict) else [sub]
        for inner in subs:
            found += strict_schema_problems(inner, (*context, key))
    return found


def _custom_tool(p: Problems, tool: dict[str, Any], path: str) -> str | None:
    p.unknown_keys(tool, CUSTOM_TOOL_KEYS, path, "Unknown parameter")
    name = _tool_name(p, tool, path)
    p.string(tool, "description", path)
    fmt = p.obj(tool, "format", path)
    if fmt is not None:
        fpath = join(path, "format")
        ftype = p.one_of(fmt, "type", fpath, ("text", "grammar"), required=True)
        if ftype == "grammar":
            p.unknown_keys(fmt, ("type", "syntax", "definition"), fpath, "Unknown parameter")
            p.one_of(fmt, "syntax", fpath, ("lark", "regex"), required=True)
            p.string(fmt, "definition", fpath, required=True)
        elif ftype == "text":
            p.unknown_keys(fmt, ("type",), fpath, "Unknown parameter")
    return name


def _tool_choice(p: Problems, body: dict[str, Any], tools: dict[str, str]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            p.add("tool_choice", f"{choice!r} is not one of ['none', 'auto', 'required']")
        elif choice == "required" and not body.get("tools"):
            p.add("tool_choice", "Tool choice 'required' must be specified with 'tools' parameter.")
        return
    if not isinstance(choice, dict):
        p.add("tool_choice", f"must be a string or an object, got {kind(choice)}")
        return
    ctype = choice.get("type")
    if ctype in ("function", "custom"):
        p.unknown_keys(choice, ("type", "name"), "tool_choice", "Unknown parameter")
        name = p.string(choice, "name", "tool_choice", required=True)
        if name is not None and tools.get(name) != ctype:
            p.add("tool_choice", f"Tool choice '{ctype}' {name!r} not found in 'tools' parameter.")
    elif ctype == "allowed_tools":
        p.one_of(choice, "mode", "tool_choice", ("auto", "required"), required=True)
        p.array(choice, "tools", "tool_choice", required=True)
    elif ctype is None:
        p.add("tool_choice.type", "field required")
    elif ctype not in HOSTED_CHOICES:
        p.add("tool_choice.type", f"Invalid value: {ctype!r}. Supported values are: function, custom, allowed_tools, "
                                  f"{', '.join(HOSTED_CHOICES)}")  # fmt: skip


def _text(p: Problems, body: dict[str, Any]) -> None:
    text = p.obj(body, "text", "")
    if text is None:
        return
    p.unknown_keys(text, ("format", "verbosity"), "text", "Unknown parameter")
    p.one_of(text, "verbosity", "text", ("low", "medium", "high"))
    fmt = p.obj(text, "format", "text")
    if fmt is None:
        return
    ftype = p.one_of(fmt, "type", "text.format", ("text", "json_object", "json_schema"), required=True)
    if ftype != "json_schema":
        p.unknown_keys(fmt, ("type",), "text.format", "Unknown parameter")
        return
    # Flat, unlike chat completions' response_format.json_schema.{name, schema}.
    p.unknown_keys(fmt, ("type", "name", "schema", "description", "strict"), "text.format", "Unknown parameter")
    name = p.string(fmt, "name", "text.format", required=True)
    if name is not None and not FORMAT_NAME.match(name):
        p.add("text.format.name", f"{name!r} does not match '^[a-zA-Z0-9_-]{{1,64}}$'")
    schema = p.obj(fmt, "schema", "text.format", required=True)
    p.boolean(fmt, "strict", "text.format")
    if fmt.get("strict") is True and schema is not None:
        for problem in strict_schema_problems(schema, ()):
            p.add("text.format.schema", f"Invalid schema for response_format {name!r}: {problem}")


def _reasoning(p: Problems, body: dict[str, Any]) -> None:
    reasoning = p.obj(body, "reasoning", "")
    if reasoning is None:
        return
    p.unknown_keys(reasoning, ("effort", "summary", "generate_summary", "context", "mode"), "reasoning", "Unknown parameter")
    p.one_of(reasoning, "effort", "reasoning", REASONING_EFFORTS)
    p.one_of(reasoning, "summary", "reasoning", SUMMARIES)
    p.one_of(reasoning, "generate_summary", "reasoning", SUMMARIES)


def _previous(p: Problems, body: dict[str, Any]) -> None:
    previous = p.string(body, "previous_response_id", "")
    if previous is None:
        return
    if body.get("conversation") is not None:
        p.add("previous_response_id", "cannot be used in conjunction with 'conversation'")
    if previous != RESPONSE_ID:
        p.add("previous_response_id", f"Previous response with id {previous!r} not found.")


def _generation(p: Problems, body: dict[str, Any]) -> None:
    p.number(body, "temperature", "", 0, 2)
    p.number(body, "top_p", "", 0, 1)
    p.integer(body, "max_output_tokens", "", low=MIN_OUTPUT_TOKENS)
    p.integer(body, "max_tool_calls", "", low=1)
    p.number(body, "top_logprobs", "", 0, 20)
    for key in ("stream", "store", "parallel_tool_calls", "background"):
        p.boolean(body, key, "")
    options = p.obj(body, "stream_options", "")
    if options is not None:
        if body.get("stream") is not True:
            p.add("stream_options", "is only allowed when 'stream' is true")
        p.unknown_keys(options, ("include_obfuscation",), "stream_options", "Unknown parameter")
    p.one_of(body, "truncation", "", ("auto", "disabled"))
    p.one_of(body, "service_tier", "", SERVICE_TIERS)
    for i, value in enumerate(p.array(body, "include", "") or []):
        if value not in INCLUDABLE:
            p.add(join("include", i), f"Invalid value: {value!r}. Supported values are: {list(INCLUDABLE)}")
    for key, value in (p.obj(body, "client_metadata", "") or {}).items():
        if not isinstance(value, str):
            p.add(join("client_metadata", key), f"must be a string, got {kind(value)}")
    metadata = p.obj(body, "metadata", "")
    if metadata is not None:
        if len(metadata) > 16:
            p.add("metadata", "at most 16 keys")
        for key, value in metadata.items():
            if not isinstance(value, str) or len(key) > 64 or len(value) > 512:
                p.add(join("metadata", key), "keys are strings of at most 64 characters, values of at most 512")


# -- rendering ------------------------------------------------------------------


def usage(turn: Turn) -> dict[str, Any]:
    """input_tokens includes the cached ones (unlike Anthropic's)."""
    return {
        "input_tokens": PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": turn.thinking_tokens},
        "total_tokens": PROMPT_TOKENS + OUTPUT_TOKENS,
    }


def summaries_asked(body: dict[str, Any]) -> bool:
    """The API shows reasoning summaries only when asked for them."""
    reasoning = body.get("reasoning") or {}
    return bool(reasoning.get("summary") or reasoning.get("generate_summary"))


def encryption_asked(body: dict[str, Any]) -> bool:
    return "reasoning.encrypted_content" in (body.get("include") or [])


def offered_tools(body: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """Every tool the request offers, with its namespace: in `tools`, inside
    namespaces, and in `additional_tools` input items (Codex's code mode)."""
    found: list[tuple[dict[str, Any], str | None]] = []

    def read(tools: Any, namespace: str | None) -> None:
        for tool in tools if isinstance(tools, list) else []:
            if not isinstance(tool, dict):
                continue
            if tool.get("type") == "namespace":
                read(tool.get("tools"), str(tool.get("name")))
            else:
                found.append((tool, namespace))

    read(body.get("tools"), None)
    for item in body.get("input") if isinstance(body.get("input"), list) else []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            read(item.get("tools"), None)
    return found


def custom_tool_names(body: dict[str, Any]) -> dict[str, str | None]:
    """The custom tools' names, each with its namespace (None: none)."""
    return {str(t.get("name")): ns for t, ns in offered_tools(body) if t.get("type") == "custom"}


def call_input(call: Call) -> str:
    """A custom tool's raw string: the call's `input` argument, else its JSON."""
    value = call.args.get("input")
    return value if isinstance(value, str) and len(call.args) == 1 else dumps(call.args)


def annotations(turn: Turn) -> list[dict[str, Any]]:
    if turn.search is None:
        return []
    return [
        {"type": "url_citation", "start_index": 0, "end_index": len(turn.text), "url": url, "title": title}
        for url, title in turn.search[1]
    ]


def search_item(turn: Turn, status: str = "completed") -> dict[str, Any]:
    assert turn.search is not None
    query, sources = turn.search
    action = {"type": "search", "query": query, "sources": [{"type": "url", "url": url} for url, _ in sources]}
    return {"type": "web_search_call", "id": SEARCH_ID, "status": status, "action": action}


def reasoning_item(ctx: Context, turn: Turn) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": turn.thinking}] if summaries_asked(ctx.body) else []
    item: dict[str, Any] = {"type": "reasoning", "id": REASONING_ID, "summary": summary}
    if encryption_asked(ctx.body):
        item["encrypted_content"] = ENCRYPTED
    return item


def message_item(turn: Turn, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": turn.text, "annotations": annotations(turn), "logprobs": []}
    return {"type": "message", "id": MESSAGE_ID, "status": status, "role": "assistant", "content": [part]}


def call_item(ctx: Context, k: int, call: Call) -> dict[str, Any]:
    call_id = CALL_IDS["responses"][k]
    custom = custom_tool_names(ctx.body)
    if call.name in custom:
        # The API's custom tool call has no status; a namespaced tool's call names its namespace.
        item = {"type": "custom_tool_call", "id": CUSTOM_ITEM_IDS[k], "call_id": call_id, "name": call.name,
                "input": call_input(call)}  # fmt: skip
        if custom[call.name]:
            item["namespace"] = custom[call.name]
        return item
    return {"type": "function_call", "id": ITEM_IDS[k], "status": "completed", "call_id": call_id, "name": call.name,
            "arguments": dumps(call.args)}  # fmt: skip


def output_items(ctx: Context, turn: Turn) -> list[dict[str, Any]]:
    """The finished output: search, reasoning, message, calls, in that order."""
    items: list[dict[str, Any]] = []
    if turn.search is not None:
        items.append(search_item(turn))
    if turn.thinking:
        items.append(reasoning_item(ctx, turn))
    if turn.text:
        items.append(message_item(turn))
    items.extend(call_item(ctx, k, call) for k, call in enumerate(turn.calls))
    return items


def response_object(ctx: Context, status: str, output: list[dict[str, Any]], turn: Turn | None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The `response` object, whole or as a stream's lifecycle events carry it
    (turn None: no usage yet)."""
    body = ctx.body
    reasoning = body.get("reasoning") or {}
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "completed_at": CREATED + 1 if status == "completed" else None,
        "error": error,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": ctx.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": None,
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage(turn) if turn is not None else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def record(data: dict[str, Any]) -> bytes:
    """One SSE record: the event name repeats data.type. A lone surrogate the
    response echoes from the request goes back as its JSON escape."""
    return f"event: {data['type']}\ndata: {dumps(data)}\n\n".encode("utf-8", "backslashreplace")


class EventLog:
    """A stream's events in order, numbered as they are added. `mark()` notes
    the last content event, so the closing events after it can go to the
    plan's tail (a broken stream then stops inside an item)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.last_content = -1

    def add(self, etype: str, **data: Any) -> None:
        self.events.append({"type": etype, "sequence_number": len(self.events), **data})

    def mark(self) -> None:
        self.last_content = len(self.events) - 1


def stream_items(log: EventLog, ctx: Context, turn: Turn) -> None:
    """Each output item: added, its parts and deltas, done."""
    for index, item in enumerate(output_items(ctx, turn)):
        itype = item["type"]
        if itype == "message":
            stream_message(log, index, item)
        elif itype == "reasoning":
            stream_reasoning(log, index, item)
        elif itype == "function_call":
            stream_arguments(log, index, item, "arguments", "response.function_call_arguments")
        elif itype == "custom_tool_call":
            stream_arguments(log, index, item, "input", "response.custom_tool_call_input")
        else:
            stream_search(log, index, item)
        log.add("response.output_item.done", output_index=index, item=item)


def stream_message(log: EventLog, index: int, item: dict[str, Any]) -> None:
    part = item["content"][0]
    opened = {**item, "status": "in_progress", "content": []}
    log.add("response.output_item.added", output_index=index, item=opened)
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    log.add("response.content_part.added", **where, part={**part, "text": "", "annotations": []})
    for piece in pieces(part["text"]):
        log.add("response.output_text.delta", **where, delta=piece, logprobs=[])
    log.mark()
    for n, annotation in enumerate(part["annotations"]):
        log.add("response.output_text.annotation.added", **where, annotation_index=n, annotation=annotation)
    log.add("response.output_text.done", **where, text=part["text"], logprobs=[])
    log.add("response.content_part.done", **where, part=part)


def stream_reasoning(log: EventLog, index: int, item: dict[str, Any]) -> None:
    log.add("response.output_item.added", output_index=index, item={"type": "reasoning", "id": item["id"], "summary": []})
    where = {"item_id": item["id"], "output_index": index}
    for n, summary in enumerate(item["summary"]):
        log.add("response.reasoning_summary_part.added", **where, summary_index=n, part={"type": "summary_text", "text": ""})
        for piece in pieces(summary["text"]):
            log.add("response.reasoning_summary_text.delta", **where, summary_index=n, delta=piece)
        log.add("response.reasoning_summary_text.done", **where, summary_index=n, text=summary["text"])
        log.add("response.reasoning_summary_part.done", **where, summary_index=n, part=summary)
    log.mark()


def stream_arguments(log: EventLog, index: int, item: dict[str, Any], key: str, event: str) -> None:
    # A function call is in progress until done; a custom tool call has no status.
    progress = {"status": "in_progress"} if "status" in item else {}
    log.add("response.output_item.added", output_index=index, item={**item, **progress, key: ""})
    where = {"item_id": item["id"], "output_index": index}
    for fragment in pieces(item[key], 3):
        log.add(f"{event}.delta", **where, delta=fragment)
    log.mark()
    # The API names the function again in its arguments' done event.
    named = {"name": item["name"]} if key == "arguments" else {}
    log.add(f"{event}.done", **where, **{key: item[key]}, **named)


def stream_search(log: EventLog, index: int, item: dict[str, Any]) -> None:
    log.add("response.output_item.added", output_index=index, item={**item, "status": "in_progress"})
    where = {"item_id": item["id"], "output_index": index}
    for stage in ("in_progress", "searching", "completed"):
        log.add(f"response.web_search_call.{stage}", **where)
    log.mark()


class ResponsesDialect(Dialect):
    name = "responses"

    def __init__(self) -> None:
        # The sequence number the next event after a plan's head and body
        # takes, and the model: an in-stream error continues the stream.
        self._next_sequence = 0
        self._model = ""

    def match(self, method: str, path: str, query: dict[str, str]) -> Endpoint | None:
        if method != "POST":
            return None
        if path.endswith("/responses/input_tokens"):
            return Endpoint("responses/input_tokens", "count")
        if path.endswith("/responses/compact"):
            return Endpoint("responses/compact", "compact")
        if path.endswith("/responses"):
            return Endpoint("responses", "generate")
        return None

    def check_headers(self, request: Recorded, key: str | None) -> Rejection | None:
        if key is None:
            return None
        auth = request.headers.get("authorization", "")
        if not auth:
            return Rejection(401, "auth", "You didn't provide an API key.", "responses: no Authorization header")
        if auth != f"Bearer {key}":
            return Rejection(401, "auth", "Incorrect API key provided.", f"responses: wrong Authorization header {auth[:24]!r}...")
        return None

    def validate(self, endpoint: Endpoint, body: Any, request: Recorded) -> list[str]:
        if endpoint.kind == "compact":
            return validate_compact(body)
        return validate(body, count=endpoint.kind == "count")

    def wants_stream(self, endpoint: Endpoint, body: dict[str, Any]) -> bool:
        return endpoint.kind == "generate" and body.get("stream") is True

    def error_body(self, status: int, kind: ErrorKind, message: str, **extra: Any) -> Any:
        etype, code = ERROR_TYPES[kind]
        return {"error": {"message": message, "type": etype, "param": None, "code": code}}

    def whole(self, ctx: Context, turn: Turn) -> Any:
        return response_object(ctx, "completed", output_items(ctx, turn), turn)

    def stream_plan(self, ctx: Context, turn: Turn) -> StreamPlan:
        """R: response.created and response.in_progress (status in_progress,
        no output), each item's events, response.completed with the whole
        response. The last item's closing events are in the tail."""
        log = EventLog()
        log.add("response.created", response=response_object(ctx, "in_progress", [], None))
        log.add("response.in_progress", response=response_object(ctx, "in_progress", [], None))
        head = len(log.events)
        stream_items(log, ctx, turn)
        log.add("response.completed", response=response_object(ctx, "completed", output_items(ctx, turn), turn))
        cut = max(log.last_content + 1, head)
        records = [record(e) for e in log.events]
        self._next_sequence, self._model = cut, ctx.model
        return StreamPlan(head=records[:head], body=records[head:cut], tail=records[cut:])

    def stream_error(self, message: str) -> bytes:
        """A mid-stream failure: response.failed with the error in the
        response, the way the API ends a stream it cannot finish."""
        error = {"code": "server_error", "message": message}
        response = {
            "id": RESPONSE_ID, "object": "response", "created_at": CREATED, "status": "failed", "error": error,
            "incomplete_details": None, "output": [], "usage": None, "model": self._model, "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [],
        }  # fmt: skip
        return record({"type": "response.failed", "sequence_number": self._next_sequence, "response": response})

    def count_tokens(self, ctx: Context) -> Any:
        return {"object": "response.input_tokens", "input_tokens": COUNT_TOKENS}

    def compact(self, ctx: Context) -> Any:
        """The user's messages as sent (a string input is one), then one opaque
        compaction item."""
        value = ctx.body.get("input")
        items = [{"role": "user", "content": value}] if isinstance(value, str) else value or []
        kept = [
            {"id": f"msg_kept{i}", "type": "message", "status": "completed", "role": "user",
             "content": [{"type": "input_text", "text": item["content"]}] if isinstance(item["content"], str) else item["content"]}
            for i, item in enumerate(items)
            if isinstance(item, dict) and item.get("role") == "user" and item.get("type", "message") == "message"
        ]  # fmt: skip
        return {
            "id": "resp_compacted0123456789", "object": "response.compaction", "created_at": CREATED,
            "output": [*kept, {"id": "cmp_fake0123456789", "type": "compaction", "encrypted_content": COMPACTED}],
            "usage": usage(Turn()),
        }  # fmt: skip
