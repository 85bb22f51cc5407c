"""The call format's markers and values: reading the text of a call's body
into arguments, leniently, by the types the tool's schema gives them.

Shared by the parser (text -> arguments) and the history renderer
(arguments -> text), so that rendering can check it round-trips.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ..jsonutil import loads, loads_object
from ..unified import Tool

TAG = "tool_call"
OPEN_TAG = "<" + TAG
CLOSE_TAG = "</" + TAG + ">"
FENCE = "```"

_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot|apos)|#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6}));")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
# An `&` that the decoder would read as the start of an entity.
ENTITY_AMP = re.compile(r"&(?=(?:lt|gt|amp|quot|apos|#\d{1,7}|#[xX][0-9a-fA-F]{1,6});)")
# A `<` that the parser would read as the start of one of its own tags.
TAG_LT = re.compile(r"<(?=/?\s*(?:tool_call|arg|argument|param|parameter)\b)")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PY_LITERALS: dict[str, Any] = {"True": True, "False": False, "None": None}
_MISSING: Any = object()
_JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")

_ARG_OPEN = re.compile(r"<(?:arg|argument|param|parameter)\s+name\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>\"']+))\s*>")
_ARG_CLOSE = re.compile(r"</\s*(?:arg|argument|param|parameter)\s*>")
_PARAMETER_OPEN = re.compile(r"<parameter\s*=\s*[\"']?([^\s>\"']+)[\"']?\s*>")
_PARAMETER_END = re.compile(r"</\s*parameter\s*>|(?=<parameter\s*=)|(?=</\s*function\s*>)")
_FENCED_BODY = re.compile(r"^\s*```[\w.+-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)

# ====================================================================== one value


def decode_entities(text: str) -> str:
    """Decode the few entities models use when they escape XML.

    Deliberately not `html.unescape`: that also decodes `&copy` without a
    semicolon and friends, which would corrupt raw `&` in URLs and code.
    """

    def replace(match: re.Match[str]) -> str:
        named, decimal, hexa = match.groups()
        if named:
            return _NAMED_ENTITIES[named]
        code = int(decimal) if decimal else int(hexa, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return match.group(0)
        return chr(code)

    return _ENTITY.sub(replace, text) if "&" in text else text


def _trim_newline(text: str) -> str:
    """One newline off each end: the model's line breaks around a value that
    sits on its own lines belong to the layout, not to the value."""
    if text.startswith("\n"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    return text


def schema_types(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> set[str]:
    """The JSON types a schema allows (empty when it does not say)."""
    if not isinstance(schema, dict) or depth > 8:
        return set()
    schema = resolve(schema, root)
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    types: set[str] = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            types |= schema_types(sub, root, depth + 1)
    if types:
        return types
    if "properties" in schema:
        return {"object"}
    if "items" in schema:
        return {"array"}
    values = schema.get("enum") or ([schema["const"]] if "const" in schema else [])
    return {_json_type(v) for v in values}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def resolve(schema: dict[str, Any], root: dict[str, Any] | None) -> dict[str, Any]:
    """Follow a local `$ref` (`#/$defs/X`, `#/definitions/X`) one step at a time."""
    for _ in range(8):
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/") or root is None:
            return schema
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return schema
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _loads_lenient(text: str) -> Any:
    """JSON as models write it, or `_MISSING`.

    Tries the text as is, then with entities decoded, trailing commas removed
    and control characters allowed inside strings, then as a Python literal
    (`True`, `{'a': 1}`), which small models produce surprisingly often.
    """
    text = text.strip()
    if not text:
        return _MISSING
    candidates = [text]
    decoded = decode_entities(text)
    if decoded != text:
        candidates.append(decoded)
    for candidate in candidates:
        for variant in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                return loads(variant, strict=False)
            except ValueError:
                pass
        if candidate in _PY_LITERALS:
            return _PY_LITERALS[candidate]
        if candidate[0] in "[{(":
            try:
                return ast.literal_eval(candidate)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
    return _MISSING


def convert_arg(properties: dict[str, Any], root: dict[str, Any], key: str, raw: str) -> Any:
    """One `<arg>` value, read by the type the tool's schema gives it.

    String (or undeclared) parameters are the raw text; anything else is
    JSON, and text that is not JSON after all is kept as a string rather than
    lost.
    """
    types = schema_types(properties.get(key), root)
    if not types or "string" in types:
        return _trim_newline(decode_entities(raw))
    value = _loads_lenient(raw)
    if value is _MISSING:
        return decode_entities(raw.strip())
    if isinstance(value, str):  # a quoted number or boolean: "3", "true"
        inner = _loads_lenient(value)
        if inner is not _MISSING and _fits(inner, types):
            value = inner
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float) and value.is_integer() and "integer" in types and "number" not in types:
        value = int(value)
    return value


def _fits(value: Any, types: set[str]) -> bool:
    kind = _json_type(value)
    return kind in types or (kind == "integer" and "number" in types)


def parameters(tool: Tool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tool's `properties` and its whole parameter schema (for `$ref`)."""
    root = tool.parameters if isinstance(tool.parameters, dict) else {}
    properties = root.get("properties")
    return (properties if isinstance(properties, dict) else {}), root


