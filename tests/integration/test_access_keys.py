"""Named access keys, seen by the official SDKs: a key's groups, models,
requests per minute, tokens per day and expiry are enforced before any
upstream is called, each refusal in the client protocol's shape; a revoked
key is refused by a second app sharing the SQLite state file."""

from __future__ import annotations

import logging
import time

import anthropic
import httpx
import ollama
import openai
import pytest
from ccproxy.app import Settings, create_app
from ccproxy.config import parse
from ccproxy.stores.secrets import Secrets, parse_secrets
from ccproxy.stores.state import MemoryStateStore, SqliteStateStore
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from tests.fakes import UPSTREAM_MODELS, FakeUpstream
from tests.support.server import BackgroundServer

UPSTREAM_KEY = "sk-fake-openai-0123456789"
KEYS = {
    "wide": "ccp-test-wide-0123456789",
    "laptop": "ccp-test-laptop-0123456789",
    "slow": "ccp-test-slow-0123456789",
    "budget": "ccp-test-budget-0123456789",
    "old": "ccp-test-old-0123456789",
    "claude-only": "ccp-test-claude-only-0123456789",
}
SECRETS = {
    "providers": {},
    "access_keys": [
        KEYS["wide"],  # a plain key: everything, no limit
        {"name": "laptop", "key": KEYS["laptop"], "groups": ["default"]},
        {"name": "slow", "key": KEYS["slow"], "rpm": 2},
        {"name": "budget", "key": KEYS["budget"], "tokens_per_day": 1},
        {"name": "old", "key": KEYS["old"], "expires": "2020-01-31"},
        {"name": "claude-only", "key": KEYS["claude-only"], "models": ["claude-*"]},
    ],
}
QUESTION = [{"role": "user", "content": "hello"}]


class StaticSecrets:
    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets

    def get(self) -> Secrets:
        return self.secrets


def config(upstream_url: str) -> dict:
    target = [f"up/{UPSTREAM_MODELS['openai']}"]
    return {
        "providers": {"up": {"protocol": "openai", "base_url": upstream_url + "/v1", "keys": [UPSTREAM_KEY]}},
        "groups": {
            "default": {"models": {"claude-*": target, "gpt-*": target, "gemini-*": target, "llama*": target}},
            "other": {"models": {"claude-*": target, "gpt-*": target, "gemini-*": target, "llama*": target}},
        },
    }


def build(upstream_url: str, state, secrets: dict = SECRETS, **settings):
    app = create_app(
        Settings(
            config=parse(config(upstream_url), "test"),
            secrets=StaticSecrets(parse_secrets(secrets, "test")),
            state=state,
            **settings,
        )
    )
    return BackgroundServer(app).start()


@pytest.fixture(scope="module")
def upstream():
    fake = FakeUpstream("openai", key=UPSTREAM_KEY)
    server = BackgroundServer(fake.app).start()
    yield fake, server.url
    server.stop()


@pytest.fixture
def proxy(upstream):
    fake, url = upstream
    fake.reset()
    server = build(url, MemoryStateStore())
    yield server.url, fake
    server.stop()


def openai_client(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


def gemini_client(base: str, key: str) -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=gtypes.HttpOptions(base_url=base, api_version="v1beta"),
    )


# ------------------------------------------------------------ groups: 403 in each protocol's shape


