"""Capture server: records what a real coding agent sends, and plays a scripted model.

It listens on loopback, records every request (method, path, query, headers with
every credential replaced by "<redacted>", JSON body) in the order received and
answers in the protocol the path implies, streamed when the request asks for it:

* Anthropic: ``POST /v1/messages`` (SSE when ``stream``), ``/v1/messages/count_tokens``,
  ``GET /v1/models`` (with ``anthropic-version``)
* Gemini: ``:generateContent``, ``:streamGenerateContent?alt=sse``, ``:countTokens``,
  ``GET /v1beta/models``
* OpenAI: ``POST /v1/chat/completions`` (SSE when ``stream``), ``GET /v1/models``
* OpenAI Responses: ``POST /v1/responses`` (the whole event sequence when ``stream``),
  ``/v1/responses/compact``, ``/v1/responses/input_tokens``
* anything else: ``HEAD`` -> 200, ``GET`` -> 200 ``{}``, ``POST`` -> 404 (recorded all the same)

The script: the first generate request that offers tools and carries no tool
result gets ONE tool call (the shell tool if offered: Bash, run_shell_command,
bash, exec_command, shell...; else a read tool; Codex's code-mode ``exec`` gets a
script calling ``tools.exec_command``); a request that carries a tool result gets the
final text "done"; any other request (titles, quota checks, tool-less side
requests) gets a short text. When an Anthropic request asks for ``thinking`` the
answer starts with a thinking block with a fake (valid base64) signature; Gemini
answers carry a thought part and a ``thoughtSignature`` when ``thinkingConfig``
asks for thoughts; OpenAI answers carry ``reasoning_content`` in the first delta;
a Responses request with ``reasoning`` gets a reasoning item first (a summary when
``reasoning.summary`` asks, ``encrypted_content`` when ``include`` asks).
The answer's ``model`` echoes the asked-for name.

Two ways to run it (the interpreter must have starlette and uvicorn, e.g.
``.venv/bin/python``):

    # server only, until Ctrl-C; the record is rewritten after every request
    python tests/agents/capture.py --port 8787 --out /tmp/x.json --agent claude-code

    # start the server on a free port, run the agent with {port} substituted in
    # its arguments and in the --env values, stop when it exits
    python tests/agents/capture.py --out tests/agents/claude-code-sonnet.json \
        --agent claude-code --variant sonnet --version "$(claude --version)" \
        --env ANTHROPIC_BASE_URL=http://127.0.0.1:{port} --env ANTHROPIC_MODEL=claude-sonnet-4-5 \
        --secret-env ANTHROPIC_API_KEY=sk-fake \
        -- claude -p "Run echo hello with your Bash tool, then say done" --dangerously-skip-permissions

``--env`` values are recorded in the file's ``env``; ``--secret-env`` values are
set for the agent but recorded as "<redacted>". The agent's environment is the
current one plus those. ``--tool NAME --tool-args JSON`` makes the one tool call
use another tool (e.g. Claude Code's WebSearch). ``record.sh`` beside this file
runs every recording in this folder.

A record: {"agent", "variant", "version", "command", "env", "exit_code",
"requests": [{"method", "path", "query", "headers", "body", "truncated"?}]}.
If the whole file would pass ~400 KB, tool descriptions and system prompt texts
are cut to 2,000 characters and those requests get "truncated": true.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REDACTED = "<redacted>"
SECRET_HEADERS = {
    "authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key",
    "cookie", "set-cookie", "x-anthropic-api-key", "openai-api-key",
}
SECRET_QUERY = {"key", "api_key", "apikey", "access_token", "token"}
FAKE_SIGNATURE = base64.b64encode(b"capture-fake-thinking-signature-0001").decode()
FAKE_THOUGHT_SIGNATURE = base64.b64encode(b"capture-fake-thought-signature-0001").decode()
TRUNCATE_LIMIT = 2000
SIZE_LIMIT = 400_000

SHELL_TOOLS = ("bash", "run_shell_command", "exec_command", "shell", "shell_command", "execute_command", "exec",
               "terminal")
READ_TOOLS = ("read", "read_file", "view", "cat")


# ---------------------------------------------------------------- recording

class Recorder:
    def __init__(self, out: str | None, meta: dict[str, Any], max_tool_calls: int = 1,
                 tool: str | None = None, tool_args: dict | None = None):
        self.out = out
        self.tool, self.tool_args = tool, tool_args
        self.meta = meta
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.tool_calls_left = max_tool_calls

    def add(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)
            self.save()

    def take_tool_call(self) -> bool:
        with self.lock:
            if self.tool_calls_left <= 0:
                return False
            self.tool_calls_left -= 1
            return True

    def document(self) -> dict[str, Any]:
        doc = dict(self.meta)
        doc["requests"] = [dict(r) for r in self.requests]
        text = json.dumps(doc, indent=1, ensure_ascii=False)
        if len(text.encode()) > SIZE_LIMIT:
            doc["requests"] = [truncate_request(r) for r in self.requests]
        return doc

    def save(self) -> None:
        if not self.out:
            return
        tmp = self.out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.document(), fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, self.out)


def _cut(text: Any) -> tuple[Any, bool]:
    if isinstance(text, str) and len(text) > TRUNCATE_LIMIT:
        return text[:TRUNCATE_LIMIT] + f"...[truncated from {len(text)} chars]", True
    return text, False


def truncate_request(entry: dict[str, Any]) -> dict[str, Any]:
    """Cut long tool descriptions and system prompt texts to TRUNCATE_LIMIT chars."""
    body = entry.get("body")
    if not isinstance(body, dict):
        return entry
    body = json.loads(json.dumps(body))
    cut = False

    def desc_walk(node: Any) -> None:  # every "description" string under tools
        nonlocal cut
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "description" and isinstance(v, str):
                    node[k], c = _cut(v)
                    cut |= c
                else:
                    desc_walk(v)
        elif isinstance(node, list):
            for v in node:
                desc_walk(v)

    def text_walk(node: Any) -> None:  # every "text"/"content" string in a system prompt
        nonlocal cut
        if isinstance(node, str):
            return
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("text", "content") and isinstance(v, str):
                    node[k], c = _cut(v)
                    cut |= c
                else:
                    text_walk(v)
        elif isinstance(node, list):
            for v in node:
                text_walk(v)

    desc_walk(body.get("tools"))
    if isinstance(body.get("system"), str):
        body["system"], c = _cut(body["system"])
        cut |= c
    else:
        text_walk(body.get("system"))
    for key in ("systemInstruction", "system_instruction"):
        text_walk(body.get(key))
    gen = body.get("generateContentRequest")
    if isinstance(gen, dict):
        desc_walk(gen.get("tools"))
        text_walk(gen.get("systemInstruction"))
    for m in body.get("messages") or []:
        if isinstance(m, dict) and m.get("role") in ("system", "developer"):
            if isinstance(m.get("content"), str):
                m["content"], c = _cut(m["content"])
                cut |= c
            else:
                text_walk(m.get("content"))
    out = dict(entry)
    out["body"] = body
    if cut:
        out["truncated"] = True
    return out


def redact_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers:
        k = k.lower()
        if k in SECRET_HEADERS or re.search(r"(api[-_]?key|secret|token|auth)", k):
            v = REDACTED
        out[k] = out[k] + ", " + v if k in out else v
    return out


def redact_query(query: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k.lower() in SECRET_QUERY:
            v = REDACTED
        if k in out:
            out[k] = out[k] if isinstance(out[k], list) else [out[k]]
            out[k].append(v)
        else:
            out[k] = v
    return out


def decode_body(raw: bytes, encoding: str) -> Any:
    enc = (encoding or "").lower()
    try:
        if enc == "gzip":
            raw = gzip.decompress(raw)
        elif enc == "deflate":
            raw = zlib.decompress(raw)
    except Exception:  # noqa: BLE001 - keep what we can
        pass
    if not raw:
        return None
    try:
        return json.loads(raw)
    except Exception:  # noqa: BLE001
        try:
            return {"_raw_text": raw.decode()}
        except UnicodeDecodeError:
            return {"_raw_base64": base64.b64encode(raw).decode()}


# ---------------------------------------------------------------- the script

def estimate_tokens(body: Any) -> int:
    return max(1, len(json.dumps(body)) // 4)


def pick_tool(tools: list[tuple[str, dict]]) -> tuple[str, dict] | None:
    """tools: (name, json schema). The shell tool if any, else a read tool, else the first."""
    if not tools:
        return None
    by_name = {n.lower(): (n, s) for n, s in tools}
    for want in SHELL_TOOLS:
        if want in by_name:
            return by_name[want]
    for n, s in tools:
        if any(w in n.lower() for w in ("bash", "shell", "command")):
            return n, s
    for want in READ_TOOLS:
        if want in by_name:
            return by_name[want]
    return tools[0]


def tool_args(schema: dict | None) -> dict:
    schema = schema or {}
    props = schema.get("properties") or {}
    required = schema.get("required") or []
    args: dict[str, Any] = {}
    for name, spec in props.items():
        low = name.lower()
        if low in ("command", "cmd"):
            args[name] = ["bash", "-lc", "echo hello"] if (spec or {}).get("type") == "array" else "echo hello"
        elif low == "description" and (name in required or "command" in props):
            args[name] = "Print hello"
        elif low in ("file_path", "path", "absolute_path", "filepath", "filename"):
            args[name] = os.path.join(os.getcwd(), "hello.txt")
        elif name in required:
            typ = (spec or {}).get("type")
            args[name] = {"integer": 1, "number": 1, "boolean": False, "array": [], "object": {}}.get(typ, "x")
    return args


def example_of(schema: Any, name: str = "") -> Any:
    """A small value that fits a JSON schema (structured-output side requests: titles, routers...)."""
    if not isinstance(schema, dict):
        return "Hello"
    if "enum" in schema and schema["enum"]:
        # "user" ends Gemini CLI's next-speaker check instead of looping
        return "user" if "user" in schema["enum"] else schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_of(schema[key][0], name)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "string")
    typ = (typ or ("object" if "properties" in schema else "string")).lower()
    if typ == "object":
        props = schema.get("properties") or {}
        return {k: example_of(v, k) for k, v in props.items()}
    if typ == "array":
        return [example_of(schema.get("items"), name)]
    if typ in ("integer", "number"):
        return 1
    if typ == "boolean":
        return False
    return "Hello" if name != "title" else "Echo hello"


def json_schema_of(body: dict) -> Any:
    """The structured-output schema a request asks for, or None."""
    oc = body.get("output_config") or {}
    fmt = oc.get("format") or body.get("output_format") or {}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return fmt.get("schema") or {}
    gc = body.get("generationConfig") or {}
    if gc.get("responseMimeType") == "application/json":
        return gc.get("responseJsonSchema") or gc.get("responseSchema") or {}
    tf = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(tf, dict) and tf.get("type") == "json_schema":  # Responses API
        return tf.get("schema") or {}
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        return (rf.get("json_schema") or {}).get("schema") or {}
    if rf.get("type") == "json_object":
        return {}
    return None


class Plan:
    """What to answer: ("tool", name, args) or ("text", text)."""

    def __init__(self, kind: str, text: str = "", name: str = "", args: dict | None = None):
        self.kind, self.text, self.name, self.args = kind, text, name, args or {}


def decide(rec: Recorder, tools: list[tuple[str, dict]], has_tool_result: bool, schema: Any = None) -> Plan:
    if schema is not None:
        return Plan("text", json.dumps(example_of(schema)))
    if has_tool_result:
        return Plan("text", "done")
    if tools:
        pick = pick_tool(tools)
        if rec.tool:  # --tool: call this one (case-insensitive) when the request offers it
            pick = next(((n, sch) for n, sch in tools if n.lower() == rec.tool.lower()), None)
        if pick and rec.take_tool_call():
            args = rec.tool_args if rec.tool_args is not None else tool_args(pick[1])
            return Plan("tool", name=pick[0], args=args)
        return Plan("text", "done")
    return Plan("text", "Hello")


def sse(event: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


async def stream_of(chunks: list[bytes]):
    for c in chunks:
        yield c
        await asyncio.sleep(0.005)


SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


# ---------------------------------------------------------------- Anthropic

def anthropic_tools(body: dict) -> list[tuple[str, dict]]:
    out = []
    for t in body.get("tools") or []:
        if isinstance(t, dict) and "input_schema" in t and t.get("name"):
            out.append((t["name"], t.get("input_schema") or {}))
    return out


def anthropic_has_tool_result(body: dict) -> bool:
    msgs = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") != "system"]
    if not msgs:
        return False
    last = msgs[-1]
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def anthropic_answer(rec: Recorder, body: dict) -> Response:
    model = body.get("model") or "claude-sonnet-4-5"
    plan = decide(rec, anthropic_tools(body), anthropic_has_tool_result(body), json_schema_of(body))
    thinking = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") in ("enabled", "adaptive")
    blocks: list[dict] = []
    if thinking:
        blocks.append({"type": "thinking", "thinking": "The user wants me to act; I will do it.", "signature": FAKE_SIGNATURE})
    if plan.kind == "tool":
        blocks.append({"type": "text", "text": "I'll run it."})
        blocks.append({"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": plan.name, "input": plan.args})
        stop = "tool_use"
    else:
        blocks.append({"type": "text", "text": plan.text})
        stop = "end_turn"
    in_tok = estimate_tokens(body)
    msg_id = "msg_" + uuid.uuid4().hex[:24]
    usage = {"input_tokens": in_tok, "output_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if not body.get("stream"):
        return JSONResponse({
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": stop, "stop_sequence": None, "usage": usage,
        })
    chunks = [sse("message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": dict(usage, output_tokens=1)}})]
    chunks.append(sse("ping", {"type": "ping"}))
    for i, b in enumerate(blocks):
        if b["type"] == "thinking":
            chunks.append(sse("content_block_start", {"type": "content_block_start", "index": i,
                                                      "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
            chunks.append(sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                      "delta": {"type": "thinking_delta", "thinking": b["thinking"]}}))
            chunks.append(sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                      "delta": {"type": "signature_delta", "signature": b["signature"]}}))
        elif b["type"] == "text":
            chunks.append(sse("content_block_start", {"type": "content_block_start", "index": i,
                                                      "content_block": {"type": "text", "text": ""}}))
            chunks.append(sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                      "delta": {"type": "text_delta", "text": b["text"]}}))
        else:
            chunks.append(sse("content_block_start", {"type": "content_block_start", "index": i,
                                                      "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}))
            chunks.append(sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                      "delta": {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}}))
        chunks.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
    chunks.append(sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                        "usage": {"input_tokens": in_tok, "output_tokens": 20,
                                                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}))
    chunks.append(sse("message_stop", {"type": "message_stop"}))
    return StreamingResponse(stream_of(chunks), media_type="text/event-stream", headers=SSE_HEADERS)


def anthropic_models() -> dict:
    ids = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"]
    return {"data": [{"type": "model", "id": i, "display_name": i, "created_at": "2025-09-29T00:00:00Z"} for i in ids],
            "has_more": False, "first_id": ids[0], "last_id": ids[-1]}


# ---------------------------------------------------------------- Gemini

def gemini_tools(body: dict) -> list[tuple[str, dict]]:
    out = []
    for t in body.get("tools") or []:
        for fd in (t or {}).get("functionDeclarations") or (t or {}).get("function_declarations") or []:
            schema = fd.get("parametersJsonSchema") or fd.get("parameters") or {}
            out.append((fd.get("name"), schema))
    return out


def gemini_has_tool_result(body: dict) -> bool:
    contents = body.get("contents") or []
    if not contents:
        return False
    return any("functionResponse" in p or "function_response" in p for p in (contents[-1].get("parts") or []))


def gemini_parts(rec: Recorder, body: dict, model: str = "") -> list[dict]:
    plan = decide(rec, gemini_tools(body), gemini_has_tool_result(body), json_schema_of(body))
    gc = body.get("generationConfig") or {}
    tc = gc.get("thinkingConfig") or {}
    parts: list[dict] = []
    if tc.get("includeThoughts"):
        parts.append({"text": "**Planning** I will do what was asked.", "thought": True})
    if plan.kind == "tool":
        call: dict[str, Any] = {"name": plan.name, "args": plan.args}
        if re.match(r"gemini-[3-9]", model):  # Gemini 3 answers carry call ids; 2.x do not
            call["id"] = "call_" + uuid.uuid4().hex[:8]
        parts.append({"functionCall": call, "thoughtSignature": FAKE_THOUGHT_SIGNATURE})
    else:
        parts.append({"text": plan.text})
    return parts


def gemini_response(model: str, parts: list[dict], body: dict) -> dict:
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": estimate_tokens(body), "candidatesTokenCount": 10, "totalTokenCount": estimate_tokens(body) + 10},
        "modelVersion": model, "responseId": uuid.uuid4().hex[:20],
    }


def gemini_models() -> dict:
    ids = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"]
    return {"models": [{"name": f"models/{i}", "version": "001", "displayName": i, "inputTokenLimit": 1048576,
                        "outputTokenLimit": 65536,
                        "supportedGenerationMethods": ["generateContent", "countTokens", "streamGenerateContent"]}
                       for i in ids]}


# ---------------------------------------------------------------- OpenAI

def openai_tools(body: dict) -> list[tuple[str, dict]]:
    out = []
    for t in body.get("tools") or []:
        fn = (t or {}).get("function") or {}
        if fn.get("name"):
            out.append((fn["name"], fn.get("parameters") or {}))
    return out


def openai_has_tool_result(body: dict) -> bool:
    msgs = body.get("messages") or []
    return bool(msgs) and msgs[-1].get("role") == "tool"


def openai_answer(rec: Recorder, body: dict) -> Response:
    model = body.get("model") or "gpt-4.1"
    plan = decide(rec, openai_tools(body), openai_has_tool_result(body), json_schema_of(body))
    cid, created = "chatcmpl-" + uuid.uuid4().hex[:20], int(time.time())
    in_tok = estimate_tokens(body)
    usage = {"prompt_tokens": in_tok, "completion_tokens": 10, "total_tokens": in_tok + 10}
    call = None
    if plan.kind == "tool":
        call = {"id": "call_" + uuid.uuid4().hex[:20], "type": "function",
                "function": {"name": plan.name, "arguments": json.dumps(plan.args)}}
    if not body.get("stream"):
        msg: dict[str, Any] = {"role": "assistant", "content": plan.text if call is None else None,
                               "reasoning_content": "Thinking about it."}
        if call:
            msg["tool_calls"] = [call]
        return JSONResponse({"id": cid, "object": "chat.completion", "created": created, "model": model,
                             "choices": [{"index": 0, "message": msg, "logprobs": None,
                                          "finish_reason": "tool_calls" if call else "stop"}],
                             "usage": usage})
    want_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        c: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if want_usage:
            c["usage"] = None
        return sse(None, c)

    chunks = [chunk({"role": "assistant", "content": None if call else ""})]
    chunks.append(chunk({"reasoning_content": "Thinking about it."}))
    if call:
        chunks.append(chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                             "function": {"name": call["function"]["name"], "arguments": ""}}]}))
        chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}))
        chunks.append(chunk({}, "tool_calls"))
    else:
        chunks.append(chunk({"content": plan.text}))
        chunks.append(chunk({}, "stop"))
    if want_usage:
        chunks.append(sse(None, {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                 "choices": [], "usage": usage}))
    chunks.append(b"data: [DONE]\n\n")
    return StreamingResponse(stream_of(chunks), media_type="text/event-stream", headers=SSE_HEADERS)


def openai_models() -> dict:
    ids = ["gpt-4.1", "gpt-4.1-mini", "capture-model"]
    return {"object": "list", "data": [{"id": i, "object": "model", "created": 1700000000, "owned_by": "capture"} for i in ids]}


# ---------------------------------------------------------------- OpenAI Responses

FAKE_ENCRYPTED = "gAAAAAB" + base64.urlsafe_b64encode(b"capture-fake-encrypted-reasoning-0001").decode()
RESPONSES_OUTPUTS = ("function_call_output", "custom_tool_call_output", "local_shell_call_output",
                     "shell_call_output", "apply_patch_call_output")


def responses_tool_defs(body: dict) -> list[tuple[dict, str | None]]:
    """(tool, namespace) for every function and custom (freeform) tool offered:
    the top-level `tools`, and those an `additional_tools` input item declares
    (Codex's code mode), namespaces opened."""
    found: list[tuple[dict, str | None]] = []

    def walk(tools: Any, namespace: str | None) -> None:
        for t in tools if isinstance(tools, list) else []:
            if not isinstance(t, dict):
                continue
            if t.get("type") == "namespace":
                walk(t.get("tools"), t.get("name"))
            elif t.get("type") in ("function", "custom") and t.get("name"):
                found.append((t, namespace))

    walk(body.get("tools"), None)
    for item in body.get("input") if isinstance(body.get("input"), list) else []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            walk(item.get("tools"), None)
    return found


def responses_tools(body: dict) -> list[tuple[str, dict]]:
    return [(t["name"], t.get("parameters") or {}) for t, _ in responses_tool_defs(body)]


def responses_has_tool_result(body: dict) -> bool:
    """A tool output after the last user message."""
    items = body.get("input")
    if not isinstance(items, list):
        return False
    for item in reversed(items):
        if not isinstance(item, dict):
            continue
        if item.get("type") in RESPONSES_OUTPUTS:
            return True
        if item.get("role") == "user":
            return False
    return False


def custom_input(tool: dict, args: dict) -> str:
    """A freeform tool's raw input: JavaScript for Codex's code-mode `exec`
    (it reaches the shell as `tools.exec_command`), else the args' `input`."""
    if tool["name"] == "exec" and "tools.exec_command" in (tool.get("description") or ""):
        return 'const r = await tools.exec_command({cmd: "echo hello"});\ntext(r.output);'
    return str(args.get("input", ""))


def responses_output(rec: Recorder, body: dict) -> list[dict]:
    """The answer's output items: reasoning (for a reasoning request), then a
    message or the one function call."""
    plan = decide(rec, responses_tools(body), responses_has_tool_result(body), json_schema_of(body))
    items: list[dict] = []
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") != "none":
        item: dict[str, Any] = {"id": "rs_" + uuid.uuid4().hex, "type": "reasoning", "summary": []}
        if reasoning.get("summary") not in (None, "none"):
            item["summary"] = [{"type": "summary_text", "text": "**Planning** I will do what was asked."}]
        if "reasoning.encrypted_content" in (body.get("include") or []):
            item["encrypted_content"] = FAKE_ENCRYPTED
        items.append(item)
    if plan.kind == "tool":
        tool, namespace = next(((t, ns) for t, ns in responses_tool_defs(body) if t["name"] == plan.name))
        call_id = "call_" + uuid.uuid4().hex[:24]
        where = {"namespace": namespace} if namespace else {}
        if tool.get("type") == "custom":
            # no status: the API's custom_tool_call item has none, and Codex sends back what it got
            items.append({"id": "ctc_" + uuid.uuid4().hex, "type": "custom_tool_call", "call_id": call_id, **where,
                          "name": plan.name, "input": custom_input(tool, plan.args)})
        else:
            items.append({"id": "fc_" + uuid.uuid4().hex, "type": "function_call", "status": "completed",
                          "arguments": json.dumps(plan.args), "call_id": call_id, **where, "name": plan.name})
    else:
        items.append({"id": "msg_" + uuid.uuid4().hex, "type": "message", "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": plan.text}]})
    return items


