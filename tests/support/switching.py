"""What the `ccproxy switch` tests share: a config of two groups whose
aliases differ, and a probe of which group a server's /switch serves."""

from __future__ import annotations

import time

import httpx

from tests.fakes import UPSTREAM_MODELS

GROUPS = ("first", "second")
# How long every server may take to follow a switch: a few seconds, by the issue.
FOLLOW_SECONDS = 8.0


def switch_config(upstream_url: str, access_key: str, upstream_key: str) -> dict:
    """Two groups whose aliases differ: `first-*` only in first, `second-*`
    only in second, so which one answers shows which group served."""
    target = f"up/{UPSTREAM_MODELS['openai']}"
    return {
        "providers": {"up": {"protocol": "openai", "base_url": upstream_url + "/v1", "keys": [upstream_key]}},
        "groups": {group: {"models": {f"{group}-*": [target]}} for group in GROUPS},
        "active_group": "first",
        "access_keys": [access_key],
    }


def serving_group(url: str, access_key: str) -> str | None:
    """The group /switch routes to: the one whose alias answers 200 (the
    other group knows no such model: 404)."""
    answered = []
    for group in GROUPS:
        body = {"model": f"{group}-model", "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(url + "/switch/v1/chat/completions", json=body,
                           headers={"authorization": f"Bearer {access_key}"}, timeout=30)
        assert reply.status_code in (200, 404), reply.text
        if reply.status_code == 200:
            answered.append(group)
    # Both, while a switch lands between the two requests.
    return "+".join(answered) or None


def wait_for_group(urls: list[str], group: str, access_key: str) -> list[str | None]:
    """What each server serves, polled until all serve `group` or the deadline passes."""
    deadline = time.monotonic() + FOLLOW_SECONDS
    serving = [serving_group(url, access_key) for url in urls]
    while serving != [group] * len(urls) and time.monotonic() < deadline:
        time.sleep(0.2)
        serving = [serving_group(url, access_key) for url in urls]
    return serving
