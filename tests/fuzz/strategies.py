"""Seeded fuzz cases for every client route: a valid body, broken 1-3 ways.

No hypothesis: each case comes from its own `random.Random` seeded with
"{seed}:{route}:{index}", so any case can be rebuilt on its own:

    from tests.fuzz.strategies import case
    print(case("gemini-generate", 20240601, 17).describe())

A case is a whole HTTP request (method, path, headers, raw body bytes) plus
the protocol whose error shape its answer must have. Bodies start from one of
a few valid bases per route (shapes from tests/integration/drivers.py and the
recorded agents in tests/agents/) and get 1-3 tree mutations (delete a field,
give it a value of another type, replace a nested object, inject a known
field with a wrong value, graft one part of the body into another, nest 50-5000
deep, repeat 10,000 times, duplicate keys); some then get a whole-body
mutation (empty, not JSON, top-level non-object, invalid UTF-8, truncated,
deeply nested), a header mutation (no key, no content type) or, on Gemini, a
path mutation (the model segment, ?alt).
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.integration.drivers import ACCESS_KEY

PROTOCOLS = ("openai", "claude", "gemini", "ollama", "responses")
ALIASES = ("via-openai", "via-claude", "via-gemini", "via-ollama", "via-responses")
# The alias the "good request afterwards" uses: every route has an answer there.
GOOD_ALIAS = "via-openai"

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
HELLO_B64 = "aGVsbG8gd29ybGQ="  # "hello world"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}
GEMINI_SCHEMA = {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}


# ---------------------------------------------------------------- raw JSON pieces


@dataclass(frozen=True)
class Raw:
    """JSON text put into the body verbatim (what json.dumps cannot write:
    5,000-deep nesting, numbers past float range, 5,000-digit integers)."""

    text: str
    label: str

    def __repr__(self) -> str:
        return f"<{self.label}>"


@dataclass
class Pairs:
    """An object written with repeated keys (dicts cannot hold them)."""

    items: list[tuple[str, Any]]


def serialize(value: Any, ascii_only: bool = True) -> str:
    """JSON text. With ascii_only, lone surrogates are written as \\ud800
    escapes (valid JSON text); without, they reach the bytes raw and make the
    body invalid UTF-8 (see encode). NaN and Infinity come out as the bare
    literals Python's json writes."""
    pieces: dict[str, str] = {}
    names: dict[int, str] = {}  # a piece shared 10,000 times is written once

    def placeholder(special: Any) -> str:
        if id(special) in names:
            return names[id(special)]
        if isinstance(special, Raw):
            text = special.text
        elif isinstance(special, Pairs):
            text = "{" + ",".join(json.dumps(k, ensure_ascii=ascii_only) + ":" + serialize(v, ascii_only)
                                  for k, v in special.items) + "}"
        else:
            raise TypeError(f"cannot write {type(special).__name__} as JSON")
        name = f"@@fuzz-piece-{len(pieces)}-{id(pieces)}@@"
        pieces[json.dumps(name)] = text
        names[id(special)] = name
        return name

    text = json.dumps(value, ensure_ascii=ascii_only, default=placeholder)
    for name, piece in pieces.items():
        text = text.replace(name, piece)
    return text


def encode(value: Any, ascii_only: bool = True) -> bytes:
    return serialize(value, ascii_only).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------- values of every type

LONG_LENGTHS = (5_000, 100_000, 1_000_000)
DEPTHS = (64, 200, 500, 900, 1000, 2000, 5000)


def long_string(rng: random.Random) -> str:
    n = rng.choices(LONG_LENGTHS, weights=(10, 4, 1))[0]
    kind = rng.randrange(4)
    if kind == 0:
        return "A" * n
    if kind == 1:
        return "é💥" * (n // 2)
    if kind == 2:
        return "\ud800" * min(n, 5_000)
    return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(min(n, 20_000)))


def deep(rng: random.Random, depth: int | None = None) -> Raw:
    d = depth or rng.choice(DEPTHS)
    kind = rng.randrange(4)
    if kind == 0:
        return Raw("[" * d + "]" * d, f"[ nested {d} deep")
    if kind == 1:
        return Raw('{"a":' * d + "null" + "}" * d, f"{{ nested {d} deep")
    if kind == 2:  # a JSON Schema that never ends: reaches the schema converters
        return Raw('{"type":"object","properties":{"x":' * d + "{}" + "}}" * d, f"schema nested {d} deep")
    return Raw('[{"text":' * d + '"x"' + "}]" * d, f"[{{text nested {d} deep")


SHORT_STRINGS = ("", "x", "0", "-1", "true", "null", "NaN", "Infinity", "[]", "{}", "auto", "none", "any", "user",
                 "model", "assistant", "system", "tool", "text", "function", "image", "json", "\u0000", "é", "💥",
                 "\u202e", "\ud800", "a\udfffb", "\ud83d", "data:", "data:image/png;base64,!!!", "gemini:", "   ",
                 "via-nothing", "nogroup@via-openai", "@", "default@", "models/via-gemini")


def weird_value(rng: random.Random, category: str | None = None) -> Any:
    category = category or rng.choice(CATEGORIES)
    if category == "null":
        return None
    if category == "bool":
        return rng.choice([True, False])
    if category == "int":
        return rng.choice([0, -1, 1, 7, 2**31, -(2**31), 2**63, 2**64 + 1, 10**30, -(10**30)])
    if category == "float":
        return rng.choice([0.5, -0.0, 1e308, -1e308, 5e-324, float("nan"), float("inf"), float("-inf")])
    if category == "bignum":
        return rng.choice([Raw("1e400", "1e400"), Raw("-1e999", "-1e999"), Raw("1" * 5000, "5000-digit int"),
                           Raw("0." + "0" * 400 + "1", "tiny decimal"), Raw("1" + "0" * 300, "1e300 as int")])
    if category == "str":
        return rng.choice(SHORT_STRINGS)
    if category == "longstr":
        return long_string(rng)
    if category == "list":
        return copy.deepcopy(rng.choice([[], [None], [1, "a"], [[]], [{}], ["x", "x", "x"], [True],
                                         [{"type": "text", "text": "x"}], [{"text": 5}]]))
    if category == "dict":
        return copy.deepcopy(rng.choice([{}, {"type": None}, {"type": 1}, {"": ""}, {"text": {"text": 1}},
                                         {"role": "user"}, {"name": None}, {"type": "text"}, {"parts": "x"},
                                         {"0": 0}]))
    if category == "deep":
        return deep(rng)
    raise AssertionError(category)