def test_a_key_limited_to_one_group_is_refused_on_another_in_every_protocol(proxy):
    url, fake = proxy
    key, other = KEYS["laptop"], url + "/other"

    with pytest.raises(openai.PermissionDeniedError) as caught:
        openai_client(other, key).chat.completions.create(model="gpt-x", messages=QUESTION)
    assert caught.value.status_code == 403 and "'other'" in caught.value.message
    assert caught.value.body["type"] == "permission_error" if isinstance(caught.value.body, dict) else True

    claude = anthropic.Anthropic(base_url=other, api_key=key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        claude.messages.create(model="claude-x", max_tokens=10, messages=QUESTION)
    assert refused.value.status_code == 403 and "'other'" in refused.value.message
    assert refused.value.body["error"]["type"] == "permission_error"

    gemini = gemini_client(other, key)  # kept: a client collected mid-call closes its connection
    with pytest.raises(genai_errors.ClientError) as denied:
        gemini.models.generate_content(model="gemini-x", contents="hello")
    assert denied.value.code == 403 and denied.value.status == "PERMISSION_DENIED" and "'other'" in denied.value.message

    with pytest.raises(ollama.ResponseError) as failed:
        ollama.Client(host=other, headers={"Authorization": f"Bearer {key}"}).chat(model="llama3", messages=QUESTION)
    assert failed.value.status_code == 403 and "'other'" in failed.value.error

    with pytest.raises(openai.PermissionDeniedError) as responses_refused:
        openai_client(other, key).responses.create(model="gpt-x", input="hello")
    assert responses_refused.value.status_code == 403 and "'other'" in responses_refused.value.message

    assert fake.requests == []  # refused before any upstream was called
    # Its own group serves it.
    answer = openai_client(url, key).chat.completions.create(model="gpt-x", messages=QUESTION)
    assert answer.choices[0].message.content
    assert len(fake.requests) == 1


# ------------------------------------------------------------ models: 403


def test_a_key_outside_its_models_is_refused_and_does_not_see_them(proxy):
    url, fake = proxy
    key = KEYS["claude-only"]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        openai_client(url, key).chat.completions.create(model="gpt-x", messages=QUESTION)
    assert "'gpt-x'" in caught.value.message
    gemini = gemini_client(url, key)
    with pytest.raises(genai_errors.ClientError) as denied:
        gemini.models.generate_content(model="gemini-x", contents="hello")
    assert denied.value.code == 403 and denied.value.status == "PERMISSION_DENIED" and "'gemini-x'" in denied.value.message
    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic.Anthropic(base_url=url, api_key=key, max_retries=0).messages.count_tokens(
            model="gpt-x", messages=QUESTION
        )
    assert fake.requests == []
    claude = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
    assert claude.messages.create(model="claude-x", max_tokens=10, messages=QUESTION).content
    listed = [m.id for m in openai_client(url, key).models.list()]
    assert listed == ["claude-*"]
    assert "gpt-*" in [m.id for m in openai_client(url, KEYS["wide"]).models.list()]


# ------------------------------------------------------------ expiry and unknown keys: 401


def test_an_expired_key_and_an_unknown_key_get_401(proxy):
    url, fake = proxy
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(url, KEYS["old"]).chat.completions.create(model="gpt-x", messages=QUESTION)
    assert "expired" in caught.value.message and "'old'" in caught.value.message
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=url, api_key=KEYS["old"], max_retries=0).messages.create(
            model="claude-x", max_tokens=10, messages=QUESTION
        )
    with pytest.raises(openai.AuthenticationError):
        openai_client(url, "ccp-nobody-0123456789").chat.completions.create(model="gpt-x", messages=QUESTION)
    assert fake.requests == []


# ------------------------------------------------------------ rpm: 429 with Retry-After


def _not_at_a_minute_edge() -> None:
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)


