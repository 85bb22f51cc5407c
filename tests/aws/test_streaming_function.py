"""The streaming function's entry command, started the way the Lambda Web
Adapter starts it (functions/run.sh with AWS_LWA_PORT), read event by event
over HTTP: the first event must arrive while the upstream is still going."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port, wait_until_healthy

from .conftest import ACCESS_KEY, ROOT

RUN_SH = ROOT / "functions" / "run.sh"
STALL = 20.0  # seconds the upstream goes quiet after its first records


@pytest.fixture
def streaming_function(deployment, tmp_path):
    """run.sh as the adapter runs it: Lambda's variables, AWS_LWA_PORT, and
    the adapter's readiness check polling /health until it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCPROXY_", "AWS_LWA_"))}
    env.update(deployment.env)
    env.update({
        "AWS_LWA_PORT": str(port),
        "AWS_LWA_READINESS_CHECK_PATH": "/health",
        "AWS_LWA_INVOKE_MODE": "response_stream",
        "LAMBDA_TASK_ROOT": str(ROOT / "functions"),
        "AWS_LAMBDA_FUNCTION_NAME": "ccproxy-StreamingFunction-test",  # on Lambda: JSON logs, EMF metrics
        # `python` is the runtime's interpreter on Lambda; here, this venv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })  # fmt: skip
    log = (tmp_path / "function.log").open("w+")
    process = subprocess.Popen([str(RUN_SH)], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def printed() -> str:
        log.seek(0)
        return log.read()

    wait_until_healthy(process, url, printed, timeout=30)

    class Function:
        def output(self) -> str:
            log.flush()
            return (tmp_path / "function.log").read_text()

    function = Function()
    function.url = url  # type: ignore[attr-defined]
    yield function
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    log.close()


# (path, headers, body, upstream protocol the alias routes to). The stalled
# upstreams send text in their first records (a Claude upstream's first
# records, message_start and an empty content block, carry none).
CASES = {
    "claude-client-on-gemini": (
        "/v1/messages",
        {"x-api-key": ACCESS_KEY, "anthropic-version": "2023-06-01"},
        {"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": True,
         "messages": [{"role": "user", "content": "hello"}]},
        "gemini",
    ),
    "openai-client-on-ollama": (
        "/v1/chat/completions",
        {"authorization": f"Bearer {ACCESS_KEY}"},
        {"model": "qwen3:8b", "stream": True, "messages": [{"role": "user", "content": "hello"}]},
        "ollama",
    ),
    "gemini-client-on-openai": (
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        {"x-goog-api-key": ACCESS_KEY},
        {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]},
        "openai",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_the_first_event_arrives_before_the_upstream_has_finished(case, streaming_function, upstreams):
    path, headers, body, upstream = CASES[case]
    fake = upstreams[upstream]
    fake.script("stall", seconds=STALL)
    # What the adapter adds to every request it forwards.
    headers = {
        **headers,
        "x-amzn-lambda-context": json.dumps({"request_id": f"req-{case}", "deadline": 0}),
        "x-amzn-request-context": json.dumps({"requestId": f"url-{case}"}),
    }
    started = time.monotonic()
    with httpx.Client(timeout=httpx.Timeout(10, read=STALL + 10)) as client:
        with client.stream("POST", streaming_function.url + path, headers=headers, json=body) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            # Keep the line iterator referenced: dropping it mid-stream closes
            # the connection, which is the hang-up checked further down.
            lines = response.iter_lines()
            first_data = next(json.loads(line[5:]) for line in lines if line.startswith("data:"))
            waited = time.monotonic() - started
            # The upstream is still stalled (it would finish only after STALL s):
            # this event was streamed, not buffered until the end.
            assert first_data
            assert waited < STALL / 2, f"the first event took {waited:.1f}s"
            assert len(fake.requests) == 1 and fake.hung_up == 0, streaming_function.output()
            response.close()
    # The client hung up: the function stops the upstream instead of waiting it out.
    deadline = time.monotonic() + 10
    while fake.hung_up == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.hung_up == 1


def test_the_function_logs_json_with_the_request_id(streaming_function, upstreams, deployment):
    """A refused request logs why, as one JSON line carrying the adapter's ids."""
    deployment.put_secret({"providers": {}, "access_keys": []})
    headers = {
        "authorization": f"Bearer {ACCESS_KEY}",
        "x-amzn-lambda-context": json.dumps({"request_id": "req-json-log"}),
        "x-amzn-request-context": json.dumps({"requestId": "url-json-log"}),
    }
    response = httpx.post(streaming_function.url + "/v1/chat/completions", headers=headers, timeout=10,
                          json={"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]})
    # The function reads the secret on its first request (not at start),
    # so it sees the emptied one.
    assert response.status_code == 503, response.text
    lines = [json.loads(line) for line in streaming_function.output().splitlines() if line.startswith("{")]
    refusals = [line for line in lines if "refusing every request" in line.get("message", "")]
    assert refusals, streaming_function.output()
    assert refusals[0]["level"] == "ERROR" and refusals[0]["service"] == "ccproxy"
    assert refusals[0]["function_request_id"] == "req-json-log"
    assert refusals[0]["correlation_id"] == "url-json-log"
    assert refusals[0]["cold_start"] is True
    # The access log line: its fields as keys of their own, with the reason.
    [access] = [line for line in lines if "access" in line]
    assert access["message"].startswith("POST /v1/chat/completions 503")
    assert access["access"]["status"] == 503 and "no access key" in access["access"]["reason"]
    assert access["function_request_id"] == "req-json-log" and access["level"] == "INFO"