CATEGORIES = ("null", "bool", "int", "float", "bignum", "str", "str", "longstr", "list", "dict", "deep")


def category_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, (dict, Pairs)):
        return "dict"
    return "raw"


def other_type(rng: random.Random, current: Any) -> Any:
    """A weird value of another type than `current`."""
    mine = category_of(current)
    choices = [c for c in CATEGORIES if c != mine and not (mine == "str" and c == "longstr")]
    return weird_value(rng, rng.choice(choices))


def show(value: Any, limit: int = 60) -> str:
    """A short description of a value for the mutation log."""
    if isinstance(value, Raw):
        return repr(value)
    if isinstance(value, str) and len(value) > limit:
        return f"str(len={len(value)}, {value[:12]!r}...)"
    if isinstance(value, list) and len(value) > 20:
        return f"list(len={len(value)}, of {show(value[0], 30) if value else '-'})"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- the tree

Path = tuple[Any, ...]


def where(path: Path) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "<body>"


def nodes(value: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    found = [(path, value)]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += nodes(inner, path + (key,))
    elif isinstance(value, list) and len(value) <= 50:
        for i, inner in enumerate(value):
            found += nodes(inner, path + (i,))
    return found


def get(body: Any, path: Path) -> Any:
    for step in path:
        body = body[step]
    return body


def put(body: Any, path: Path, value: Any) -> Any:
    """`body` with the node at `path` replaced (the root: returned)."""
    if not path:
        return value
    get(body, path[:-1])[path[-1]] = value
    return body


# ---------------------------------------------------------------- routes


@dataclass(frozen=True)
class RouteSpec:
    name: str
    protocol: str            # whose error shape the answers must have
    path: str                # with {model} for Gemini
    query: str
    bases: tuple[Callable[[random.Random, str], Any], ...]
    vocabulary: dict[str, tuple[Any, ...]]  # known field names, plausible values

    def good_body(self) -> Any:
        return self.bases[0](random.Random(0), GOOD_ALIAS)

    def good_path(self) -> str:
        return self.path.format(model=GOOD_ALIAS) + self.query


def headers_for(protocol: str, key: str = ACCESS_KEY) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if protocol == "claude":
        headers.update({"x-api-key": key, "anthropic-version": "2023-06-01"})
    elif protocol == "gemini":
        headers["x-goog-api-key"] = key
    else:
        headers["authorization"] = f"Bearer {key}"
    return headers


def _maybe(rng: random.Random, body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Each field added with even odds: bases of every richness."""
    for name, value in fields.items():
        if rng.random() < 0.5:
            body[name] = value
    return body


# -- OpenAI

def _openai_simple(rng, model):
    return {"model": model, "messages": [{"role": "user", "content": "What's the weather in Paris?"}]}


def _openai_tools(rng, model):
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "22C and sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                     "parameters": copy.deepcopy(WEATHER_SCHEMA)}}],
    }
    return _maybe(rng, body, tool_choice=rng.choice(["auto", "required", {"type": "function", "function": {"name": "get_weather"}}]),
                  parallel_tool_calls=True, stream=rng.choice([True, False]), stream_options={"include_usage": True})


def _openai_rich(rng, model):
    body = {
        "model": model,
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Look at this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG, "detail": "low"}},
                {"type": "file", "file": {"file_data": "data:text/plain;base64," + HELLO_B64, "filename": "a.txt"}},
            ]},
            {"role": "assistant", "content": "A pixel.", "reasoning_content": "It is tiny."},
            {"role": "system", "content": "Now answer in French."},
            {"role": "user", "content": "And now?"},
        ],
    }
    return _maybe(rng, body, temperature=0.5, top_p=0.9, max_completion_tokens=100, max_tokens=100, stop=["END"],
                  seed=3, presence_penalty=0.1, frequency_penalty=0.1, n=1, reasoning_effort="low",
                  response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": copy.deepcopy(WEATHER_SCHEMA)}},
                  web_search_options={}, stream=rng.choice([True, False]), user="u1", metadata={"k": "v"})


def _openai_functions(rng, model):
    return {
        "model": model,
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}},
            {"role": "function", "name": "get_weather", "content": "sunny"},
        ],
        "functions": [{"name": "get_weather", "parameters": copy.deepcopy(WEATHER_SCHEMA)}],
        "function_call": "auto",
    }


OPENAI_VOCABULARY = {
    "model": ALIASES, "messages": ([{"role": "user", "content": "hi"}],), "role": ("user", "tool", "function", "developer"),
    "content": ("hi", [{"type": "text", "text": "x"}], None), "type": ("text", "image_url", "file", "refusal", "function", "input_audio"),
    "text": ("x",), "image_url": ({"url": "data:image/png;base64," + PNG}, "data:image/png;base64," + PNG, {"url": "data:,"}),
    "url": ("data:image/png;base64," + PNG, "data:text/plain,hi", "data:"), "refusal": ("no",),
    "file": ({"file_data": "data:application/pdf;base64," + HELLO_B64}, {"file_id": "f1"}, {"file_data": "data:text/plain;base64,!!"}),
    "file_data": ("data:text/plain;base64,//79", HELLO_B64), "filename": ("a.pdf",),
    "tool_calls": ([{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}],),
    "tool_call_id": ("call_1",), "name": ("get_weather",), "arguments": ("{", '{"a":1}', "[1]", {"a": 1}),
    "function": ({"name": "get_weather", "arguments": "{}"}, {"name": "f", "parameters": []}),
    "tools": ([{"type": "function", "function": {"name": "f"}}], [{"type": "web_search"}]),
    "tool_choice": ("auto", "none", "required", "bogus", {"type": "function", "function": {"name": "f"}},
                    {"type": "allowed_tools", "allowed_tools": {"mode": "required"}}, {"name": "f"}, {"function": None}),
    "parallel_tool_calls": (False,), "functions": ([{"name": "f"}],), "function_call": ("auto", {"name": "f"}, "none"),
    "response_format": ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
                        {"type": "json_schema"}, {"type": "json_schema", "json_schema": None}, {"type": "xml"}),
    "json_schema": ({"name": "x", "schema": {}, "strict": True},), "schema": ({"type": "object"},),
    "reasoning_effort": ("minimal", "low", "high", "none", "bogus"), "thinking": ({"type": "enabled"}, {"type": "disabled"}),
    "stream": (True, False), "stream_options": ({"include_usage": True},), "include_usage": (True,),
    "max_tokens": (1, 100), "max_completion_tokens": (1,), "temperature": (0, 2), "top_p": (1,), "top_k": (5,),
    "stop": ("x", ["x"]), "n": (1, 2), "seed": (1,), "presence_penalty": (0.5,), "frequency_penalty": (0.5,),
    "web_search_options": ({}, {"search_context_size": "low"}), "cache_control": ({"type": "ephemeral"},),
    "reasoning_content": ("thought",), "reasoning": ("thought",), "input": ("x", ["x"]), "dimensions": (8,),
    "encoding_format": ("float", "base64"),
}


def _openai_embed(rng, model):
    return _maybe(rng, {"model": model, "input": rng.choice(["hello", ["hello", "world"]])},
                  dimensions=8, encoding_format="float", user="u1")


# -- Anthropic

def _claude_simple(rng, model):
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "What's the weather in Paris?"}]}


def _claude_tools(rng, model):
    body = {
        "model": model,
        "max_tokens": 256,
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "22C and sunny"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
                {"type": "text", "text": "Thanks"}]},
        ],
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": copy.deepcopy(WEATHER_SCHEMA)}],
    }
    return _maybe(rng, body, tool_choice=rng.choice([{"type": "auto"}, {"type": "any"}, {"type": "tool", "name": "get_weather"}]),
                  stream=rng.choice([True, False]))


def _claude_rich(rng, model):
    body = {
        "model": model,
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Read these"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}},
                {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inner"}]}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "sig-abc"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
                 "content": [{"type": "web_search_result", "url": "https://example.com", "title": "Ex"}]},
                {"type": "text", "text": "Read."}]},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Now?"},
        ],
    }
    return _maybe(rng, body, thinking={"type": "enabled", "budget_tokens": 1024}, stop_sequences=["END"],
                  temperature=0.5, top_p=0.9, top_k=5, metadata={"user_id": "u"}, output_config={"effort": "low"},
                  tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
                         {"name": "get_weather", "input_schema": copy.deepcopy(WEATHER_SCHEMA)}],
                  stream=rng.choice([True, False]))


def _claude_gemini_signature(rng, model):
    return {
        "model": model,
        "max_tokens": 128,
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "", "signature": "gemini:c2lnbmF0dXJl"},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "sunny", "is_error": False}]},
        ],
        "output_config": {"format": {"type": "json_schema", "schema": copy.deepcopy(WEATHER_SCHEMA)}},
    }


CLAUDE_VOCABULARY = {
    "model": ALIASES, "max_tokens": (1, 64, 0), "messages": ([{"role": "user", "content": "hi"}],),
    "role": ("user", "assistant", "system"), "content": ("hi", [{"type": "text", "text": "x"}], None, {"error_code": "x"}),
    "type": ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "server_tool_use",
             "web_search_tool_result", "search_result", "container_upload", "custom", "bash_20250124", "base64", "url",
             "content", "enabled", "adaptive", "disabled", "auto", "any", "tool", "none"),
    "text": ("x",), "source": ({"type": "base64", "media_type": "image/png", "data": PNG}, {"type": "url", "url": "ftp://x"},
                               {"type": "text", "data": "x"}, {"type": "content", "content": "x"}, {"type": "file", "file_id": "f"}),
    "media_type": ("image/png", "application/pdf", "text/plain"), "data": (PNG, HELLO_B64),
    "id": ("toolu_1",), "name": ("get_weather",), "input": ({"city": "Paris"}, {}), "tool_use_id": ("toolu_1", "missing"),
    "is_error": (True,), "thinking": ({"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}, "thought"),
    "signature": ("gemini:abc", "gemini:", "sig"), "system": ("sys", [{"type": "text", "text": "x"}]),
    "stop_sequences": (["x"],), "temperature": (0, 1), "top_p": (0.5,), "top_k": (1,), "stream": (True, False),
    "tools": ([{"name": "f", "input_schema": {"type": "object"}}], [{"type": "web_search_20250305", "name": "web_search"}]),
    "input_schema": ({"type": "object"},), "tool_choice": ({"type": "auto"}, {"type": "tool", "name": "f"}, {"type": "bogus"}),
    "disable_parallel_tool_use": (True,), "output_config": ({"effort": "high"}, {"format": {"type": "json_schema"}}),
    "effort": ("low", "max"), "format": ({"type": "json_schema", "schema": {}}, "json"), "budget_tokens": (1024, 0),
    "display": ("omitted",), "cache_control": ({"type": "ephemeral", "ttl": "1h"},), "title": ("t",),
}


def _claude_count(base):
    def make(rng, model):
        body = base(rng, model)
        body.pop("stream", None)
        if rng.random() < 0.5:
            body.pop("max_tokens", None)
        return body
    return make


# -- Gemini

def _gemini_simple(rng, model):
    return {"contents": [{"role": "user", "parts": [{"text": "What's the weather in Paris?"}]}]}


def _gemini_tools(rng, model):
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "What's the weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                          "thoughtSignature": "c2ln"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "22C"}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                                             "parameters": copy.deepcopy(GEMINI_SCHEMA)}]}],
    }
    return _maybe(rng, body, toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})


def _gemini_rich(rng, model):
    body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "Look"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"inline_data": {"mime_type": "text/plain", "data": HELLO_B64}},
            ]},
            {"role": "model", "parts": [{"text": "Thinking...", "thought": True}, {"text": "A pixel."}]},
            {"role": "user", "parts": [{"text": "More?"}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": copy.deepcopy(WEATHER_SCHEMA)}]}],
        "generationConfig": {"temperature": 0.5},
    }
    _maybe(rng, body["generationConfig"], topP=0.9, topK=5, maxOutputTokens=256, stopSequences=["END"],
                        candidateCount=1, seed=3, presencePenalty=0.1, frequencyPenalty=0.1,
                        responseMimeType="application/json", responseSchema=copy.deepcopy(GEMINI_SCHEMA),
                        thinkingConfig={"thinkingBudget": 1024, "includeThoughts": True})
    return _maybe(rng, body, safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
                  cachedContent="cachedContents/x", labels={"a": "b"})


def _gemini_snake(rng, model):
    return {
        "system_instruction": "Be brief.",
        "contents": [{"parts": [{"text": "hi"}, {"file_data": {"mime_type": "application/pdf", "file_uri": "gs://b/x.pdf"}}]}],
        "generation_config": {"max_output_tokens": 64, "thinking_config": {"thinking_level": "low"},
                              "response_mime_type": "application/json"},
        "tools": [{"google_search": {}}],
        "tool_config": {"function_calling_config": {"mode": "AUTO"}},
    }


GEMINI_VOCABULARY = {
    "contents": ([{"parts": [{"text": "x"}]}],), "role": ("user", "model", "function", "tool", "system"),
    "parts": ([{"text": "x"}], []), "text": ("x", None), "thought": (True,), "thoughtSignature": ("c2ln", "skip_thought_signature_validator"),
    "functionCall": ({"name": "f", "args": {}}, {"name": "f", "args": []}, {"args": None}),
    "function_call": ({"name": "f"},), "functionResponse": ({"name": "f", "response": {"error": {"code": 1}}},
                                                             {"name": "f", "response": {"output": "x"}, "parts": [{"inlineData": {"data": PNG}}]},
                                                             {"response": {}}),
    "args": ({"a": 1},), "name": ("get_weather",), "id": ("call_1",), "response": ({"result": "x"}, {"error": "bad"}),
    "inlineData": ({"mimeType": "image/png", "data": PNG}, {"mimeType": "text/plain", "data": "!!"}, {"data": 5}),
    "inline_data": ({"mime_type": "application/pdf", "data": HELLO_B64},), "mimeType": ("image/png", "text/plain", "application/pdf"),
    "data": (PNG, "-_-_"), "fileData": ({"mimeType": "image/png", "fileUri": "gs://x"}, {"fileUri": "https://127.0.0.1:9/x"}),
    "fileUri": ("gs://x",), "systemInstruction": ({"parts": [{"text": "x"}]}, "x", {"parts": "x"}),
    "tools": ([{"functionDeclarations": [{"name": "f"}]}], [{"googleSearch": {}}], [{"codeExecution": True}]),
    "functionDeclarations": ([{"name": "f", "parameters": {"type": "OBJECT", "nullable": True}}], [{"parametersJsonSchema": {}}]),
    "parameters": ({"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},), "parametersJsonSchema": ({"type": "object"},),
    "googleSearch": ({},), "urlContext": ({},), "codeExecution": ({},),
    "toolConfig": ({"functionCallingConfig": {"mode": "NONE"}},), "functionCallingConfig": ({"mode": "ANY"}, {"mode": 5}),
    "mode": ("ANY", "NONE", "AUTO", "VALIDATED"), "allowedFunctionNames": (["f"], ["f", "g"]),
    "generationConfig": ({"temperature": 1},), "candidateCount": (1, 2), "maxOutputTokens": (1, 64), "temperature": (0, 2),
    "topP": (1,), "topK": (1,), "stopSequences": (["x"],), "seed": (1,), "presencePenalty": (0.5,), "frequencyPenalty": (0.5,),
    "responseMimeType": ("application/json", "text/plain"), "responseSchema": ({"type": "OBJECT"},), "responseJsonSchema": ({"type": "object"},),
    "thinkingConfig": ({"thinkingBudget": 0}, {"thinkingBudget": -1}, {"thinkingLevel": "high", "includeThoughts": True}),
    "thinkingBudget": (0, 1024, -1), "thinkingLevel": ("low", "HIGH"), "includeThoughts": (True,),
    "generateContentRequest": ({"contents": [{"parts": [{"text": "x"}]}]}, {"model": "models/x"}),
    "content": ({"parts": [{"text": "x"}]},), "outputDimensionality": (8,), "taskType": ("RETRIEVAL_QUERY",),
    "requests": ([{"content": {"parts": [{"text": "x"}]}}],),
}


def _gemini_count(rng, model):
    inner = rng.choice([_gemini_simple, _gemini_tools, _gemini_rich])(rng, model)
    if rng.random() < 0.5:
        return inner
    return {"generateContentRequest": {"model": f"models/{model}", **inner}}


def _gemini_embed(rng, model):
    body = {"content": {"parts": [{"text": "hello"}, {"text": "world"}]}}
    return _maybe(rng, body, model=f"models/{model}", outputDimensionality=8, taskType="RETRIEVAL_QUERY", title="t")


# -- Ollama

def _ollama_simple(rng, model):
    return {"model": model, "messages": [{"role": "user", "content": "What's the weather in Paris?"}], "stream": False}


def _ollama_tools(rng, model):
    body = {
        "model": model,
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "22C and sunny", "tool_name": "get_weather"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                     "parameters": copy.deepcopy(WEATHER_SCHEMA)}}],
    }
    return _maybe(rng, body, stream=rng.choice([True, False]))


def _ollama_rich(rng, model):
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Look", "images": [PNG]},
            {"role": "assistant", "content": "A pixel.", "thinking": "Tiny."},
            {"role": "system", "content": "French now."},
            {"role": "user", "content": "Again"},
        ],
    }
    return _maybe(rng, body, format=rng.choice(["json", copy.deepcopy(WEATHER_SCHEMA)]), think=rng.choice([True, "low"]),
                  options={"num_predict": 64, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stop": ["END"], "seed": 1},
                  keep_alive="5m", stream=rng.choice([True, False]))


OLLAMA_VOCABULARY = {
    "model": ALIASES, "messages": ([{"role": "user", "content": "hi"}], []), "role": ("user", "assistant", "system", "tool"),
    "content": ("hi", ""), "images": ([PNG], ["data:image/png;base64," + PNG], ["https://127.0.0.1:9/x.png"], [""]),
    "thinking": ("t",), "tool_calls": ([{"function": {"name": "f", "arguments": "{"}}], [{"function": {}}]),
    "function": ({"name": "f", "arguments": {}},), "name": ("get_weather",), "arguments": ("{", {"a": 1}, "[1]"),
    "id": ("c1",), "tool_name": ("get_weather",), "tool_call_id": ("c1",),
    "tools": ([{"type": "function", "function": {"name": "f"}}], [{"function": {"parameters": {}}}]),
    "format": ("json", "", {"type": "object"}, "xml"), "options": ({"num_predict": -1}, {"stop": "x"}, {"num_ctx": 4096}),
    "num_predict": (-1, 0, 10), "temperature": (0.1,), "top_p": (0.5,), "top_k": (1,), "stop": ("x", ["x"]), "seed": (1,),
    "presence_penalty": (0.5,), "frequency_penalty": (0.5,), "think": (True, False, "low", "max", "bogus"),
    "stream": (True, False), "prompt": ("hi", ""), "system": ("sys",), "input": ("x", ["x", "y"], []),
    "dimensions": (8,), "keep_alive": ("5m", 0), "raw": (True,), "template": ("{{ .Prompt }}",), "suffix": ("x",),
    "context": ([1, 2, 3],), "verbose": (True,), "truncate": (True,),
}


def _ollama_generate(rng, model):
    body = {"model": model, "prompt": "What's the weather in Paris?", "stream": False}
    return _maybe(rng, body, system="Be brief.", images=[PNG], format="json", think=True, raw=False, suffix="",
                  options={"num_predict": 64, "temperature": 0.5, "stop": "END"}, stream=rng.choice([True, False]))


def _ollama_embed(rng, model):
    return _maybe(rng, {"model": model, "input": rng.choice(["hello", ["hello", "world"]])}, dimensions=8, truncate=True)


def _ollama_show(rng, model):
    return rng.choice([{"model": model}, {"name": model}, {"model": model, "verbose": True}])


# -- OpenAI Responses

RESPONSES_TOOL = {"type": "function", "name": "get_weather", "description": "Weather", "parameters": WEATHER_SCHEMA,
                  "strict": False}


# What Codex sends to /v1/responses/compact, and what the input_tokens route takes.
COMPACT_FIELDS = ("model", "input", "instructions")
COUNT_FIELDS = ("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "text")


def _only(base, fields):
    def make(rng, model):
        return {key: value for key, value in base(rng, model).items() if key in fields}
    return make


def _responses_simple(rng, model):
    return {"model": model, "input": "What's the weather in Paris?"}


def _responses_tools(rng, model):
    body = {
        "model": model,
        "instructions": "You are terse.",
        "input": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "22C and sunny"},
        ],
        "tools": [copy.deepcopy(RESPONSES_TOOL)],
    }
    return _maybe(rng, body, tool_choice=rng.choice(["auto", "required", {"type": "function", "name": "get_weather"}]),
                  parallel_tool_calls=True, stream=rng.choice([True, False]))


def _responses_rich(rng, model):
    body = {
        "model": model,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"role": "user", "content": [
                {"type": "input_text", "text": "Look at this"},
                {"type": "input_image", "image_url": "data:image/png;base64," + PNG, "detail": "low"},
                {"type": "input_file", "file_data": "data:text/plain;base64," + HELLO_B64, "filename": "a.txt"},
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "It is tiny."}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "A pixel.", "annotations": []}]},
            {"role": "user", "content": "Patch it."},
            {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": "done"},
            {"role": "system", "content": "Now answer in French."},
        ],
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Patch files", "format": {"type": "text"}}],
    }
    return _maybe(rng, body, temperature=0.5, top_p=0.9, max_output_tokens=100, store=False,
                  reasoning={"effort": "low", "summary": "auto"}, include=["reasoning.encrypted_content"],
                  text={"format": {"type": "json_schema", "name": "x", "schema": copy.deepcopy(WEATHER_SCHEMA)}},
                  stream=rng.choice([True, False]), metadata={"k": "v"}, prompt_cache_key="k", user="u1")


RESPONSES_VOCABULARY = {
    "model": ALIASES, "input": ("hi", [], [{"role": "user", "content": "hi"}], [{"type": "message"}]),
    "instructions": ("sys", None), "role": ("user", "assistant", "system", "developer", "tool"),
    "content": ("hi", [{"type": "input_text", "text": "x"}], [], None),
    "type": ("message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
             "reasoning", "item_reference", "input_text", "input_image", "input_file", "output_text", "refusal",
             "summary_text", "function", "custom", "web_search", "json_schema", "json_object", "text", "grammar"),
    "text": ("x", {"format": {"type": "json_object"}}, {"format": {"type": "json_schema"}}, {"verbosity": "low"}),
    "image_url": ("data:image/png;base64," + PNG, "data:,", "https://127.0.0.1:9/x.png"), "file_id": ("file_1",),
    "file_data": ("data:application/pdf;base64," + HELLO_B64, "data:text/plain;base64,!!", HELLO_B64), "filename": ("a.pdf",),
    "detail": ("low", "high", "auto", "bogus"), "call_id": ("call_1", "call_9", ""), "name": ("get_weather", "apply_patch"),
    "arguments": ("{", '{"a":1}', "[1]", {"a": 1}), "output": ("ok", [{"type": "input_text", "text": "x"}], {"a": 1}),
    "id": ("rs_1", "msg_1", "fc_1", "x"), "summary": ([], [{"type": "summary_text", "text": "t"}], "auto"),
    "encrypted_content": ("gAAAA", "", "gemini:abc"), "annotations": ([], [{"type": "url_citation"}]),
    "tools": ([RESPONSES_TOOL], [{"type": "function", "function": {"name": "f"}}], [{"type": "web_search"}],
              [{"type": "custom", "name": "apply_patch"}], [{"type": "function", "name": "f"}]),
    "tool_choice": ("auto", "none", "required", "bogus", {"type": "function", "name": "get_weather"},
                    {"type": "function", "function": {"name": "f"}}, {"type": "custom", "name": "apply_patch"},
                    {"type": "allowed_tools", "mode": "auto", "tools": []}),
    "parameters": (WEATHER_SCHEMA, None, {"type": "string"}), "strict": (True, False, None),
    "format": ({"type": "text"}, {"type": "grammar", "syntax": "lark", "definition": "start: /x/"}, {"type": "xml"}),
    "reasoning": ({"effort": "high", "summary": "auto"}, {"effort": "bogus"}, {"summary": "detailed"}),
    "effort": ("minimal", "low", "high", "none", "bogus"), "schema": ({"type": "object"},),
    "stream": (True, False), "store": (True, False), "include": (["reasoning.encrypted_content"], ["bogus"]),
    "previous_response_id": ("resp_1", ""), "max_output_tokens": (1, 16, 100), "temperature": (0, 2), "top_p": (1,),
    "parallel_tool_calls": (False,), "metadata": ({"k": "v"}, {"k": 1}), "truncation": ("auto", "disabled"),
    "messages": ([{"role": "user", "content": "hi"}],), "max_tokens": (100,),
}


ROUTES: dict[str, RouteSpec] = {spec.name: spec for spec in (
    RouteSpec("openai-chat", "openai", "/v1/chat/completions", "",
              (_openai_simple, _openai_tools, _openai_rich, _openai_functions), OPENAI_VOCABULARY),
    RouteSpec("openai-embeddings", "openai", "/v1/embeddings", "", (_openai_embed,), OPENAI_VOCABULARY),
    RouteSpec("claude-messages", "claude", "/v1/messages", "",
              (_claude_simple, _claude_tools, _claude_rich, _claude_gemini_signature), CLAUDE_VOCABULARY),
    RouteSpec("claude-count-tokens", "claude", "/v1/messages/count_tokens", "",
              (_claude_count(_claude_simple), _claude_count(_claude_tools), _claude_count(_claude_rich)), CLAUDE_VOCABULARY),
    RouteSpec("gemini-generate", "gemini", "/v1beta/models/{model}:generateContent", "",
              (_gemini_simple, _gemini_tools, _gemini_rich, _gemini_snake), GEMINI_VOCABULARY),
    RouteSpec("gemini-stream", "gemini", "/v1beta/models/{model}:streamGenerateContent", "?alt=sse",
              (_gemini_simple, _gemini_tools, _gemini_rich, _gemini_snake), GEMINI_VOCABULARY),
    RouteSpec("gemini-count-tokens", "gemini", "/v1beta/models/{model}:countTokens", "",
              (_gemini_simple, _gemini_count), GEMINI_VOCABULARY),
    RouteSpec("gemini-embed", "gemini", "/v1beta/models/{model}:embedContent", "", (_gemini_embed,), GEMINI_VOCABULARY),
    RouteSpec("ollama-chat", "ollama", "/api/chat", "", (_ollama_simple, _ollama_tools, _ollama_rich), OLLAMA_VOCABULARY),
    RouteSpec("ollama-generate", "ollama", "/api/generate", "", (_ollama_generate,), OLLAMA_VOCABULARY),
    RouteSpec("ollama-embed", "ollama", "/api/embed", "", (_ollama_embed,), OLLAMA_VOCABULARY),
    RouteSpec("ollama-show", "ollama", "/api/show", "", (_ollama_show,), OLLAMA_VOCABULARY),
    RouteSpec("responses-create", "responses", "/v1/responses", "", (_responses_simple, _responses_tools, _responses_rich),
              RESPONSES_VOCABULARY),
    RouteSpec("responses-compact", "responses", "/v1/responses/compact", "",
              tuple(_only(base, COMPACT_FIELDS) for base in (_responses_simple, _responses_tools, _responses_rich)),
              RESPONSES_VOCABULARY),
    RouteSpec("responses-input-tokens", "responses", "/v1/responses/input_tokens", "",
              tuple(_only(base, COUNT_FIELDS) for base in (_responses_simple, _responses_tools, _responses_rich)),
              RESPONSES_VOCABULARY),
)}

# Wrong methods and unknown paths: its own "route".
PATHS_ROUTE = "methods-and-paths"
ROUTE_NAMES = (*ROUTES, PATHS_ROUTE)


# ---------------------------------------------------------------- cases


@dataclass
class Case:
    route: str
    seed: int
    index: int
    protocol: str                 # whose error shape the answer must have
    method: str
    path: str                     # with the query
    headers: dict[str, str]
    content: bytes
    mutations: list[str] = field(default_factory=list)
    expect_status: tuple[int, ...] | None = None  # for unknown paths and wrong methods

    def describe(self, limit: int = 400) -> str:
        body = self.content if len(self.content) <= limit else self.content[:limit] + b"...(%d bytes)" % len(self.content)
        shown = {k: (v if len(v) < 80 else v[:40] + f"...({len(v)} chars)") for k, v in self.headers.items()}
        return (f"{self.method} {self.path}\n    headers: {shown}\n    mutations: {'; '.join(self.mutations) or '-'}\n"
                f"    body: {body!r}")

    def replay(self) -> str:
        return (f"CCPROXY_FUZZ_SEED={self.seed} CCPROXY_FUZZ_ONLY={self.index} "
                f".venv/bin/python -m pytest tests/fuzz -k '{self.route}]'   "
                f"# or: from tests.fuzz.strategies import case; case({self.route!r}, {self.seed}, {self.index})")


def case(route: str, seed: int, index: int) -> Case:
    rng = random.Random(f"{seed}:{route}:{index}")
    if route == PATHS_ROUTE:
        return _path_case(rng, seed, index)
    spec = ROUTES[route]
    model = rng.choice(ALIASES) if rng.random() < 0.9 else rng.choice(["via-nothing", "default@via-claude", "second@only-x"])
    body = rng.choice(spec.bases)(rng, model)
    mutations: list[str] = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        body = mutate(rng, body, spec.vocabulary, mutations)
    ascii_only = rng.random() < 0.85
    if not ascii_only:
        mutations.append("non-ASCII written raw (a lone surrogate becomes invalid UTF-8)")
    content = encode(body, ascii_only)
    if rng.random() < 0.15:
        content = _whole_body(rng, body, content, mutations)
    headers = headers_for(spec.protocol)
    if rng.random() < 0.08:
        _mutate_headers(rng, headers, spec.protocol, mutations)
    path, query = spec.path.format(model=model), spec.query
    if spec.protocol == "gemini" and rng.random() < 0.12:
        path, query = _mutate_gemini_path(rng, spec, model, query, mutations)
    return Case(route, seed, index, spec.protocol, "POST", path + query, headers, content, mutations)


# -- tree mutations

def _pick(rng: random.Random, body: Any, containers: bool = False, root: bool = False) -> tuple[Path, Any] | None:
    found = [(p, v) for p, v in nodes(body) if (root or p) and (not containers or isinstance(v, (dict, list)))]
    return rng.choice(found) if found else None


def mutate(rng: random.Random, body: Any, vocabulary: dict[str, tuple[Any, ...]], log: list[str]) -> Any:
    """`body` broken one way (a field deleted, retyped, emptied, grafted,
    nested deep, made huge or long, injected from `vocabulary`, or given
    twice), said in `log`."""
    kind = rng.choices(
        ["delete", "retype", "container", "inject", "empty", "graft", "deep", "huge", "long", "duplicate"],
        weights=[14, 20, 16, 18, 5, 6, 6, 5, 5, 5],
    )[0]
    if kind == "delete":
        picked = _pick(rng, body)
        if picked is None:
            return body
        path, _ = picked
        del get(body, path[:-1])[path[-1]]
        log.append(f"delete {where(path)}")
        return body
    if kind in ("retype", "container"):
        picked = _pick(rng, body, containers=kind == "container", root=kind == "container" and rng.random() < 0.1)
        if picked is None:
            return body
        path, old = picked
        new = other_type(rng, old)
        log.append(f"{where(path)} = {show(new)}")
        return put(body, path, new)
    if kind == "inject":
        targets = [(p, v) for p, v in nodes(body) if isinstance(v, dict)]
        if not targets:
            return body
        path, target = rng.choice(targets)
        name = rng.choice(list(vocabulary))
        value = copy.deepcopy(rng.choice(vocabulary[name])) if rng.random() < 0.55 else weird_value(rng)
        target[name] = value
        log.append(f"{where(path + (name,))} = {show(value)}")
        return body
    if kind == "empty":
        picked = _pick(rng, body, containers=True)
        if picked is None:
            return body
        path, old = picked
        new = {} if isinstance(old, dict) else []
        log.append(f"{where(path)} = {new!r} (emptied)")
        return put(body, path, new)
    if kind == "graft":
        all_nodes = [(p, v) for p, v in nodes(body) if p]
        if len(all_nodes) < 2:
            return body
        (to, _), (_, source) = rng.sample(all_nodes, 2)
        log.append(f"{where(to)} = copy of {show(source, 40)}")
        return put(body, to, copy.deepcopy(source))
    if kind == "deep":
        picked = _pick(rng, body, root=rng.random() < 0.2)
        if picked is None:
            return body
        path, _ = picked
        value = deep(rng)
        log.append(f"{where(path)} = {value!r}")
        return put(body, path, value)
    if kind == "huge":
        lists = [(p, v) for p, v in nodes(body) if isinstance(v, list) and v]
        small = [(p, v) for p, v in lists if len(encode(v[0])) <= 300]
        if small and rng.random() < 0.6:
            path, items = rng.choice(small)
            new = [items[0]] * 10_000  # shared: nothing descends into lists this long
            log.append(f"{where(path)} = 10,000 copies of its first item")
        else:
            picked = _pick(rng, body)
            if picked is None:
                return body
            path, _ = picked
            new = [rng.choice([0, None, "x", {}, [], True])] * 10_000
            log.append(f"{where(path)} = {show(new)}")
        return put(body, path, new)
    if kind == "long":
        strings = [(p, v) for p, v in nodes(body) if isinstance(v, str) and p]
        picked = rng.choice(strings) if strings else _pick(rng, body)
        if picked is None:
            return body
        path, _ = picked
        new = long_string(rng) if rng.random() < 0.6 else rng.choice(["\ud800", "x\udc00y", "\ud83d", "\u0000", "\ufeff"])
        log.append(f"{where(path)} = {show(new)}")
        return put(body, path, new)
    if kind == "duplicate":
        targets = [(p, v) for p, v in nodes(body) if isinstance(v, dict) and v]
        if not targets:
            return body
        path, target = rng.choice(targets)
        key = rng.choice(list(target))
        items = list(target.items())
        extra = (key, other_type(rng, target[key]))
        if rng.random() < 0.5:
            items.insert(0, extra)
        else:
            items.append(extra)
        log.append(f"{where(path)} has key {key!r} twice (other value {show(extra[1], 40)})")
        return put(body, path, Pairs(items))
    raise AssertionError(kind)


# -- whole-body mutations

def _whole_body(rng: random.Random, body: Any, content: bytes, log: list[str]) -> bytes:
    kind = rng.choice(["empty", "whitespace", "not-json", "top-level", "invalid-utf8", "truncated", "bom", "trailing",
                       "deep", "nul", "latin1", "huge-array"])
    if kind == "empty":
        new = b""
    elif kind == "whitespace":
        new = rng.choice([b" ", b"\n\n", b"\t \r\n"])
    elif kind == "not-json":
        new = rng.choice([b"hello", b"{", b"}", b"{'model': 'x'}", b"model=x&messages=y", b"null garbage", b"[1,]",
                          b'{"a":1,}', b'{"a"}', b"\x00\x01\x02", b"<xml/>", b"NaN", b"-", b'"unterminated', b"{" * 3])
    elif kind == "top-level":
        new = rng.choice([b"[]", b"{}", b"null", b"true", b"false", b"0", b"-1", b"1e999", b'"a string"', b'""',
                          b"[" + content + b"]", b"[" + content + b"," + content + b"]", b"NaN", b"Infinity"])
    elif kind == "invalid-utf8":
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b"\xc0\xaf"])
        quotes = [i for i, byte in enumerate(content) if byte == ord('"')]
        at = rng.choice(quotes) + 1 if quotes else 0
        new = content[:at] + bad + content[at:]
    elif kind == "truncated":
        new = content[: rng.randrange(max(1, len(content)))]
    elif kind == "bom":
        new = b"\xef\xbb\xbf" + content
    elif kind == "trailing":
        new = content + rng.choice([b"}", b" x", b"\x00", b"\n{}", b",", b"]"])
    elif kind == "deep":
        new = deep(rng).text.encode()
    elif kind == "nul":
        at = rng.randrange(len(content) + 1)
        new = content[:at] + b"\x00" + content[at:]
    elif kind == "latin1":
        new = serialize(body, ascii_only=False).encode("latin-1", "replace") + b'  '
        new = new.replace(b'"', b'"\xe9', 1)
    else:  # a top-level array of 10,000 bodies
        item = content if content.startswith(b"{") and len(content) <= 300 else b"{}"
        new = b"[" + b",".join([item] * 10_000) + b"]"
    log.append(f"whole body: {kind}")
    return new


# -- headers and paths

def _mutate_headers(rng: random.Random, headers: dict[str, str], protocol: str, log: list[str]) -> None:
    kind = rng.choice(["no-content-type", "text/plain", "form", "no-key", "wrong-key", "beta", "version"])
    if kind == "no-content-type":
        headers.pop("content-type")
    elif kind == "text/plain":
        headers["content-type"] = "text/plain; charset=latin-1"
    elif kind == "form":
        headers["content-type"] = "application/x-www-form-urlencoded"
    elif kind == "no-key":
        for name in ("authorization", "x-api-key", "x-goog-api-key"):
            headers.pop(name, None)
    elif kind == "wrong-key":
        headers.update(headers_for(protocol, key="ccp-wrong-key"))
    elif kind == "beta":
        headers["anthropic-beta"] = rng.choice([",,,", "mid-conversation-system-2026-04-07", "x" * 8000,
                                                "a, b ,c,mid-conversation-system-2026-04-07", "-"])
    else:
        headers["anthropic-version"] = rng.choice(["", "1999-01-01", "x" * 500])
    log.append(f"header: {kind}")


def _mutate_gemini_path(rng: random.Random, spec: RouteSpec, model: str, query: str, log: list[str]) -> tuple[str, str]:
    kind = rng.choice(["model", "model", "query"])
    path = spec.path.format(model=model)
    if kind == "model":
        other = rng.choice(["", "via-nothing", "a%20b", "%00", "x" * 5000, "..", "via-gemini%2Fx", "%ff", "%F0%9F%92%A5",
                            "default@via-gemini", "nogroup@via-gemini", "@", "models"])
        path = spec.path.format(model=other)
        log.append(f"path model: {other[:20]!r}")
    else:
        query = rng.choice(["", "?alt=json", "?alt=sse&alt=json", "?alt=%ff", "?key=ccp-wrong", "?alt=sse&key=" + ACCESS_KEY])
        log.append(f"query: {query!r}")
    return path, query


# -- wrong methods and unknown paths

POST_PATHS = {
    "openai": ["/v1/chat/completions", "/v1/embeddings"],
    "claude": ["/v1/messages", "/v1/messages/count_tokens"],
    "gemini": ["/v1beta/models/via-gemini:generateContent", "/v1beta/models/via-gemini:streamGenerateContent",
               "/v1beta/models/via-gemini:countTokens", "/v1beta/models/via-gemini:embedContent"],
    "ollama": ["/api/chat", "/api/generate", "/api/embed", "/api/show"],
    "responses": ["/v1/responses", "/v1/responses/input_tokens", "/v1/responses/compact"],
}
GET_PATHS = {
    "openai": ["/v1/models", "/v1/models/via-openai"],
    "claude": [],
    "gemini": ["/v1beta/models", "/v1beta/models/via-gemini"],
    "ollama": ["/api/tags", "/api/version", "/api/ps"],
    # Real routes, for an id the proxy does not keep: a 404.
    "responses": ["/v1/responses/resp_nothing", "/v1/responses/resp_nothing/input_items"],
}
PREFIXES = ("", "", "", "/compat", "/second", "/switch", "/default/compat_mode", "/textual")


def _unknown_path(rng: random.Random, protocol: str) -> str:
    # Never a real route's name; no dot segments (the client would resolve them away).
    word = rng.choice(["nothing", "chat2", "assistants", "batches", "x" * 300, "%ff", "a%2Fb", "", "💥"])
    if protocol == "openai":
        return rng.choice([f"/v1/{word}", f"/v1/chat/{word}", f"/v1/chat/completions/{word}", "/v1/chat/completions/",
                           "/v1/embeddings/", f"/v1/files/{word}", "/v1"])
    if protocol == "claude":
        return rng.choice([f"/v1/messages/{word}", "/v1/messages/", "/v1/messages/batches", "/v1/messages/count_tokens/x"])
    if protocol == "responses":
        return rng.choice([f"/v1/responses/{word}/x", "/v1/responses/", "/v1/responses/x/y/z", f"/v1/{word}/responses"])
    if protocol == "gemini":
        return rng.choice([f"/v1beta/{word}", f"/v1beta/models/via-gemini:{word}", "/v1beta/models/via-gemini:generateContent/x",
                           f"/v1beta/files/{word}", "/v1beta/models/via-gemini:batchGenerateContent", "/v1beta",
                           "/v1beta/models/:generateContent", f"/v1beta/tunedModels/{word}:generateContent"])
    return rng.choice([f"/api/{word}", "/api/pull", "/api/push", "/api/delete", "/api/copy", "/api/create", "/api",
                       "/api/chat/", "/api/embeddings", "/api/chat/x"])


def _path_case(rng: random.Random, seed: int, index: int) -> Case:
    protocol = rng.choice(PROTOCOLS)
    kind = rng.choice(["get-on-post", "other-method", "other-method", "unknown", "unknown"])
    if kind == "get-on-post":
        method, path = "GET", rng.choice(POST_PATHS[protocol])
    elif kind == "other-method":
        method = rng.choice(["PUT", "DELETE", "PATCH"])
        path = rng.choice(POST_PATHS[protocol] + GET_PATHS[protocol])
    else:
        method = rng.choice(["GET", "POST", "POST", "PUT", "DELETE", "PATCH"])
        path = _unknown_path(rng, protocol)
    path = rng.choice(PREFIXES) + path
    if protocol == "gemini" and "Content" in path and rng.random() < 0.3:
        path += "?alt=sse"
    headers = headers_for(protocol)
    content = b""
    if method in ("POST", "PUT", "PATCH") and rng.random() < 0.8:
        spec = next(s for s in ROUTES.values() if s.protocol == protocol)
        content = encode(spec.good_body()) if rng.random() < 0.7 else rng.choice([b"{}", b"not json", b"[]"])
    return Case(PATHS_ROUTE, seed, index, protocol, method, path, headers, content, [kind],
                expect_status=(404, 405))


def cases(route: str, seed: int, count: int, only: list[int] | None = None) -> list[Case]:
    return [case(route, seed, i) for i in (only if only is not None else range(count))]
