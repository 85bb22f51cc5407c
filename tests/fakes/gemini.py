"""Fake Gemini (Generative Language API) upstream.

Like the real API it accepts both lowerCamelCase and snake_case field names
(the official SDK sends a mixture), streams `data: ` records separated by
CRLF with no [DONE], and answers errors in the google.rpc.Status shape. The
"parallel_tools" scenario has no call ids (older models) and puts the calls
in separate chunks, to make the proxy synthesise distinct ids.
"""

from __future__ import annotations

import re
from typing import Any

from .base import Context, Dialect, Endpoint, ErrorKind, Recorded, Rejection, StreamPlan, dumps
from .checks import Problems, is_base64, is_int, is_number, join, kind
from .scenarios import (
    CACHED_TOKENS,
    CALL_IDS,
    COUNT_TOKENS,
    EMBEDDING,
    GEMINI_SIGNATURE,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    Turn,
    pieces,
)

RESPONSE_ID = "fakeRespId0123456789"
ROUTE = re.compile(
    r"/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|countTokens|embedContent|batchEmbedContents)$"
)
KINDS = {
    "generateContent": "generate",
    "streamGenerateContent": "generate",
    "countTokens": "count",
    "embedContent": "embed",
    "batchEmbedContents": "embed",
}
SENTINELS = ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go")
DATA_FIELDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult")
PART_KEYS = set(DATA_FIELDS) | {"thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"}
TOP_LEVEL = {
    "contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "cachedContent",
    "model", "labels",
}  # fmt: skip
GENERATION_CONFIG = {
    "temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount", "presencePenalty",
    "frequencyPenalty", "seed", "responseMimeType", "responseSchema", "responseJsonSchema", "thinkingConfig",
    "responseModalities", "responseLogprobs", "logprobs", "speechConfig", "mediaResolution", "imageConfig",
    "enableEnhancedCivicAnswers",
}  # fmt: skip
THINKING_CONFIG = {"includeThoughts", "thinkingBudget", "thinkingLevel"}
THINKING_LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
SCHEMA_KEYS = {
    "type", "format", "title", "description", "nullable", "enum", "items", "properties", "required", "minItems",
    "maxItems", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "minimum", "maximum",
    "example", "default", "anyOf", "propertyOrdering",
}  # fmt: skip
SCHEMA_TYPES = ("STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL", "TYPE_UNSPECIFIED")
FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$")
MODES = ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED")
TOOL_KINDS = {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext", "fileSearch"}

STATUS: dict[ErrorKind, str] = {
    "invalid": "INVALID_ARGUMENT",
    "auth": "INVALID_ARGUMENT",
    "not_found": "NOT_FOUND",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "server": "INTERNAL",
    "overloaded": "UNAVAILABLE",
    "unavailable": "UNAVAILABLE",
}


def camel(key: str) -> str:
    """snake_case -> lowerCamelCase, the proto-JSON name Google accepts too."""
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def normal(obj: dict[str, Any], path: str, p: Problems) -> dict[str, Any]:
    """The object's keys in camelCase (one level deep); both spellings of one
    field at once is an error, as in proto JSON ("duplicate field")."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = camel(key)
        if name in out:
            p.add(join(path, key), f"duplicate field {name!r} (both spellings given)")
        out[name] = value
    return out


# -- validation ---------------------------------------------------------------


def validate_generate(raw: dict[str, Any], path: str = "") -> list[str]:
    """Every reason Gemini would refuse this GenerateContentRequest."""
    p = Problems()
    body = normal(raw, path, p)
    p.unknown_keys(body, TOP_LEVEL, path, 'Invalid JSON payload received. Unknown name: Cannot find field.')
    contents = p.array(body, "contents", path, required=True, nonempty=True)
    if contents:
        _contents(p, contents, join(path, "contents"))
    system = body.get("systemInstruction")
    if system is not None:
        _system_instruction(p, system, join(path, "systemInstruction"))
    names = _tools(p, body.get("tools"), join(path, "tools"))
    _tool_config(p, body.get("toolConfig"), join(path, "toolConfig"), names)
    _generation_config(p, body.get("generationConfig"), join(path, "generationConfig"))
    settings = p.array(body, "safetySettings", path)
    for i, setting in enumerate(settings or []):
        spath = join(join(path, "safetySettings"), i)
        if not isinstance(setting, dict):
            p.add(spath, f"must be an object, got {kind(setting)}")
            continue
        s = normal(setting, spath, p)
        p.unknown_keys(s, ("category", "threshold", "method"), spath, "Unknown name: Cannot find field.")
        p.string(s, "category", spath, required=True)
        p.string(s, "threshold", spath, required=True)
    return p.items


def _contents(p: Problems, contents: list[Any], path: str) -> None:
    """Parts, roles, and the function call/response turn rules: a call turn
    follows a user or response turn; a response turn answers the call turn
    right before it, one response per call, echoing the call's id if it had
    one; the first call of each model turn carries a thought signature."""
    previous: tuple[str, list[dict[str, Any]]] | None = None  # (role, parts) of the previous content
    for i, content in enumerate(contents):
        cpath = join(path, i)
        if not isinstance(content, dict):
            p.add(cpath, f"must be an object, got {kind(content)}")
            previous = None
            continue
        c = normal(content, cpath, p)
        p.unknown_keys(c, ("role", "parts"), cpath, "Unknown name: Cannot find field.")
        role = c.get("role") or "user"
        if role not in ("user", "model", "function"):
            p.add(join(cpath, "role"), f"{role!r}: please use a valid role: user, model")
        raw_parts = p.array(c, "parts", cpath, required=True, nonempty=True) or []
        parts = [_part(p, part, join(join(cpath, "parts"), j), role) for j, part in enumerate(raw_parts)]
        parts = [x for x in parts if x is not None]
        calls = [x["functionCall"] for x in parts if isinstance(x.get("functionCall"), dict)]
        responses = [x["functionResponse"] for x in parts if isinstance(x.get("functionResponse"), dict)]
        if calls:
            if previous is not None and previous[0] == "model":
                p.add(cpath, "Please ensure that function call turn comes immediately after a user turn or after a function response turn.")
            first = next(x for x in parts if isinstance(x.get("functionCall"), dict))
            if "thoughtSignature" not in first:
                p.add(cpath, f"Function call is missing a thought_signature in functionCall parts. position {i}")
        if responses:
            before = [x["functionCall"] for x in (previous[1] if previous else []) if isinstance(x.get("functionCall"), dict)]
            if not before or previous is None or previous[0] != "model":
                p.add(cpath, "Please ensure that function response turn comes immediately after a function call turn.")
            elif len(before) != len(responses):
                p.add(cpath, "Please ensure that the number of function response parts is equal to the number of "
                      f"function call parts of the function call turn ({len(responses)} != {len(before)}).")  # fmt: skip
            else:
                _match_ids(p, before, responses, cpath)
        previous = (role, parts)


def _match_ids(p: Problems, calls: list[dict[str, Any]], responses: list[dict[str, Any]], path: str) -> None:
    """Pair each response with a call (by id, else by name in order) and
    require the call's id to be echoed when the call had one."""
    open_calls = list(calls)
    for response in responses:
        rid, name = response.get("id"), response.get("name")
        match = next((c for c in open_calls if rid and c.get("id") == rid), None)
        if match is None:
            match = next((c for c in open_calls if c.get("name") == name), None)
        if match is None:
            p.add(path, f"functionResponse {name!r} answers no functionCall of the previous turn")
            continue
        open_calls.remove(match)
        if match.get("id") and rid != match.get("id"):
            p.add(path, f"functionResponse.id ({rid!r}) does not match functionCall.id ({match.get('id')!r})")
        if match.get("name") != name:
            p.add(path, f"functionResponse.name {name!r} does not match functionCall.name {match.get('name')!r}")


def _part(p: Problems, part: Any, path: str, role: str) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        p.add(path, f"must be an object, got {kind(part)}")
        return None
    x = normal(part, path, p)
    p.unknown_keys(x, PART_KEYS, path, "Unknown name: Cannot find field.")
    present = [f for f in DATA_FIELDS if f in x]
    if len(present) != 1:
        p.add(path, f"a part needs exactly one data field of {list(DATA_FIELDS)}, got {present}")
    p.boolean(x, "thought", path)
    signature = x.get("thoughtSignature")
    if signature is not None and signature not in SENTINELS and not is_base64(signature):
        p.add(join(path, "thoughtSignature"), f"Invalid value (bytes): not valid base64: {signature!r}")
    if "text" in x and not isinstance(x["text"], str):
        p.add(join(path, "text"), f"must be a string, got {kind(x['text'])}")
    if "inlineData" in x:
        blob = p.obj(x, "inlineData", path)
        if blob is not None:
            bpath = join(path, "inlineData")
            b = normal(blob, bpath, p)
            p.unknown_keys(b, ("mimeType", "data", "displayName"), bpath, "Unknown name: Cannot find field.")
            p.string(b, "mimeType", bpath, required=True, nonempty=True)
            data = b.get("data")
            if not is_base64(data):
                p.add(join(bpath, "data"), "Invalid value (bytes): must be base64 (no data: URL prefix)")
    if "fileData" in x:
        fdata = p.obj(x, "fileData", path)
        if fdata is not None:
            f = normal(fdata, join(path, "fileData"), p)
            p.unknown_keys(f, ("mimeType", "fileUri", "displayName"), join(path, "fileData"), "Unknown name: Cannot find field.")
            p.string(f, "fileUri", join(path, "fileData"), required=True, nonempty=True)
    if "functionCall" in x:
        call = p.obj(x, "functionCall", path)
        if call is not None:
            cpath = join(path, "functionCall")
            c = normal(call, cpath, p)
            x["functionCall"] = c
            p.unknown_keys(c, ("id", "name", "args", "partialArgs", "willContinue"), cpath, "Unknown name: Cannot find field.")
            p.string(c, "id", cpath)
            p.string(c, "name", cpath, required=True, nonempty=True)
            p.obj(c, "args", cpath)
            if role != "model":
                p.add(path, "functionCall parts belong in a 'model' turn")
    if "functionResponse" in x:
        response = p.obj(x, "functionResponse", path)
        if response is not None:
            rpath = join(path, "functionResponse")
            r = normal(response, rpath, p)
            x["functionResponse"] = r
            p.unknown_keys(r, ("id", "name", "response", "parts", "willContinue", "scheduling"), rpath, "Unknown name: Cannot find field.")
            p.string(r, "id", rpath)
            p.string(r, "name", rpath, required=True, nonempty=True)
            p.obj(r, "response", rpath, required=True)
            if role == "model":
                p.add(path, "functionResponse parts belong in a 'user' turn")
    return x


def _system_instruction(p: Problems, system: Any, path: str) -> None:
    if not isinstance(system, dict):
        p.add(path, f"must be a Content object, got {kind(system)}")
        return
    s = normal(system, path, p)
    p.unknown_keys(s, ("role", "parts"), path, "Unknown name: Cannot find field.")
    parts = p.array(s, "parts", path, required=True, nonempty=True) or []
    for j, part in enumerate(parts):
        ppath = join(join(path, "parts"), j)
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            p.add(ppath, "system instruction parts must be text parts")


def _tools(p: Problems, tools: Any, path: str) -> set[str]:
    names: set[str] = set()
    if tools is None:
        return names
    if not isinstance(tools, list):
        p.add(path, f"must be an array, got {kind(tools)}")
        return names
    for i, tool in enumerate(tools):
        tpath = join(path, i)
        if not isinstance(tool, dict):
            p.add(tpath, f"must be an object, got {kind(tool)}")
            continue
        t = normal(tool, tpath, p)
        p.unknown_keys(t, TOOL_KINDS, tpath, "Unknown name: Cannot find field.")
        declarations = p.array(t, "functionDeclarations", tpath)
        for j, declaration in enumerate(declarations or []):
            names |= _declaration(p, declaration, join(join(tpath, "functionDeclarations"), j))
    return names


def _declaration(p: Problems, declaration: Any, path: str) -> set[str]:
    if not isinstance(declaration, dict):
        p.add(path, f"must be an object, got {kind(declaration)}")
        return set()
    d = normal(declaration, path, p)
    p.unknown_keys(d, ("name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema", "behavior"),
                   path, "Unknown name: Cannot find field.")  # fmt: skip
    name = p.string(d, "name", path, required=True)
    if name is not None and not FUNCTION_NAME.match(name):
        p.add(join(path, "name"), f"{name!r}: must start with a letter or underscore and use [a-zA-Z0-9_.:-], at most 128")
    p.string(d, "description", path)
    if "parameters" in d and "parametersJsonSchema" in d:
        p.add(path, "parameters and parametersJsonSchema are mutually exclusive")
    if d.get("parameters") is not None:
        check_schema(p, d["parameters"], join(path, "parameters"))
    if d.get("parametersJsonSchema") is not None and not isinstance(d["parametersJsonSchema"], dict):
        p.add(join(path, "parametersJsonSchema"), f"must be an object, got {kind(d['parametersJsonSchema'])}")
    if d.get("response") is not None:
        check_schema(p, d["response"], join(path, "response"))
    return {name} if name else set()


def check_schema(p: Problems, schema: Any, path: str) -> None:
    """The OpenAPI-subset Schema of C.2, recursively. JSON-Schema-only
    keywords ($schema, additionalProperties, const, oneOf, ...) are unknown
    fields to the proto parser, hence 400s."""
    if not isinstance(schema, dict):
        p.add(path, f"a Schema must be an object, got {kind(schema)}")
        return
    for key in schema:
        if camel(key) not in SCHEMA_KEYS:
            p.add(path, f'Invalid JSON payload received. Unknown name "{key}" at \'{path}\': Cannot find field.')
    s = {camel(k): v for k, v in schema.items()}
    stype = s.get("type")
    if stype is not None:
        if not isinstance(stype, str):
            p.add(join(path, "type"), f"must be a single type name (use nullable instead of a type array), got {kind(stype)}")
        elif stype.upper() not in SCHEMA_TYPES:
            p.add(join(path, "type"), f"Invalid value {stype!r}: not one of {list(SCHEMA_TYPES[:-1])}")
    enum = s.get("enum")
    if enum is not None:
        if not isinstance(enum, list):
            p.add(join(path, "enum"), "must be an array of strings")
        else:
            for k, value in enumerate(enum):
                if not isinstance(value, str):
                    p.add(join(join(path, "enum"), k), f"Invalid value {value!r} (TYPE_STRING)")
    properties = s.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            p.add(join(path, "properties"), "must be an object of Schemas")
        else:
            for name, sub in properties.items():
                check_schema(p, sub, f"{path}.properties[{name!r}]")
    if s.get("items") is not None:
        check_schema(p, s["items"], join(path, "items"))
    any_of = s.get("anyOf")
    if any_of is not None:
        if not isinstance(any_of, list):
            p.add(join(path, "anyOf"), "must be an array of Schemas")
        else:
            for k, sub in enumerate(any_of):
                check_schema(p, sub, join(join(path, "anyOf"), k))
    for key in ("required", "propertyOrdering"):
        value = s.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            p.add(join(path, key), "must be an array of strings")
    for key in ("minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength"):
        value = s.get(key)
        if value is not None and not (is_int(value) or (isinstance(value, str) and value.isdigit())):
            p.add(join(path, key), f"must be an integer, got {kind(value)}")
    for key in ("minimum", "maximum"):
        if s.get(key) is not None and not is_number(s[key]):
            p.add(join(path, key), f"must be a number, got {kind(s[key])}")
    if s.get("nullable") is not None and not isinstance(s["nullable"], bool):
        p.add(join(path, "nullable"), "must be a boolean")


def _tool_config(p: Problems, config: Any, path: str, names: set[str]) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        p.add(path, f"must be an object, got {kind(config)}")
        return
    c = normal(config, path, p)
    p.unknown_keys(c, ("functionCallingConfig", "retrievalConfig", "includeServerSideToolInvocations"), path, "Unknown name: Cannot find field.")
    fcc = p.obj(c, "functionCallingConfig", path)
    if fcc is None:
        return
    fpath = join(path, "functionCallingConfig")
    f = normal(fcc, fpath, p)
    p.unknown_keys(f, ("mode", "allowedFunctionNames", "streamFunctionCallArguments"), fpath, "Unknown name: Cannot find field.")
    mode = p.one_of(f, "mode", fpath, MODES)
    allowed = f.get("allowedFunctionNames")
    if allowed is not None:
        if not (isinstance(allowed, list) and all(isinstance(n, str) for n in allowed)):
            p.add(join(fpath, "allowedFunctionNames"), "must be an array of strings")
        else:
            if mode not in ("ANY", "VALIDATED"):
                p.add(join(fpath, "allowedFunctionNames"), "should only be set when mode is ANY or VALIDATED")
            for name in allowed:
                if names and name not in names:
                    p.add(join(fpath, "allowedFunctionNames"), f"{name!r} is not a declared function")


def _generation_config(p: Problems, config: Any, path: str) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        p.add(path, f"must be an object, got {kind(config)}")
        return
    g = normal(config, path, p)
    for key in g:
        if key not in GENERATION_CONFIG:
            p.add(path, f'Invalid JSON payload received. Unknown name "{key}" at \'generation_config\': Cannot find field.')
    p.number(g, "temperature", path, 0, 2)
    p.number(g, "topP", path, 0, 1)
    p.integer(g, "topK", path, low=1)
    p.integer(g, "maxOutputTokens", path, low=1)
    p.integer(g, "candidateCount", path, low=1)
    p.integer(g, "seed", path)
    p.number(g, "presencePenalty", path)
    p.number(g, "frequencyPenalty", path)
    stops = p.array(g, "stopSequences", path)
    if stops is not None:
        if not all(isinstance(s, str) for s in stops):
            p.add(join(path, "stopSequences"), "must be an array of strings")
        if len(stops) > 5:
            p.add(join(path, "stopSequences"), f"at most 5 stop sequences are allowed, got {len(stops)}")
    if "responseSchema" in g and "responseJsonSchema" in g:
        p.add(path, "responseSchema and responseJsonSchema are mutually exclusive")
    if g.get("responseSchema") is not None:
        check_schema(p, g["responseSchema"], join(path, "responseSchema"))
    thinking = p.obj(g, "thinkingConfig", path)
    if thinking is not None:
        tpath = join(path, "thinkingConfig")
        t = normal(thinking, tpath, p)
        p.unknown_keys(t, THINKING_CONFIG, tpath, "Unknown name: Cannot find field.")
        p.boolean(t, "includeThoughts", tpath)
        p.integer(t, "thinkingBudget", tpath, low=-1)
        level = t.get("thinkingLevel")
        if level is not None and (not isinstance(level, str) or level.upper() not in THINKING_LEVELS):
            p.add(join(tpath, "thinkingLevel"), f"{level!r} is not one of {list(THINKING_LEVELS)}")
        if "thinkingBudget" in t and "thinkingLevel" in t:
            p.add(tpath, "thinkingBudget and thinkingLevel are mutually exclusive")


def validate_count(raw: dict[str, Any]) -> list[str]:
    """countTokens takes `contents`, or a whole `generateContentRequest`."""
    p = Problems()
    body = normal(raw, "", p)
    p.unknown_keys(body, ("contents", "generateContentRequest"), "", "Unknown name: Cannot find field.")
    if ("contents" in body) == ("generateContentRequest" in body):
        p.add("", "give exactly one of contents and generateContentRequest")
    if "contents" in body:
        contents = p.array(body, "contents", "", nonempty=True)
        if contents:
            _contents(p, contents, "contents")
    request = p.obj(body, "generateContentRequest", "")
    if request is not None:
        p.items.extend(validate_generate(request, "generateContentRequest"))
    return p.items


def _embed_request(p: Problems, raw: Any, path: str, *, needs_model: bool) -> None:
    if not isinstance(raw, dict):
        p.add(path, f"must be an object, got {kind(raw)}")
        return
    body = normal(raw, path, p)
    p.unknown_keys(body, ("model", "content", "taskType", "title", "outputDimensionality"), path, "Unknown name: Cannot find field.")
    if needs_model:
        model = p.string(body, "model", path, required=True)
        if model is not None and not model.startswith("models/"):
            p.add(join(path, "model"), f"must be 'models/...', got {model!r}")
    content = p.obj(body, "content", path, required=True)
    if content is not None:
        parts = p.array(normal(content, join(path, "content"), p), "parts", join(path, "content"), required=True, nonempty=True)
        for j, part in enumerate(parts or []):
            _part(p, part, join(join(path, "content.parts"), j), "user")


def validate_embed(raw: dict[str, Any], batch: bool) -> list[str]:
    p = Problems()
    if not batch:
        _embed_request(p, raw, "", needs_model=False)
        return p.items
    p.unknown_keys(raw, ("requests",), "", "Unknown name: Cannot find field.")
    for i, request in enumerate(p.array(raw, "requests", "", required=True, nonempty=True) or []):
        _embed_request(p, request, join("requests", i), needs_model=True)
    return p.items


# -- rendering ------------------------------------------------------------------


def usage(turn: Turn) -> dict[str, Any]:
    """candidatesTokenCount excludes thoughts; their sum is OUTPUT_TOKENS."""
    thoughts = turn.thinking_tokens
    out: dict[str, Any] = {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": OUTPUT_TOKENS - thoughts,
        "totalTokenCount": PROMPT_TOKENS + OUTPUT_TOKENS,
        "cachedContentTokenCount": CACHED_TOKENS,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}],
    }
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    return out


