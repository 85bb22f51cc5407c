"""`make run` as users start it: the console script on the example config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.server import CCPROXY, free_port, start_ccproxy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "state.db")
    process, url = start_ccproxy(ROOT / "ccproxy.example.yaml", env, tmp_path)
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


def _output_after_stop(process: subprocess.Popen) -> str:
    process.terminate()
    out, _ = process.communicate(timeout=10)
    return out.decode()


@pytest.mark.parametrize("quiet", [False, True], ids=["default", "quiet"])
def test_serve_prints_one_line_per_request_unless_quiet(tmp_path, quiet):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "state.db")
    options = ["--quiet"] if quiet else []
    process, url = start_ccproxy(ROOT / "ccproxy.example.yaml", env, tmp_path, *options)
    assert httpx.head(url + "/").status_code == 200
    refused = httpx.post(url + "/v1/messages?key=ccp-do-not-print", json={"model": "claude-x"},
                         headers={"anthropic-version": "2023-06-01"})
    assert refused.status_code == 400
    out = _output_after_stop(process)
    lines = [line for line in out.splitlines() if "ccproxy.access" in line]
    if quiet:
        assert lines == []
        return
    assert len(lines) == 2, out
    assert "HEAD / 200" in lines[0]
    assert "POST /v1/messages?key=*** 400 claude" in lines[1] and "max_tokens" in lines[1]
    assert "ccp-do-not-print" not in out
