"""`make run` as users start it: the console script on the example config."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CCPROXY = Path(sys.executable).parent / "ccproxy"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "state.db")
    process = subprocess.Popen(
        [str(CCPROXY), "serve", "--config", str(ROOT / "ccproxy.example.yaml"), "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("ccproxy serve did not start: " + process.stdout.read().decode())
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_the_example_config_serves_model_listings(served):
    listed = httpx.get(served + "/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["claude-*", "gpt-*", "gemini-*", "*"]


def test_a_provider_without_its_key_is_a_clear_error_at_request_time(served):
    response = httpx.post(
        served + "/v1/messages",
        json={"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 500
    assert "ANTHROPIC_API_KEY" in response.json()["error"]["message"]
    assert response.headers["x-should-retry"] == "false"


def test_serve_refuses_a_public_address_without_access_keys(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    result = subprocess.run(
        [str(CCPROXY), "serve", "--config", str(ROOT / "ccproxy.example.yaml"), "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "access key" in (result.stderr + result.stdout)
