"""The system-prompt section that describes the tools and the call format,
written for models without function calling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..jsonutil import dumps
from ..unified import Tool, ToolCall, ToolChoice
from .render import format_call
from .values import parameters, resolve, schema_types


def tool_instructions(
    tools: Sequence[Tool], choice: ToolChoice | None = None, parallel: bool | None = None
) -> str | None:
    """The system-prompt section that replaces native tools.

    Written for weak models: short sentences, the exact format with a concrete
    example, and explicit rules for the mistakes they make (inventing results,
    quoting strings, wrapping calls in fences). None without tools.
    """
    if not tools:
        return None
    mode = choice.mode if choice is not None else "auto"
    if mode == "none":
        return (
            "# Tools\n\n"
            "Do not call any tool in this answer. Reply in plain text only, and do not write "
            "<tool_call> blocks. Any <tool_call> and <tool_result> blocks earlier in this "
            "conversation are a record of tools called before, with their results."
        )
    sections = [
        "# Tools\n\n"
        "You can call the tools described below. A tool runs only when you write a call in the "
        'exact format shown under "How to call a tool". Its result comes back to you in the '
        "next message."
    ]
    for tool in tools:
        sections.append(_describe_tool(tool))
    sections.append(_format_section(tools[0]))
    sections.append(_rules(tools, mode, choice.name if choice is not None else None, parallel))
    return "\n\n".join(sections)


def _describe_tool(tool: Tool) -> str:
    lines = [f"## {tool.name}"]
    if tool.description and tool.description.strip():
        lines.append(tool.description.strip())
    properties, root = parameters(tool)
    if properties:
        lines.append("Parameters:")
        lines.extend(_describe_properties(root, root, 0))
    else:
        lines.append("Parameters: none.")
    return "\n".join(lines)


_MAX_DEPTH = 6


def _describe_properties(schema: dict[str, Any], root: dict[str, Any], depth: int) -> list[str]:
    """One line per property, `- name (type, required): description`, with
    the fields of nested objects (and of array items that are objects)
    indented beneath it."""
    schema = resolve(schema, root)
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    required = set(schema.get("required") or [])
    pad = "  " * depth
    lines: list[str] = []
    for key, sub in properties.items():
        sub = resolve(sub, root) if isinstance(sub, dict) else {}
        facts = [_type_label(sub, root), "required" if key in required else "optional"]
        facts.extend(_constraints(sub))
        line = f"{pad}- {key} ({', '.join(facts)})"
        description = sub.get("description")
        if isinstance(description, str) and description.strip():
            text = description.strip().replace("\n", "\n" + pad + "  ")
            line += f": {text}"
        lines.append(line)
        if depth < _MAX_DEPTH:
            nested = _object_schema(sub, root)
            if nested is not None:
                lines.extend(_describe_properties(nested, root, depth + 1))
    return lines


def _object_schema(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema whose fields belong under this property: its own, or
    its array items'."""
    if isinstance(schema.get("properties"), dict) and schema["properties"]:
        return schema
    items = schema.get("items")
    if isinstance(items, dict):
        items = resolve(items, root)
        if isinstance(items.get("properties"), dict) and items["properties"]:
            return items
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or []:
            if isinstance(option, dict):
                nested = _object_schema(resolve(option, root), root)
                if nested is not None:
                    return nested
    return None


def _type_label(schema: dict[str, Any], root: dict[str, Any], depth: int = 0) -> str:
    """A readable type: `string`, `integer or null`, `array of string`,
    `object with string values`."""
    schema = resolve(schema, root)
    if depth > _MAX_DEPTH:
        return "any"
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list) and options:
        labels: list[str] = []
        for option in options:
            if isinstance(option, dict):
                label = _type_label(option, root, depth + 1)
                if label not in labels:
                    labels.append(label)
        return " or ".join(labels) or "any"
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else sorted(schema_types(schema, root))
    labels = []
    for each in kinds:
        if each == "array":
            items = schema.get("items")
            label = f"array of {_type_label(items, root, depth + 1)}" if isinstance(items, dict) and items else "array"
        elif each == "object" and not schema.get("properties"):
            extra = schema.get("additionalProperties")
            label = (
                f"object with {_type_label(extra, root, depth + 1)} values"
                if isinstance(extra, dict) and extra
                else "object"
            )
        else:
            label = str(each)
        if label not in labels:
            labels.append(label)
    return " or ".join(labels) or "any"