# ====================================================================== a call's body


def body_arguments(tool: Tool, body: str) -> dict[str, Any]:
    """The arguments of a call to `tool` from its body, whichever way the
    model wrote them: `<arg>` pairs, a JSON object, or a bare value."""
    properties, root = parameters(tool)
    if _ARG_OPEN.search(body):
        return _parse_args(properties, root, body)
    value = json_body(body)
    if isinstance(value, dict):
        return _unwrap_named(value, tool.name)
    stripped = body.strip()
    if not stripped:
        return {}
    if len(properties) == 1:
        # A bare value for a tool with one parameter: clearly that parameter.
        (key,) = properties
        return {key: convert_arg(properties, root, key, stripped)}
    return loads_object(stripped)


def _parse_args(properties: dict[str, Any], root: dict[str, Any], body: str) -> dict[str, Any]:
    """`<arg name="x">value</arg>` pairs. A value ends at its `</arg>`, or
    where the next `<arg name=...>` starts when the model forgot to close it;
    a raw `<` inside a value is just a character."""
    arguments: dict[str, Any] = {}
    pos = 0
    while (opening := _ARG_OPEN.search(body, pos)) is not None:
        key = decode_entities(next(g for g in opening.groups() if g is not None)).strip()
        start = opening.end()
        closing = _ARG_CLOSE.search(body, start)
        following = _ARG_OPEN.search(body, start)
        if closing is not None and (following is None or closing.start() <= following.start()):
            raw, pos = body[start : closing.start()], closing.end()
        elif following is not None:
            raw, pos = body[start : following.start()], following.start()
        else:
            raw, pos = strip_partial(body[start:], "</arg>"), len(body)
        arguments[key] = convert_arg(properties, root, key, raw)
    return arguments


def parse_parameters(properties: dict[str, Any], root: dict[str, Any], body: str, pos: int) -> dict[str, Any]:
    """Qwen3-Coder's `<parameter=key>value</parameter>` pairs from `body[pos]`
    on; a value also ends where the next parameter or the `</function>`
    starts."""
    arguments: dict[str, Any] = {}
    while (opening := _PARAMETER_OPEN.search(body, pos)) is not None:
        end = _PARAMETER_END.search(body, opening.end())
        stop = end.start() if end is not None else len(body)
        raw = body[opening.end() : stop]
        if end is None:
            raw = strip_partial(raw, "</parameter>")
        arguments[opening.group(1)] = convert_arg(properties, root, opening.group(1), raw)
        pos = end.end() if end is not None and end.end() > stop else stop
    return arguments


def strip_partial(text: str, closer: str) -> str:
    """Drop the start of a closing tag (`</tool_c`, `</ar`) that the answer
    was cut off in: it is the format's, not the value's."""
    cut = text.rfind("</")
    if cut >= 0 and closer.startswith(re.sub(r"\s+", "", text[cut:])):
        return text[:cut]
    return text


def json_body(body: str) -> Any:
    """A call body as JSON: fences around it and prose around the object are
    tolerated. `_MISSING` when there is no object to read."""
    text = body.strip()
    fenced = _FENCED_BODY.match(text)
    if fenced:
        text = fenced.group(1).strip()
    value = _loads_lenient(text)
    if value is _MISSING:
        first, last = text.find("{"), text.rfind("}")
        if 0 <= first < last:
            value = _loads_lenient(text[first : last + 1])
    return value


def arguments_of(value: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a `{"name", "arguments"|"parameters"}` object; a JSON
    string of arguments (OpenAI's habit) is read too."""
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        parsed = _loads_lenient(arguments)
        arguments = parsed if parsed is not _MISSING else loads_object(arguments)
    if arguments is None:
        return {}
    return arguments if isinstance(arguments, dict) else {"value": arguments}


def _unwrap_named(value: dict[str, Any], name: str) -> dict[str, Any]:
    """A named call whose JSON body repeats the name Hermes-style is unwrapped;
    any other object is the arguments themselves."""
    keys = set(value)
    if value.get("name") == name and keys <= {"name", "arguments", "parameters"} and len(keys) == 2:
        return arguments_of(value)
    return value
