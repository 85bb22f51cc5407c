"""`ccproxy logs`: read exchange records from the local directory or S3.

ccproxy logs list [--day YYYY-MM-DD] [--limit N]
ccproxy logs show ID [--json]
ccproxy logs tail [--interval S]
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from typing import Any, TextIO

from .stores.logs import DirectorySink, LogSink, S3Sink, log_sink_from_env


def sink_from(args: argparse.Namespace) -> LogSink | None:
    if getattr(args, "dir", None):
        return DirectorySink(args.dir)
    if getattr(args, "bucket", None):
        return S3Sink(args.bucket, args.prefix)
    return log_sink_from_env()


def summary(record: dict[str, Any]) -> str:
    target = record.get("target") or {}
    usage = record.get("usage") or {}
    tokens = f"{usage.get('input_tokens') or 0}/{usage.get('output_tokens') or 0}"
    route = f"{record.get('model') or '?'} -> {target.get('provider', '?')}/{target.get('model', '?')}"
    flags = ("S" if record.get("stream") else "-") + ("C" if record.get("compat") else "-")
    status = str(record.get("status"))
    if record.get("error"):
        status += "!"
    return (
        f"{record.get('received', '')[:19].replace('T', ' ')}  {record.get('id', '')[:12]}  "
        f"{record.get('client_protocol', ''):<6}  {flags}  {status:<4}  {tokens:>11}  {route}"
    )


HEADER = f"{'RECEIVED (UTC)':<19}  {'ID':<12}  {'CLIENT':<6}  SC  {'STAT':<4}  {'TOKENS in/out':>11}  MODEL -> TARGET"


def list_records(sink: LogSink, day: str | None, limit: int, out: TextIO) -> int:
    keys = sink.keys(day)[-limit:]
    print(HEADER, file=out)
    for key in keys:
        print(summary(sink.read(key)), file=out)
    return 0


def _messages(request_text: str | None) -> list[tuple[str, str]]:
    """(role, text) pairs from a captured client request, whatever its protocol."""
    if not request_text:
        return []
    try:
        body = json.loads(request_text)
    except ValueError:
        return [("raw", request_text)]
    if not isinstance(body, dict):
        return []
    out: list[tuple[str, str]] = []
    for message in body.get("messages") or []:
        out.append((str(message.get("role")), _text(message.get("content"), message)))
    for content in body.get("contents") or []:
        out.append((str(content.get("role", "user")), _text(content.get("parts"), content)))
    if "prompt" in body:
        out.append(("user", str(body["prompt"])))
    return out


def _text(content: Any, message: dict[str, Any]) -> str:
    if isinstance(content, str):
        pieces = [content]
    elif isinstance(content, list):
        pieces = []
        for part in content:
            if not isinstance(part, dict):
                continue
            if "text" in part and part.get("type") in (None, "text"):
                pieces.append(str(part["text"]))
            elif part.get("type") == "tool_use" or "functionCall" in part or "function_call" in part:
                call = part.get("functionCall") or part.get("function_call") or part
                pieces.append(f"[call {call.get('name')} {json.dumps(call.get('input', call.get('args', {})))}]")
            elif part.get("type") == "tool_result" or "functionResponse" in part:
                pieces.append(f"[result {json.dumps(part.get('content', part.get('functionResponse')))[:500]}]")
            elif part.get("type") in ("image", "image_url") or "inlineData" in part:
                pieces.append("[image]")
    else:
        pieces = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        pieces.append(
            f"[call {function.get('name')} {arguments if isinstance(arguments, str) else json.dumps(arguments)}]"
        )
    return "\n".join(pieces)


def show(record: dict[str, Any], out: TextIO) -> None:
    width = 100
    target = record.get("target") or {}
    print(summary(record), file=out)
    timings = record.get("timings") or {}
    print(
        f"route {record.get('route')}  group {record.get('group')}  alias {record.get('alias')}  "
        f"target {target.get('protocol')}:{target.get('provider')}/{target.get('model')}  "
        f"key {record.get('key_fingerprint')}",
        file=out,
    )
    print(
        f"first byte upstream {timings.get('upstream_first_byte_ms')} ms, "
        f"client {timings.get('client_first_byte_ms')} ms, done {timings.get('duration_ms')} ms; "
        f"attempts {len(record.get('attempts') or [])}",
        file=out,
    )
    if record.get("error"):
        print(f"error: {record['error']}", file=out)

    def section(title: str, text: str | None) -> None:
        if not text:
            return
        print(f"\n== {title} " + "=" * max(0, width - len(title) - 4), file=out)
        for line in text.splitlines():
            print(textwrap.fill(line, width) if line else "", file=out)

    section("system", record.get("system"))
    if record.get("tools"):
        section("tools", ", ".join(record["tools"]))
    for role, text in _messages(record.get("client_request")):
        section(role, text)
    final = record.get("final") or {}
    section("answer: thinking", final.get("thinking"))
    section("answer", final.get("text"))
    for call in final.get("tool_calls") or []:
        section("answer: tool call", f"{call.get('name')} {call.get('arguments')}")
    if final:
        print(f"\nstop: {final.get('stop_reason')}  usage: {record.get('usage')}", file=out)


def tail(sink: LogSink, interval: float, out: TextIO, rounds: int | None = None) -> int:
    seen = set(sink.keys())
    print(HEADER, file=out, flush=True)
    while rounds is None or rounds > 0:
        time.sleep(interval)
        for key in sink.keys():
            if key not in seen:
                seen.add(key)
                print(summary(sink.read(key)), file=out, flush=True)
        if rounds is not None:
            rounds -= 1
    return 0


def run(args: argparse.Namespace) -> int:
    sink = sink_from(args)
    if sink is None:
        print(
            "ccproxy: no exchange logs configured: set CCPROXY_LOG_DIR or CCPROXY_LOG_BUCKET, or pass --dir / --bucket",
            file=sys.stderr,
        )
        return 2
    if args.action == "list":
        return list_records(sink, args.day, args.limit, sys.stdout)
    if args.action == "show":
        record = sink.find(args.id)
        if record is None:
            print(f"ccproxy: no exchange {args.id!r}", file=sys.stderr)
            return 1
        if args.json:
            json.dump(record, sys.stdout, ensure_ascii=False, indent=2)
            print()
        else:
            show(record, sys.stdout)
        return 0
    return tail(sink, args.interval, sys.stdout)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("logs", help="read the exchange logs (local directory or S3)")
    parser.add_argument("--dir", help="a log directory (default: $CCPROXY_LOG_DIR)")
    parser.add_argument("--bucket", help="an S3 bucket (default: $CCPROXY_LOG_BUCKET)")
    parser.add_argument("--prefix", default="exchanges/", help="the key prefix in the bucket")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="one line per exchange, oldest first")
    listing.add_argument("--day", help="only this day (YYYY-MM-DD, UTC)")
    listing.add_argument("--limit", type=int, default=50)
    one = actions.add_parser("show", help="one exchange, readable")
    one.add_argument("id", help="the exchange id (or its first characters)")
    one.add_argument("--json", action="store_true", help="the raw record")
    follow = actions.add_parser("tail", help="print new exchanges as they arrive")
    follow.add_argument("--interval", type=float, default=2.0)
    parser.set_defaults(run=run, log_level="warning")
