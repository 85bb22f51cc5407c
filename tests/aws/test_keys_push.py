"""`ccproxy keys push`: the local secrets file into the deployment's secret,
against moto's Secrets Manager (and CloudFormation for the stack output)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from ccproxy.keys import fingerprint

from tests.support.server import CCPROXY

SECRETS = {
    "providers": {"openai": ["sk-push-one-0123456789", "sk-push-two-0123456789"], "gemini": ["AIza-push-0123456789"]},
    "access_keys": ["ccp-push-laptop-0123456789"],
}
EVERY_KEY = [k for keys in SECRETS["providers"].values() for k in keys] + SECRETS["access_keys"]


@pytest.fixture
def project(tmp_path):
    config = {
        "providers": {
            "openai": {"protocol": "openai", "base_url": "https://api.openai.com/v1", "keys": ["env:OPENAI_API_KEY"]},
            "gemini": {"protocol": "gemini", "base_url": "https://generativelanguage.googleapis.com/v1beta"},
        },
    }
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "secrets.json").write_text(json.dumps(SECRETS))
    return tmp_path


@pytest.fixture
def empty_secret(moto_server):  # noqa: F811
    """A secret as template.yaml creates it."""
    name = f"KeysSecret-{uuid.uuid4().hex[:8]}"
    return moto_server.client("secretsmanager").create_secret(
        Name=name, SecretString='{"providers": {}, "access_keys": []}'
    )["ARN"]


def run(args: list[str], cwd: Path, moto_server, **extra: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env.update(moto_server.env)
    env.update(extra)
    return subprocess.run([str(CCPROXY), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def stored(moto_server, secret_id: str) -> dict:  # noqa: F811
    return json.loads(moto_server.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])


def assert_no_key_in(text: str) -> None:
    for key in EVERY_KEY:
        assert key not in text


def test_push_writes_the_secrets_file_and_prints_only_fingerprints(project, empty_secret, moto_server):  # noqa: F811
    result = run(["keys", "push", "--config", str(project / "ccproxy.yaml"), "--secret-id", empty_secret],
                 project, moto_server)
    assert result.returncode == 0, result.stderr
    assert stored(moto_server, empty_secret) == SECRETS
    output = result.stdout + result.stderr
    assert_no_key_in(output)
    assert fingerprint("sk-push-one-0123456789") in output and fingerprint("ccp-push-laptop-0123456789") in output
    assert "provider openai: 2 keys" in output and "provider gemini: 1 key " in output
    assert "access keys: 1 key" in output


def test_the_secret_id_comes_from_the_environment(project, empty_secret, moto_server):  # noqa: F811
    result = run(["keys", "push"], project, moto_server,
                 CCPROXY_SECRET_ID=empty_secret, CCPROXY_CONFIG=str(project / "ccproxy.yaml"))
    assert result.returncode == 0, result.stderr
    assert stored(moto_server, empty_secret) == SECRETS


def test_the_secret_id_comes_from_the_stack_output(project, empty_secret, moto_server):  # noqa: F811
    stack = f"ccproxy-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},  # any resource moto can create
        "Outputs": {"SecretId": {"Value": empty_secret}},
    }
    moto_server.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    result = run(["keys", "push", "--stack", stack], project, moto_server)
    assert result.returncode == 0, result.stderr
    assert stored(moto_server, empty_secret) == SECRETS
    assert empty_secret in result.stdout


def test_the_file_can_be_named_and_unknown_providers_are_pointed_out(project, empty_secret, moto_server, tmp_path):  # noqa: F811
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"providers": {"mistral": ["mk-0123456789"]}, "access_keys": []}))
    result = run(["keys", "push", "--file", str(other), "--secret-id", empty_secret], project, moto_server,
                 CCPROXY_CONFIG=str(project / "ccproxy.yaml"))
    assert result.returncode == 0, result.stderr
    assert stored(moto_server, empty_secret)["providers"] == {"mistral": ["mk-0123456789"]}
    assert "no provider 'mistral'" in result.stdout
    assert "refuses every request" in result.stderr  # no access key
    assert "mk-0123456789" not in result.stdout + result.stderr


def test_dry_run_writes_nothing(project, empty_secret, moto_server):  # noqa: F811
    result = run(["keys", "push", "--dry-run", "--secret-id", empty_secret], project, moto_server,
                 CCPROXY_CONFIG=str(project / "ccproxy.yaml"))
    assert result.returncode == 0, result.stderr
    assert "would push" in result.stdout
    assert stored(moto_server, empty_secret) == {"providers": {}, "access_keys": []}


def test_a_bad_file_or_a_missing_secret_fails_without_showing_keys(project, moto_server):  # noqa: F811
    (project / "secrets.json").write_text('{"providers": {"openai": "sk-not-a-list-0123456789"}}')
    result = run(["keys", "push", "--secret-id", "nope"], project, moto_server, CCPROXY_CONFIG=str(project / "ccproxy.yaml"))
    assert result.returncode == 2 and "providers must map" in result.stderr
    assert "sk-not-a-list-0123456789" not in result.stdout + result.stderr

    (project / "secrets.json").write_text(json.dumps(SECRETS))
    result = run(["keys", "push", "--secret-id", "no-such-secret"], project, moto_server,
                 CCPROXY_CONFIG=str(project / "ccproxy.yaml"))
    assert result.returncode == 1 and "ResourceNotFoundException" in result.stderr
    assert_no_key_in(result.stdout + result.stderr)


def test_keys_without_push_still_lists(project, moto_server):  # noqa: F811
    result = run(["keys", "--config", str(project / "ccproxy.yaml")], project, moto_server,
                 CCPROXY_STATE=str(project / "state.db"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PROVIDER")