def responses_object(body: dict, rid: str, created: int, status: str, output: list[dict],
                     usage: dict | None) -> dict:
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    return {
        "id": rid, "object": "response", "created_at": created, "status": status, "background": False,
        "completed_at": created + 1 if status == "completed" else None, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "model": body.get("model") or "gpt-5", "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True), "previous_response_id": None,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": None, "service_tier": "default", "store": body.get("store", True),
        "temperature": 1.0, "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [], "top_logprobs": 0,
        "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": body.get("metadata") or {},
    }


def responses_events(index: int, item: dict) -> list[dict]:
    """One output item's events, from output_item.added to output_item.done (no sequence numbers yet)."""
    iid, where = item["id"], {"item_id": item["id"], "output_index": index}
    if item["type"] == "reasoning":
        events = [{"type": "response.output_item.added", "output_index": index,
                   "item": {"id": iid, "type": "reasoning", "summary": []}}]
        for n, part in enumerate(item["summary"]):
            events += [
                {"type": "response.reasoning_summary_part.added", **where, "summary_index": n,
                 "part": {"type": "summary_text", "text": ""}},
                {"type": "response.reasoning_summary_text.delta", **where, "summary_index": n, "delta": part["text"]},
                {"type": "response.reasoning_summary_text.done", **where, "summary_index": n, "text": part["text"]},
                {"type": "response.reasoning_summary_part.done", **where, "summary_index": n, "part": part},
            ]
    elif item["type"] == "message":
        part = item["content"][0]
        at = {**where, "content_index": 0}
        events = [
            {"type": "response.output_item.added", "output_index": index,
             "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **at, "part": {**part, "text": ""}},
            *({"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
              for piece in re.findall(r".{1,3}", part["text"], re.S)),
            {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []},
            {"type": "response.content_part.done", **at, "part": part},
        ]
    else:
        key, event = (("arguments", "response.function_call_arguments") if item["type"] == "function_call"
                      else ("input", "response.custom_tool_call_input"))
        text = item[key]
        events = [{"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "status": "in_progress", key: ""}}]
        events += [{"type": f"{event}.delta", **where, "delta": text[i:i + 8]} for i in range(0, len(text), 8)]
        done = {"type": f"{event}.done", **where, key: text}
        if key == "arguments":
            done["name"] = item["name"]
        events.append(done)
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return events


def responses_answer(rec: Recorder, body: dict) -> Response:
    output = responses_output(rec, body)
    rid, created = "resp_" + uuid.uuid4().hex, int(time.time())
    in_tok = estimate_tokens(body)
    reasoning_tokens = 8 if output[0]["type"] == "reasoning" else 0
    usage = {"input_tokens": in_tok, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 20,
             "output_tokens_details": {"reasoning_tokens": reasoning_tokens}, "total_tokens": in_tok + 20}
    if not body.get("stream"):
        return JSONResponse(responses_object(body, rid, created, "completed", output, usage))
    opening = responses_object(body, rid, created, "in_progress", [], None)
    events = [{"type": "response.created", "response": opening}, {"type": "response.in_progress", "response": opening}]
    for i, item in enumerate(output):
        events += responses_events(i, item)
    events.append({"type": "response.completed",
                   "response": responses_object(body, rid, created, "completed", output, usage)})
    chunks = [sse(e["type"], {"type": e["type"], "sequence_number": n, **e}) for n, e in enumerate(events)]
    return StreamingResponse(stream_of(chunks), media_type="text/event-stream", headers=SSE_HEADERS)


def responses_compact(body: dict) -> dict:
    """POST /responses/compact: the history replaced by one summary message."""
    text = "Summary: the user asked to run `echo hello`; it printed hello; done."
    return {"id": "resp_" + uuid.uuid4().hex, "object": "response.compaction", "created_at": int(time.time()),
            "output": [{"id": "msg_" + uuid.uuid4().hex, "type": "message", "status": "completed", "role": "user",
                        "content": [{"type": "input_text", "text": text}]}],
            "usage": {"input_tokens": estimate_tokens(body), "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": estimate_tokens(body) + 20}}


# ---------------------------------------------------------------- app

def make_app(rec: Recorder) -> Starlette:
    async def handle(request: Request) -> Response:
        raw = await request.body()
        body = decode_body(raw, request.headers.get("content-encoding", ""))
        path = request.url.path
        entry = {
            "method": request.method,
            "path": path,
            "query": redact_query(request.url.query),
            "headers": redact_headers(request.headers.items()),
            "body": body,
        }
        rec.add(entry)
        method = request.method
        if method == "HEAD":
            return Response(status_code=200)
        b = body if isinstance(body, dict) else {}
        if method == "POST":
            if path.endswith("/messages/count_tokens"):
                return JSONResponse({"input_tokens": estimate_tokens(b)})
            if path.endswith("/messages"):
                return anthropic_answer(rec, b)
            if path.endswith("/chat/completions"):
                return openai_answer(rec, b)
            if path.endswith("/responses"):
                return responses_answer(rec, b)
            if path.endswith("/responses/compact"):
                return JSONResponse(responses_compact(b))
            if path.endswith("/responses/input_tokens"):
                return JSONResponse({"object": "response.input_tokens", "input_tokens": estimate_tokens(b)})
            m = re.search(r"/models/([^/:]+):(\w+)$", path)
            if m:
                model, action = m.group(1), m.group(2)
                if action == "countTokens":
                    return JSONResponse({"totalTokens": estimate_tokens(b)})
                if action in ("generateContent", "streamGenerateContent"):
                    parts = gemini_parts(rec, b, model)
                    if action == "generateContent":
                        return JSONResponse(gemini_response(model, parts, b))
                    chunks = []
                    for i, p in enumerate(parts):
                        r = gemini_response(model, [p], b)
                        if i < len(parts) - 1:
                            del r["candidates"][0]["finishReason"]
                        chunks.append(sse(None, r))
                    if request.query_params.get("alt") == "sse":
                        return StreamingResponse(stream_of(chunks), media_type="text/event-stream", headers=SSE_HEADERS)
                    # without alt=sse the API streams one JSON array
                    arr = [json.loads(c.decode()[len("data: "):]) for c in chunks]
                    return JSONResponse(arr)
                if action in ("embedContent", "batchEmbedContents"):
                    return JSONResponse({"embedding": {"values": [0.0] * 8}})
            return JSONResponse({"error": {"message": f"capture: no route for POST {path}"}}, status_code=404)
        if method == "GET":
            if re.search(r"/v1(beta)?/models/?$", path) and ("/v1beta/" in path or request.query_params.get("key")
                                                            or "x-goog-api-key" in request.headers):
                return JSONResponse(gemini_models())
            if re.search(r"/models/?$", path):
                if "anthropic-version" in request.headers:
                    return JSONResponse(anthropic_models())
                return JSONResponse(openai_models())
            m = re.search(r"/models/([^/]+)$", path)
            if m:
                if "anthropic-version" in request.headers:
                    return JSONResponse({"type": "model", "id": m.group(1), "display_name": m.group(1),
                                         "created_at": "2025-09-29T00:00:00Z"})
                return JSONResponse({"id": m.group(1), "object": "model", "created": 1700000000, "owned_by": "capture"})
            return JSONResponse({})
        return JSONResponse({})

    methods = ["GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", handle, methods=methods)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--out", help="the JSON record, rewritten after every request")
    ap.add_argument("--agent", default="unknown")
    ap.add_argument("--variant", default="")
    ap.add_argument("--version", default="")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the agent, recorded ({port} substituted)")
    ap.add_argument("--secret-env", action="append", default=[], help="NAME=VALUE for the agent, recorded as <redacted>")
    ap.add_argument("--max-tool-calls", type=int, default=1)
    ap.add_argument("--tool", help="name of the tool to call (default: the shell tool, else a read tool)")
    ap.add_argument("--tool-args", help="JSON arguments for that call (default: made from its schema)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds the agent may run")
    ap.add_argument("--cwd", help="working directory for the agent")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the agent command ({port} substituted)")
    args = ap.parse_args(argv)

    port = args.port or free_port()
    raw_cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    cmd = [c.replace("{port}", str(port)) for c in raw_cmd]
    env_rec = {}
    for kv in args.env:
        k, _, v = kv.partition("=")
        env_rec[k] = v.replace("{port}", str(port))
    env_secret = {}
    for kv in args.secret_env:
        k, _, v = kv.partition("=")
        env_secret[k] = v
    meta: dict[str, Any] = {"agent": args.agent, "variant": args.variant, "version": args.version,
                            "command": shlex.join(cmd) if cmd else "",
                            "env": dict(env_rec, **{k: REDACTED for k in env_secret})}
    rec = Recorder(args.out, meta, args.max_tool_calls, args.tool,
                   json.loads(args.tool_args) if args.tool_args else None)

    import uvicorn

    config = uvicorn.Config(make_app(rec), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if not cmd:
        print(f"capture: listening on http://127.0.0.1:{port}", file=sys.stderr)
        server.run()
        return 0

    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    env = dict(os.environ, **env_rec, **env_secret)
    print(f"capture: port {port}; running {meta['command']}", file=sys.stderr)
    rc = 0
    try:
        proc = subprocess.run(cmd, env=env, cwd=args.cwd, timeout=args.timeout, stdin=subprocess.DEVNULL)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        print("capture: agent timed out", file=sys.stderr)
        rc = 124
    finally:
        time.sleep(0.5)
        server.should_exit = True
        thread.join(timeout=5)
        rec.meta["exit_code"] = rc
        rec.save()
    print(f"capture: {len(rec.requests)} requests recorded, agent exit {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
