"""Failover and cooldowns through the running proxy, and rotation shared by
two server processes (SQLite, and DynamoDB on moto's server)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from ccproxy.app import Settings, create_app
from ccproxy.config import parse
from ccproxy.stores.secrets import NoSecrets
from ccproxy.stores.state import MemoryStateStore

from tests.fakes import FakeUpstream, scenarios
from tests.support.aws import moto_server  # noqa: F401  (fixture)
from tests.support.server import BackgroundServer, start_ccproxy

from .drivers import ACCESS_KEY, QUESTION


@pytest.fixture(scope="module")
def pair():
    """A proxy whose aliases go to a Claude fake first and a Gemini fake second."""
    first, second = FakeUpstream("claude", key="k-first"), FakeUpstream("gemini", key="k-second")
    servers = [BackgroundServer(first.app).start(), BackgroundServer(second.app).start()]
    config = parse(
        {
            "providers": {
                "first": {"protocol": "claude", "base_url": servers[0].url + "/v1", "keys": ["k-first"], "timeout": 1},
                "second": {"protocol": "gemini", "base_url": servers[1].url + "/v1beta", "keys": ["k-second"]},
            },
            "groups": {
                "default": {"models": {"pair": ["first/claude-m", "second/gemini-m"], "solo": ["first/claude-m"]}},
                "strict": {"models": {"pair": ["first/claude-m", "second/gemini-m"]}},
            },
            "access_keys": [ACCESS_KEY],
        },
        "test",
    )
    app = create_app(Settings(config=config, secrets=NoSecrets()))
    proxy = BackgroundServer(app).start()
    yield proxy.url, first, second, app, config
    for server in (*servers, proxy):
        server.stop()


@pytest.fixture
def fresh(pair):
    url, first, second, app, config = pair
    first.reset(), second.reset()
    app.state.proxy.rotation.state = MemoryStateStore()
    app.state.proxy.rotation._views.clear()  # what the last test's cooldowns looked like
    app.state.proxy.rotation.clock = time.time
    config.retries = 2
    yield pair
    app.state.proxy.rotation.clock = time.time
    assert first.violations == [] and second.violations == []


def ask(url: str, model: str = "pair", stream: bool = False, prefix: str = ""):
    client = openai.OpenAI(base_url=url + prefix + "/v1", api_key=ACCESS_KEY, max_retries=0)
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}], stream=True))
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}])
    return answer.choices[0].message.content


@pytest.mark.parametrize("failure", ["rate_limit", "server_error", "overloaded", "hang"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_first_target_still_gives_the_answer_from_the_second(fresh, failure, stream):
    url, first, second, _, _ = fresh
    first.script(failure, **({"seconds": 5.0} if failure == "hang" else {}))
    started = time.monotonic()
    assert ask(url, stream=stream) == scenarios.TEXT
    assert len(first.requests) == 1 and len(second.requests) == 1
    assert time.monotonic() - started < 4, "a hanging upstream must time out, not hold the client"


def test_a_key_cooled_by_429_is_skipped_until_its_time_runs_out(fresh):
    url, first, second, app, _ = fresh
    first.script("rate_limit", retry_after=1)
    assert ask(url) == scenarios.TEXT          # first failed over to second; first now cooling
    for _ in range(3):
        assert ask(url) == scenarios.TEXT
    assert len(first.requests) == 1, "a cooling key was tried again"
    rotation = app.state.proxy.rotation
    rotation.clock = lambda: time.time() + 1.2  # its second has passed, on the rotation's own clock
    rotation._views.clear()  # what this process last read of the cooldowns, a moment ago
    ask(url), ask(url)
    assert len(first.requests) == 2, "the key did not come back after its cooldown"


def test_every_key_cooling_answers_429_with_retry_after(fresh):
    url, first, _, _, _ = fresh
    first.script("rate_limit", retry_after=30)
    response = httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {ACCESS_KEY}"},
                          json={"model": "solo", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429 and response.headers["retry-after"] == "30"
    again = httpx.post(url + "/v1/messages", headers={"x-api-key": ACCESS_KEY, "anthropic-version": "2023-06-01"},
                       json={"model": "solo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert again.status_code == 429
    assert again.json()["error"]["type"] == "rate_limit_error"
    assert 28 <= int(again.headers["retry-after"]) <= 30
    assert len(first.requests) == 1, "a cooling key must not be called"


def test_a_single_entry_that_fails_once_is_tried_again_next_time(fresh):
    """With nowhere else to go, resting the entry would only turn the next
    requests away unanswered."""
    url, first, _, _, _ = fresh
    first.script("server_error")
    with pytest.raises(openai.InternalServerError):
        ask(url, model="solo")
    assert ask(url, model="solo") == scenarios.TEXT
    assert len(first.requests) == 2


def test_a_server_error_cools_an_entry_when_the_pool_has_another(fresh):
    url, first, second, app, _ = fresh
    first.script("server_error")
    assert ask(url) == scenarios.TEXT  # failed over to the second
    reasons = [c.reason for c in app.state.proxy.rotation.state.cooldowns(time.time())]
    assert reasons == ["failing (500)"]


def test_a_bad_request_never_cools_a_key(fresh):
    url, first, _, app, _ = fresh
    response = httpx.post(url + "/v1/messages", headers={"x-api-key": ACCESS_KEY, "anthropic-version": "2023-06-01"},
                          json={"model": "solo", "max_tokens": 5, "messages": [{"role": "assistant", "content": "hi"}]})
    assert response.status_code == 400  # the fake refuses a first turn from the assistant
    assert app.state.proxy.rotation.state.cooldowns(time.time()) == []
    first.violations.clear()


def test_every_entry_failing_answers_503_not_a_rate_limit(fresh):
    url, first, second, _, _ = fresh
    first.script("server_error")
    second.script("server_error")
    with pytest.raises(openai.InternalServerError):
        ask(url)
    response = httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {ACCESS_KEY}"},
                          json={"model": "pair", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
    assert "failing" in response.json()["error"]["message"]


def test_the_deadline_bounds_the_whole_request(fresh):
    """Two hanging targets, each with a longer timeout than the deadline
    leaves: the client hears 504 when the deadline passes, not after the sum
    of the timeouts."""
    url, first, second, _, config = fresh
    first.script("hang", seconds=5.0)
    second.script("hang", seconds=5.0)
    config.deadline = 1.5
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            ask(url)
        took = time.monotonic() - started
    finally:
        config.deadline = 840
    assert caught.value.status_code == 504
    assert took < 2.5, f"took {took:.1f} s"


def test_the_deadline_ends_a_stream_with_an_error_event(fresh):
    url, first, _, _, config = fresh
    first.script("stall", seconds=5.0)
    config.deadline = 1.0
    try:
        started = time.monotonic()
        with httpx.stream("POST", url + "/v1/chat/completions", headers={"Authorization": f"Bearer {ACCESS_KEY}"},
                          json={"model": "solo", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                          timeout=10) as response:
            body = response.read()
        took = time.monotonic() - started
    finally:
        config.deadline = 840
    assert response.status_code == 200 and took < 2.5
    assert b'"error"' in body and b"deadline" in body


def test_the_retry_budget_is_kept(fresh):
    url, first, second, _, config = fresh
    config.retries = 0
    first.script("server_error")
    with pytest.raises(openai.InternalServerError):
        ask(url)
    assert second.requests == []


def test_an_error_after_the_first_byte_is_not_retried(fresh):
    url, first, second, _, _ = fresh
    first.script("midstream_error")
    with pytest.raises(openai.APIError):
        ask(url, stream=True)
    assert second.requests == []


def test_count_tokens_never_cools_a_key(fresh):
    url, first, _, app, _ = fresh
    first.script("rate_limit")
    response = httpx.post(url + "/v1/messages/count_tokens", headers={"x-api-key": ACCESS_KEY, "anthropic-version": "x"},
                          json={"model": "solo", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429
    assert app.state.proxy.rotation.state.cooldowns(time.time()) == []


def test_usage_is_recorded_per_key(fresh):
    url, _, second, app, _ = fresh
    ask(url), ask(url, stream=True)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    # Usage is written after the answer, off the request's path: wait for it.
    deadline = time.monotonic() + 5
    while len(app.state.proxy.rotation.state.usage(day)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    usage = {u.entry.split("#")[0]: u for u in app.state.proxy.rotation.state.usage(day)}
    assert usage["first"].requests == 1 and usage["second"].requests == 1
    assert (usage["first"].input_tokens, usage["first"].output_tokens) == (scenarios.PROMPT_TOKENS, scenarios.OUTPUT_TOKENS)


# ---------------------------------------------------------------- shared between processes


def alternate_between_two_processes(tmp_path: Path, env: dict[str, str]) -> Counter:
    fake = FakeUpstream("openai")
    upstream = BackgroundServer(fake.app).start()
    config = {
        "providers": {"up": {"protocol": "openai", "base_url": upstream.url + "/v1", "keys": ["sk-key-one", "sk-key-two"]}},
        "groups": {"default": {"models": {"m": ["up/gpt"]}}},
        "access_keys": [ACCESS_KEY],
    }
    config_path = tmp_path / "ccproxy.yaml"
    config_path.write_text(yaml.safe_dump(config))
    processes = [start_ccproxy(config_path, env, tmp_path, "--log-level", "warning") for _ in range(2)]
    try:
        for i in range(8):
            assert ask(processes[i % 2][1], model="m") == scenarios.TEXT
    finally:
        for process, _ in processes:
            process.terminate()
            process.wait(timeout=10)
        upstream.stop()
    return Counter(r.headers["authorization"] for r in fake.requests)


def test_two_processes_sharing_sqlite_alternate_keys_exactly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "shared.db")
    used = alternate_between_two_processes(tmp_path, env)
    assert used == {"Bearer sk-key-one": 4, "Bearer sk-key-two": 4}


def test_two_processes_sharing_dynamodb_alternate_keys_exactly(tmp_path, moto_server):  # noqa: F811
    table = moto_server.create_state_table("ccproxy-rotation-test")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env.update(moto_server.env)
    env["CCPROXY_TABLE"] = table
    used = alternate_between_two_processes(tmp_path, env)
    assert used == {"Bearer sk-key-one": 4, "Bearer sk-key-two": 4}
    items = moto_server.client("dynamodb").scan(TableName=table)["Items"]
    assert any(item["pk"]["S"].startswith("turn#") for item in items)
    assert not any("sk-key" in str(item) for item in items), "a key reached the table"
