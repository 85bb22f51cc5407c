"""Named access keys on AWS, against moto's server over HTTP (boto3
unpatched): two DynamoDB store objects (as two Lambda instances) share one
key's counters, so its rpm holds across them; `ccproxy access` adds, lists
and revokes keys in a Secrets Manager secret, the revocation in the table."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from ccproxy.access import AccessControl, revoked_counter
from ccproxy.errors import ProxyError
from ccproxy.stores.secrets import AccessKey, parse_secrets
from ccproxy.stores.state import DynamoStateStore

from tests.support.aws import MotoServer, moto_server  # noqa: F401  (the fixture)
from tests.support.server import CCPROXY


def test_two_stores_share_one_keys_counters_and_its_rpm_holds_across_them(moto_server: MotoServer):  # noqa: F811
    table = moto_server.create_state_table()
    one = DynamoStateStore(table, client=moto_server.client("dynamodb"))
    two = DynamoStateStore(table, client=moto_server.client("dynamodb"))
    assert one.blocks_on_network
    assert [one.count_window("c", 4_000_000_060.0), two.count_window("c", 4_000_000_060.0)] == [1, 2]
    assert two.count_window("c", 4_000_000_120.0) == 1  # a new window starts again
    assert one.add_amount("t", 5, 4_000_000_000.0) == 5 and two.add_amount("t", 7, 4_000_000_000.0) == 12
    assert one.read_amount("t", 3_999_999_999.0) == 12 and one.read_amount("t", 4_000_000_000.0) == 0
    assert one.add_amount("old", 3, 1.0) == 3 and two.add_amount("old", 4, 2.0) == 4  # expired: starts again

    key = AccessKey("shared", "ccp-shared-0123456789", rpm=3)
    now = 4_000_000_010.0  # the same minute for both
    first = AccessControl(one, clock=lambda: now)
    second = AccessControl(two, clock=lambda: now)

    async def admitted(control: AccessControl) -> int | None:
        try:
            await control.admit(key, "default")
        except ProxyError as error:
            assert error.status == 429 and error.retry_after == 10  # to the end of its minute (4_000_000_020)
            return error.status
        return None

    async def run() -> list[int | None]:
        return [await admitted(c) for c in (first, second, first, second, first)]

    assert asyncio.run(run()) == [None, None, None, 429, 429]


SECRET = {"providers": {"openai": ["sk-aws-provider-0123456789"]}, "access_keys": ["ccp-aws-plain-0123456789"]}


def run(args: list[str], cwd: Path, moto_server, **extra: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env.update(moto_server.env)
    env.update(extra)
    return subprocess.run([str(CCPROXY), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def secret(moto_server):  # noqa: F811
    name = f"KeysSecret-{uuid.uuid4().hex[:8]}"
    return moto_server.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(SECRET))["ARN"]


def stored(moto_server, secret_id: str) -> dict:  # noqa: F811
    return json.loads(moto_server.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])


def test_access_add_list_revoke_against_the_secret_and_the_table(tmp_path, secret, moto_server):  # noqa: F811
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump({"providers": {}}))
    table = moto_server.create_state_table()
    where = ["--config", str(tmp_path / "ccproxy.yaml"), "--secret-id", secret]
    added = run(["access", "add", "ci", "--models", "gpt-*", "--rpm", "5", *where], tmp_path, moto_server,
                CCPROXY_TABLE=table)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("ccp-") and len(key) > 30
    document = stored(moto_server, secret)
    assert document["providers"] == SECRET["providers"]  # the rest is kept
    assert document["access_keys"][0] == "ccp-aws-plain-0123456789"
    assert document["access_keys"][1] == {"name": "ci", "key": key, "models": ["gpt-*"], "rpm": 5}

    listed = run(["access", *where], tmp_path, moto_server, CCPROXY_TABLE=table)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("ci "))
    assert "gpt-*" in line and " 5 " in line and "never" in line
    assert key not in listed.stdout + listed.stderr and "ccp-aws-plain" not in listed.stdout + listed.stderr

    revoked = run(["access", "revoke", "ci", *where], tmp_path, moto_server, CCPROXY_TABLE=table)
    assert revoked.returncode == 0, revoked.stderr
    assert [k for k in stored(moto_server, secret)["access_keys"] if isinstance(k, dict)] == []
    assert key not in revoked.stdout + revoked.stderr
    store = DynamoStateStore(table, client=moto_server.client("dynamodb"))
    assert store.read_amount(revoked_counter(AccessKey("ci", key)), 0.0) == 1
    assert parse_secrets(stored(moto_server, secret), "s").access_keys[0].key == "ccp-aws-plain-0123456789"

    missing = run(["access", "revoke", "ci", *where], tmp_path, moto_server, CCPROXY_TABLE=table)
    assert missing.returncode == 1 and "no access key named 'ci'" in missing.stderr


def test_two_serving_processes_on_one_table_hold_a_keys_rpm_together(moto_server: MotoServer, tmp_path):  # noqa: F811
    """Two `ccproxy serve` processes (as two Lambda instances) on one
    DynamoDB table: a 2-requests-per-minute key gets its third request
    refused, whichever process it reaches."""
    import time

    import httpx

    from tests.fakes import UPSTREAM_MODELS, FakeUpstream
    from tests.support.server import BackgroundServer, start_ccproxy

    table = moto_server.create_state_table()
    fake = FakeUpstream("openai", key="sk-aws-provider-0123456789")
    upstream = BackgroundServer(fake.app).start()
    key = "ccp-aws-two-processes-0123456789"
    config = {
        "providers": {"up": {"protocol": "openai", "base_url": upstream.url + "/v1", "keys": ["sk-aws-provider-0123456789"]}},
        "groups": {"default": {"models": {"*": [f"up/{UPSTREAM_MODELS['openai']}"]}}},
        "access_keys": [{"name": "shared", "key": key, "rpm": 2}],
    }
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env["CCPROXY_TABLE"] = table
    servers = [start_ccproxy(tmp_path / "ccproxy.yaml", env, tmp_path, "--quiet") for _ in range(2)]
    try:
        def ask(url: str) -> httpx.Response:
            body = {"model": "any", "messages": [{"role": "user", "content": "hi"}]}
            return httpx.post(url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"},
                              timeout=30)

        if time.time() % 60 > 50:  # all three inside one minute window
            time.sleep(61 - time.time() % 60)
        (a, a_url), (b, b_url) = servers
        answers = [ask(a_url), ask(b_url), ask(a_url)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert 1 <= int(answers[2].headers["retry-after"]) <= 60
        assert len(fake.requests) == 2, "the refused request reached the upstream"
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=10)
        upstream.stop()