def _constraints(schema: dict[str, Any]) -> list[str]:
    facts: list[str] = []
    if isinstance(schema.get("enum"), list):
        facts.append("one of: " + ", ".join(dumps(v) for v in schema["enum"]))
    if "const" in schema:
        facts.append(f"always {dumps(schema['const'])}")
    if "default" in schema:
        facts.append(f"default: {dumps(schema['default'])}")
    for key, label in (
        ("minimum", "at least"),
        ("maximum", "at most"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ):
        if isinstance(schema.get(key), (int, float)) and not isinstance(schema.get(key), bool):
            facts.append(f"{label} {dumps(schema[key])}")
    if isinstance(schema.get("format"), str):
        facts.append(f"format {schema['format']}")
    return facts


def _format_section(tool: Tool) -> str:
    example = ToolCall(id="example", name=tool.name, arguments=_example_arguments(tool))
    return (
        "## How to call a tool\n\n"
        "To call a tool, write exactly this, with the tool's name and one <arg> line for each "
        "parameter you pass:\n\n"
        '<tool_call name="TOOL_NAME">\n'
        '<arg name="PARAMETER_NAME">VALUE</arg>\n'
        "</tool_call>\n\n"
        f"For example (made-up values):\n\n{format_call(example, [tool])}"
    )


def _example_arguments(tool: Tool) -> dict[str, Any]:
    """Values for the example call: the required parameters (or the first
    one), each with a plausible value of its type."""
    properties, root = parameters(tool)
    required = [k for k in root.get("required") or [] if k in properties]
    keys = required or list(properties)[:1]
    return {key: _example_value(properties[key], root, 0) for key in keys}


def _example_value(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict):
        return "text"
    schema = resolve(schema, root)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    types = schema_types(schema, root)
    for kind in ("string", "integer", "number", "boolean", "object", "array", "null"):
        if kind not in types:
            continue
        if kind == "string":
            return "text"
        if kind in ("integer", "number"):
            low = schema.get("minimum")
            return low if isinstance(low, (int, float)) and not isinstance(low, bool) else 1
        if kind == "boolean":
            return True
        if kind == "object":
            if depth >= 3:
                return {}
            nested = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            wanted = [k for k in schema.get("required") or [] if k in nested]
            return {k: _example_value(nested[k], root, depth + 1) for k in wanted}
        if kind == "array":
            items = schema.get("items")
            return [_example_value(items, root, depth + 1)] if isinstance(items, dict) and depth < 3 else []
        return None
    return "text"


def _rules(tools: Sequence[Tool], mode: str, forced: str | None, parallel: bool | None) -> str:
    rules = [
        "Rules:",
        "- Write the call format only when you actually call a tool, never to show or explain it.",
        "- Use only the tools listed above, with their exact names. Always pass every required parameter.",
        "- Write a string value as plain text, exactly as it is, without quotes and without escaping. "
        "Write every other value (number, boolean, array, object, null) as JSON, for example "
        '<arg name="count">3</arg> or <arg name="tags">["a", "b"]</arg>.',
    ]
    if parallel is False:
        rules.append("- Call at most one tool in each answer.")
    else:
        rules.append("- To call several tools, write the calls one after another.")
    rules += [
        "- After your last call, stop writing and wait. The results come back in the next message as "
        '<tool_result name="TOOL_NAME" id="...">...</tool_result>.',
        "- Never write a <tool_result> yourself, and never invent or guess a tool's result.",
        "- Do not put calls inside code blocks.",
    ]
    if mode == "any":
        rules.append("- In this answer you must call at least one tool.")
    elif mode == "tool" and forced:
        rules.append(f"- In this answer you must call the tool {forced}.")
    else:
        rules.append("- Call a tool when it helps you answer; otherwise answer in plain text.")
    return "\n".join(rules)
