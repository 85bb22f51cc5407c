"""JSON Schema into the OpenAPI subset Gemini accepts in `parameters`
(the API refuses most of JSON Schema's keywords), and Gemini's schemas back
into JSON Schema.

Gemini rejects whole requests over one unknown keyword, so the sanitiser is a
whitelist: what it cannot express is dropped, and constraints worth keeping
are folded into the description.
"""

from __future__ import annotations

from typing import Any

_FOLDED = ("exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "const", "examples")
_NOTES = {
    "exclusiveMinimum": "> {}",
    "exclusiveMaximum": "< {}",
    "multipleOf": "a multiple of {}",
    "uniqueItems": "unique items: {}",
    "examples": "examples: {}",
}
_MAX_DEPTH = 24


def to_gemini(schema: Any) -> dict[str, Any]:
    """A JSON Schema made acceptable as Gemini function `parameters`."""
    if not isinstance(schema, dict):
        return {"type": "object", "properties": {}}
    return _clean(schema, schema.get("$defs") or schema.get("definitions") or {}, 0)


def _resolve(node: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str) or depth > _MAX_DEPTH:
        return node
    name = ref.rsplit("/", 1)[-1]
    target = defs.get(name)
    if not isinstance(target, dict):
        return {k: v for k, v in node.items() if k != "$ref"}
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return _resolve(merged, defs, depth + 1)


# Keywords Gemini takes as they are (`nullable` unless the type list set it).
_KEPT = (
    "format",
    "title",
    "description",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "example",
    "default",
    "nullable",
)


def _clean(node: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    node = _resolve(node, defs, depth)
    if depth > _MAX_DEPTH:
        return {"type": "string"}
    out: dict[str, Any] = {}
    notes: list[str] = []
    node = _merge_all_of(node, defs, depth)
    _clean_type(node, out)
    for key in _KEPT:
        if key in node and key not in out:
            out[key] = node[key]
    _clean_enum(node, out, notes)
    _clean_children(node, out, defs, depth)
    _clean_alternatives(node, out, defs, depth)
    for key in _FOLDED:
        if key in node and key != "const":
            notes.append(_NOTES.get(key, key + " {}").format(node[key]))
    if notes:
        out["description"] = (str(out.get("description", "")) + " (" + "; ".join(notes) + ")").strip()
    if out.get("type") == "object" and not out.get("properties") and "anyOf" not in out:
        # An object without properties is rejected; a free-form object is
        # better described than refused.
        out.pop("required", None)
    return out


def _merge_all_of(node: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    """`allOf` folded into one schema: properties and required lists joined,
    other keywords from the first that has them, the node's own winning."""
    if not ("allOf" in node and isinstance(node["allOf"], list)):
        return node
    merged: dict[str, Any] = {}
    for sub in node["allOf"]:
        if isinstance(sub, dict):
            sub = _resolve(sub, defs, depth)
            merged.setdefault("properties", {}).update(sub.get("properties") or {})
            merged["required"] = list(merged.get("required", [])) + list(sub.get("required") or [])
            for key, value in sub.items():
                if key not in ("properties", "required"):
                    merged.setdefault(key, value)
    return {**merged, **{k: v for k, v in node.items() if k != "allOf"}}


def _clean_type(node: dict[str, Any], out: dict[str, Any]) -> None:
    """One lower-case type; a type list's "null" becomes `nullable`."""
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        kind = kinds[0] if kinds else "string"
    if isinstance(kind, str):
        out["type"] = kind.lower()


def _clean_enum(node: dict[str, Any], out: dict[str, Any], notes: list[str]) -> None:
    """`const` and `enum` as a string enum."""
    if "const" in node:
        out["enum"] = [str(node["const"])]
    if isinstance(node.get("enum"), list):
        values = [v for v in node["enum"] if v is not None]
        if len(values) < len(node["enum"]):
            out["nullable"] = True
        out["enum"] = [v if isinstance(v, str) else str(v) for v in values]
        if out.get("type") not in (None, "string"):
            # Gemini enums are strings only; the model is told the real type.
            notes.append(f"one of {', '.join(out['enum'])} ({out['type']})")
            out["type"] = "string"
        out.setdefault("type", "string")


def _clean_children(node: dict[str, Any], out: dict[str, Any], defs: dict[str, Any], depth: int) -> None:
    """Properties, the required names among them, and array items."""
    if isinstance(node.get("properties"), dict):
        out["properties"] = {
            name: _clean(sub, defs, depth + 1) if isinstance(sub, dict) else {"type": "string"}
            for name, sub in node["properties"].items()
        }
        out.setdefault("type", "object")
    if isinstance(node.get("required"), list):
        known = out.get("properties", {})
        required = [r for r in dict.fromkeys(r for r in node["required"] if isinstance(r, str)) if r in known]
        if required:
            out["required"] = required
    if isinstance(node.get("items"), dict):
        out["items"] = _clean(node["items"], defs, depth + 1)
    elif out.get("type") == "array":
        out["items"] = {"type": "string"}


def _clean_alternatives(node: dict[str, Any], out: dict[str, Any], defs: dict[str, Any], depth: int) -> None:
    """`anyOf`/`oneOf` as `anyOf`; a "null" alternative becomes `nullable`,
    and a single remaining one is merged into the node."""
    alternatives = node.get("anyOf") or node.get("oneOf")
    if isinstance(alternatives, list):
        options = [a for a in alternatives if isinstance(a, dict)]
        non_null = [a for a in options if a.get("type") != "null"]
        if len(non_null) < len(options):
            out["nullable"] = True
        if len(non_null) == 1:
            single = _clean(non_null[0], defs, depth + 1)
            for key, value in single.items():
                out.setdefault(key, value)
        elif non_null:
            out["anyOf"] = [_clean(a, defs, depth + 1) for a in non_null]


def from_gemini(schema: Any) -> Any:
    """Gemini's upper-case OpenAPI types as JSON Schema's lower-case ones."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "type" and isinstance(value, str):
                out[key] = value.lower()
            elif key in ("properties",) and isinstance(value, dict):
                out[key] = {name: from_gemini(sub) for name, sub in value.items()}
            else:
                nested = isinstance(value, (dict, list)) and key not in ("enum", "required", "example", "default")
                out[key] = from_gemini(value) if nested else value
        if out.pop("nullable", False) and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [from_gemini(item) for item in schema]
    return schema


def has_properties(schema: dict[str, Any]) -> bool:
    return bool(schema.get("properties")) or bool(schema.get("anyOf"))