def call_parts(turn: Turn, with_ids: bool) -> list[dict[str, Any]]:
    """functionCall parts; only the first carries the thought signature, as
    Gemini does for parallel calls."""
    out = []
    for k, call in enumerate(turn.calls):
        function_call: dict[str, Any] = {"name": call.name, "args": call.args}
        if with_ids:
            function_call = {"id": CALL_IDS["gemini"][k], **function_call}
        part: dict[str, Any] = {"functionCall": function_call}
        if k == 0:
            part["thoughtSignature"] = GEMINI_SIGNATURE
        out.append(part)
    return out


class GeminiDialect(Dialect):
    name = "gemini"

    def match(self, method: str, path: str, query: dict[str, str]) -> Endpoint | None:
        found = ROUTE.search(path)
        if method != "POST" or found is None:
            return None
        model, verb = found["model"], found["method"]
        return Endpoint(verb, KINDS[verb], model=model, stream=verb == "streamGenerateContent")  # type: ignore[arg-type]

    def check_headers(self, request: Recorded, key: str | None) -> Rejection | None:
        if key is None:
            return None
        sent = request.headers.get("x-goog-api-key") or request.query.get("key")
        if sent != key:
            how = "no key" if not sent else "a wrong key"
            return Rejection(400, "auth", "API key not valid. Please pass a valid API key.", f"gemini: {how} (x-goog-api-key / ?key=)")
        return None

    def validate(self, endpoint: Endpoint, body: Any, request: Recorded) -> list[str]:
        problems = []
        if "/models/models/" in request.path:
            problems.append(f"path has a doubled models/ prefix: {request.path}")
        if endpoint.stream and request.query.get("alt") != "sse":
            problems.append("streamGenerateContent without ?alt=sse (the real API would answer a JSON array, not SSE)")
        if endpoint.kind == "generate":
            return problems + validate_generate(body)
        if endpoint.kind == "count":
            return problems + validate_count(body)
        return problems + validate_embed(body, batch=endpoint.name == "batchEmbedContents")

    def wants_stream(self, endpoint: Endpoint, body: dict[str, Any]) -> bool:
        return endpoint.stream

    def error_body(self, status: int, kind: ErrorKind, message: str, **extra: Any) -> Any:
        error: dict[str, Any] = {"code": status, "message": message, "status": STATUS[kind]}
        if kind == "auth":
            error["details"] = [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}
            ]
        elif kind == "rate_limit":
            error["details"] = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{extra.get('retry_after', 7)}s"}
            ]
        elif kind == "invalid":
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": []}]
        return {"error": error}

    def _response(self, ctx: Context, parts: list[dict[str, Any]], *, finish: str | None, usage_metadata: dict[str, Any],
                  turn: Turn | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        if finish and turn is not None and turn.search is not None:
            # Grounded answers report the search on the last chunk.
            query, sources = turn.search
            candidate["groundingMetadata"] = {
                "webSearchQueries": [query],
                "groundingChunks": [{"web": {"uri": url, "title": title}} for url, title in sources],
                "searchEntryPoint": {"renderedContent": "<div>search</div>"},
            }
        return {
            "candidates": [candidate],
            "usageMetadata": usage_metadata,
            "modelVersion": ctx.model,
            "responseId": RESPONSE_ID,
        }

    def whole(self, ctx: Context, turn: Turn) -> Any:
        parts: list[dict[str, Any]] = []
        if turn.thinking:
            parts.append({"text": turn.thinking, "thought": True})
        if turn.text:
            text_part: dict[str, Any] = {"text": turn.text}
            if turn.thinking:
                text_part["thoughtSignature"] = GEMINI_SIGNATURE
            parts.append(text_part)
        parts += call_parts(turn, with_ids=len(turn.calls) == 1)
        return self._response(ctx, parts, finish="STOP", usage_metadata=usage(turn), turn=turn)

    def stream_plan(self, ctx: Context, turn: Turn) -> StreamPlan:
        """C.4: each chunk a whole GenerateContentResponse with only the new
        parts; calls complete, one chunk each; the last chunk carries
        finishReason and the authoritative usageMetadata, plus an empty text
        part with a signature as Gemini 3 sends. Earlier chunks carry partial
        usage, which the proxy must not add up."""
        plan = StreamPlan()
        partial = {"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": PROMPT_TOKENS}

        def chunk(parts: list[dict[str, Any]], finish: str | None = None, meta: dict[str, Any] = partial) -> bytes:
            return record(self._response(ctx, parts, finish=finish, usage_metadata=meta, turn=turn))

        for piece in pieces(turn.thinking):
            if piece:
                plan.body.append(chunk([{"text": piece, "thought": True}]))
        for piece in pieces(turn.text):
            if piece:
                plan.body.append(chunk([{"text": piece}]))
        for part in call_parts(turn, with_ids=len(turn.calls) == 1):
            plan.body.append(chunk([part]))
        last: dict[str, Any] = {"text": ""}
        if not turn.calls:
            last["thoughtSignature"] = GEMINI_SIGNATURE
        plan.tail.append(chunk([last], "STOP", usage(turn)))
        return plan

    def stream_error(self, message: str) -> bytes:
        return record({"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}})

    def count_tokens(self, ctx: Context) -> Any:
        return {"totalTokens": COUNT_TOKENS, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": COUNT_TOKENS}]}

    def embed(self, ctx: Context) -> Any:
        if ctx.endpoint.name == "batchEmbedContents":
            return {"embeddings": [{"values": list(EMBEDDING)} for _ in ctx.body["requests"]]}
        return {"embedding": {"values": list(EMBEDDING)}}


def record(data: Any) -> bytes:
    """One SSE record, CRLF-separated like the real API."""
    return f"data: {dumps(data)}\r\n\r\n".encode()