def test_a_2_rpm_key_gets_429_with_retry_after_on_the_third_request(proxy):
    url, fake = proxy
    _not_at_a_minute_edge()
    client = openai_client(url, KEYS["slow"])
    for _ in range(2):
        client.chat.completions.create(model="gpt-x", messages=QUESTION)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-x", messages=QUESTION)
    retry_after = int(caught.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert abs(retry_after - (60 - time.time() % 60)) <= 2
    assert "2 requests per minute" in caught.value.message
    assert len(fake.requests) == 2
    # Gemini's shape: RESOURCE_EXHAUSTED.
    gemini = gemini_client(url, KEYS["slow"])
    with pytest.raises(genai_errors.ClientError) as exhausted:
        gemini.models.generate_content(model="gemini-x", contents="hello")
    assert exhausted.value.code == 429 and exhausted.value.status == "RESOURCE_EXHAUSTED"
    # Another key is not affected.
    openai_client(url, KEYS["wide"]).chat.completions.create(model="gpt-x", messages=QUESTION)


# ------------------------------------------------------------ tokens per day: 429 after streamed answers


def test_a_tokens_per_day_key_is_refused_once_its_streamed_answers_used_the_budget(proxy):
    url, fake = proxy
    client = openai_client(url, KEYS["budget"])
    with client.chat.completions.stream(
        model="gpt-x", messages=QUESTION, stream_options={"include_usage": True}
    ) as stream:
        for _ in stream:
            pass
        assert stream.get_final_completion().usage.total_tokens >= 1
    deadline = time.monotonic() + 5
    while True:  # the tokens are counted once the stream's last byte is out
        try:
            client.chat.completions.create(model="gpt-x", messages=QUESTION, stream=True).close()
        except openai.RateLimitError as exc:
            caught = exc
            break
        assert time.monotonic() < deadline, "the budget was never enforced"
        time.sleep(0.05)
    retry_after = int(caught.response.headers["retry-after"])
    assert abs(retry_after - (86400 - time.time() % 86400)) <= 2
    assert "tokens" in caught.message
    before = len(fake.requests)
    with pytest.raises(anthropic.RateLimitError):
        anthropic.Anthropic(base_url=url, api_key=KEYS["budget"], max_retries=0).messages.create(
            model="claude-x", max_tokens=10, messages=QUESTION
        )
    assert len(fake.requests) == before


# ------------------------------------------------------------ names, never keys, in logs and records


def test_the_access_log_and_records_carry_the_name_never_the_key(upstream, tmp_path, caplog):
    from ccproxy.stores.logs import DirectorySink

    fake, upstream_url = upstream
    logs = tmp_path / "logs"
    server = build(upstream_url, MemoryStateStore(), logs=DirectorySink(logs))
    try:
        with caplog.at_level(logging.INFO, logger="ccproxy.access"):
            openai_client(server.url, KEYS["laptop"]).chat.completions.create(model="gpt-x", messages=QUESTION)
            with pytest.raises(openai.PermissionDeniedError):
                openai_client(server.url + "/other", KEYS["laptop"]).chat.completions.create(
                    model="gpt-x", messages=QUESTION
                )
            httpx.post(
                f"{server.url}/v1beta/models/gemini-x:generateContent?key={KEYS['laptop']}",
                json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            )
            deadline = time.monotonic() + 5
            while len([r for r in caplog.records if r.name == "ccproxy.access"]) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "ccproxy.access"]
    assert all("key laptop" in line for line in lines), lines
    assert any("key=***" in line for line in lines)
    records = [_text(p.read_bytes()) for p in logs.rglob("*") if p.is_file()]
    assert records and any('"access_key":"laptop"' in r.replace(" ", "") for r in records)
    for text in lines + records:
        assert KEYS["laptop"] not in text


def _text(data: bytes) -> str:
    import gzip

    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()


# ------------------------------------------------------------ revocation seen by another process


def test_a_revoked_key_is_refused_by_a_second_app_sharing_the_state_file(upstream, tmp_path):
    from ccproxy.access import revoke
    from ccproxy.stores.secrets import AccessKey

    fake, upstream_url = upstream
    path = tmp_path / "state.db"
    first = build(upstream_url, SqliteStateStore(path), revocation_view_seconds=0.2)
    second = build(upstream_url, SqliteStateStore(path), revocation_view_seconds=0.2)
    try:
        for server in (first, second):
            openai_client(server.url, KEYS["laptop"]).chat.completions.create(model="gpt-x", messages=QUESTION)
        # `ccproxy access revoke` records it through its own store object.
        cli_store = SqliteStateStore(path)
        revoke(cli_store, AccessKey("laptop", KEYS["laptop"]))
        cli_store.close()
        time.sleep(0.3)
        for server in (first, second):  # both still have the key in their secrets
            with pytest.raises(openai.AuthenticationError):
                openai_client(server.url, KEYS["laptop"]).chat.completions.create(model="gpt-x", messages=QUESTION)
            openai_client(server.url, KEYS["wide"]).chat.completions.create(model="gpt-x", messages=QUESTION)
    finally:
        first.stop()
        second.stop()
