"""`ccproxy logs list / show / tail` over a directory sink and an S3 sink."""

from __future__ import annotations

import json
import os
import subprocess

from ccproxy.exchange import Exchange
from ccproxy.stores.logs import DirectorySink, S3Sink
from ccproxy.unified import Response, Text, ToolCall, Usage

from tests.support.aws import moto_server  # noqa: F401  (fixture)
from tests.support.server import CCPROXY


def sample_record(text: str) -> dict:
    exchange = Exchange(route="POST /v1/messages", client_protocol="claude", group="default", limit=10_000)
    exchange.alias, exchange.model, exchange.stream = "claude-*", "claude-sonnet-4-5", True
    exchange.target = {"provider": "gemini", "model": "gemini-2.5-flash", "protocol": "gemini"}
    exchange.system, exchange.tools = "You are Claude Code.", ["Bash", "Read"]
    exchange.client_request.add(json.dumps({"messages": [{"role": "user", "content": "list the files"}]}).encode())
    exchange.answered(Response(content=[Text(text=text), ToolCall(id="c1", name="Bash", arguments={"command": "ls"})],
                               stop_reason="tool_use", usage=Usage(input_tokens=1200, output_tokens=34)))
    return exchange.record()


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    environment.update(env or {})
    return subprocess.run([str(CCPROXY), "logs", *args], capture_output=True, text=True, timeout=30, env=environment)


def test_list_and_show_from_a_directory(tmp_path):
    first, second = sample_record("I'll look."), sample_record("Looking again.")
    sink = DirectorySink(tmp_path)
    sink.write(first), sink.write(second)
    listed = run("list", env={"CCPROXY_LOG_DIR": str(tmp_path)})
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3 and "claude" in lines[1] and "1200/34" in lines[1]
    assert "claude-sonnet-4-5 -> gemini/gemini-2.5-flash" in lines[1]
    shown = run("--dir", str(tmp_path), "show", first["id"][:10])
    assert shown.returncode == 0, shown.stderr
    for expected in ("You are Claude Code.", "list the files", "I'll look.", 'Bash {"command":"ls"}', "Bash, Read"):
        assert expected in shown.stdout
    raw = run("--dir", str(tmp_path), "show", second["id"], "--json")
    assert json.loads(raw.stdout) == second
    assert run("--dir", str(tmp_path), "show", "nope").returncode == 1


def test_list_from_s3(moto_server):  # noqa: F811
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket="logs-cli-test")
    record = sample_record("From S3.")
    S3Sink("logs-cli-test", "exchanges/", client=s3).write(record)
    listed = run("--bucket", "logs-cli-test", "list", env=moto_server.env)
    assert listed.returncode == 0, listed.stderr
    assert record["id"][:12] in listed.stdout
    shown = run("show", record["id"], env={**moto_server.env, "CCPROXY_LOG_BUCKET": "logs-cli-test"})
    assert "From S3." in shown.stdout


def test_no_sink_configured_says_how_to_configure_one():
    result = run("list")
    assert result.returncode == 2 and "CCPROXY_LOG_DIR" in result.stderr


def test_tail_prints_new_exchanges(tmp_path):
    import threading
    from io import StringIO

    from ccproxy import logview

    sink = DirectorySink(tmp_path)
    out = StringIO()
    record = sample_record("new one")
    writer = threading.Timer(0.05, sink.write, args=(record,))
    writer.start()
    logview.tail(sink, 0.2, out, rounds=2)
    assert record["id"][:12] in out.getvalue()
