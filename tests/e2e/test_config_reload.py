"""`ccproxy serve` follows its config file: an edit serves without a
restart; a broken file is refused, logged, and the config before it goes on
serving."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import yaml

from tests.support.server import start_ccproxy


def config(*aliases: str, **extra) -> str:
    return yaml.safe_dump({
        "providers": {"local": {"protocol": "ollama", "base_url": "http://127.0.0.1:9"}},
        "groups": {"default": {"models": {alias: ["local/m"] for alias in aliases}}},
        **extra,
    })


def listed(url: str) -> list[str]:
    return [m["id"] for m in httpx.get(url + "/v1/models", timeout=5).json()["data"]]


def wait_for(url: str, expected: list[str], seconds: float = 8) -> list[str]:
    deadline = time.monotonic() + seconds
    found = listed(url)
    while found != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        found = listed(url)
    return found


def write(path: Path, text: str) -> None:
    """As an editor saves: a new file renamed over the old one."""
    fresh = path.with_suffix(".tmp")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_an_edited_config_serves_and_a_broken_one_is_refused(tmp_path):
    path = tmp_path / "ccproxy.yaml"
    path.write_text(config("first-*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "state.db")
    process, url = start_ccproxy(path, env, tmp_path)
    try:
        assert listed(url) == ["first-*"]

        write(path, config("second-*", "third-*"))
        assert wait_for(url, ["second-*", "third-*"]) == ["second-*", "third-*"]

        write(path, "groups: [this is: not: yaml")
        write_time = time.monotonic()
        # Held for longer than a reload takes: the old config keeps serving.
        while time.monotonic() - write_time < 2.5:
            assert listed(url) == ["second-*", "third-*"]
            time.sleep(0.2)

        write(path, config("fourth-*", active_grup="default"))  # a misspelt key
        time.sleep(2.5)
        assert listed(url) == ["second-*", "third-*"]

        path.write_text(config("fifth-*"))  # written in place, as `echo > file` does
        assert wait_for(url, ["fifth-*"]) == ["fifth-*"]
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert "config not reloaded" in output and "not valid YAML" in output
    assert "active_grup: unknown key" in output
    assert output.count("config reloaded from") == 2
