"""The live active group on AWS, against moto's server over HTTP (boto3
unpatched): the DynamoDB store's settings, and `ccproxy switch` writing the
active group to the table, which every instance of the app (each with a
store of its own, as Lambda instances have) follows within seconds; a new
instance (a cold start, a redeploy) starts on it."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ccproxy.app import Settings, create_app
from ccproxy.config import parse
from ccproxy.stores.secrets import NoSecrets
from ccproxy.stores.state import DynamoStateStore, StateStore

from tests.fakes import FakeUpstream
from tests.support.aws import MotoServer, moto_server  # noqa: F401  (the fixture)
from tests.support.server import CCPROXY, BackgroundServer
from tests.support.switching import serving_group, switch_config, wait_for_group
from tests.unit.test_state_store import SettingsContract

ACCESS_KEY = "ccp-switch-aws-0123456789"
UPSTREAM_KEY = "sk-fake-switch-0123456789"


class TestDynamoSettings(SettingsContract):
    @pytest.fixture
    def store(self, moto_server: MotoServer) -> Iterator[StateStore]:  # noqa: F811
        store = DynamoStateStore(moto_server.create_state_table(), client=moto_server.client("dynamodb"))
        yield store
        store.close()


def test_a_setting_is_one_item_without_expiry(moto_server: MotoServer) -> None:  # noqa: F811
    table = moto_server.create_state_table()
    one = DynamoStateStore(table, client=moto_server.client("dynamodb"))
    two = DynamoStateStore(table, client=moto_server.client("dynamodb"))
    one.put_setting("active_group", "second")
    assert two.get_setting("active_group") == "second"
    item = moto_server.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": "setting#active_group"}}, ConsistentRead=True
    )["Item"]
    assert item == {"pk": {"S": "setting#active_group"}, "value": {"S": "second"}}  # no expires_at: TTL never takes it
    two.put_setting("active_group", None)
    assert one.get_setting("active_group") is None
    assert "Item" not in moto_server.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": "setting#active_group"}}, ConsistentRead=True
    )


# ------------------------------------------------------------ ccproxy switch


@pytest.fixture
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream("openai", key=UPSTREAM_KEY)
    server = BackgroundServer(fake.app).start()
    yield fake, server.url
    server.stop()
    assert fake.violations == []








def switch(args: list[str], cwd: Path, moto_server: MotoServer, **extra: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env.update(moto_server.env)
    env.update(extra)
    return subprocess.run([str(CCPROXY), "switch", *args, "--config", str(cwd / "ccproxy.yaml")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_every_instance_follows_ccproxy_switch(tmp_path, upstream, moto_server: MotoServer) -> None:  # noqa: F811
    _, upstream_url = upstream
    data = switch_config(upstream_url, ACCESS_KEY, UPSTREAM_KEY)
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump(data))
    config = parse(data, "switch-config")
    table = moto_server.create_state_table()

    def instance() -> BackgroundServer:
        store = DynamoStateStore(table, client=moto_server.client("dynamodb"))
        return BackgroundServer(create_app(Settings(config=config, secrets=NoSecrets(), state=store))).start()

    instances = [instance(), instance()]
    try:
        urls = [server.url for server in instances]
        assert [serving_group(url, ACCESS_KEY) for url in urls] == ["first", "first"]
        shown = switch([], tmp_path, moto_server, CCPROXY_TABLE=table)
        assert shown.returncode == 0, shown.stderr
        assert "active group: first" in shown.stdout and "none switched to" in shown.stdout

        switched = switch(["second"], tmp_path, moto_server, CCPROXY_TABLE=table)
        assert switched.returncode == 0, switched.stderr
        assert switched.stdout.startswith("active group: second (was first); every server follows")
        assert wait_for_group(urls, "second", ACCESS_KEY) == ["second", "second"]
        shown = switch([], tmp_path, moto_server, CCPROXY_TABLE=table)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("active group: second (switched to") and table in shown.stdout

        # A new instance (a cold start after a redeploy) starts on the switched group.
        instances.append(instance())
        assert serving_group(instances[-1].url, ACCESS_KEY) == "second"

        unknown = switch(["third"], tmp_path, moto_server, CCPROXY_TABLE=table)
        assert unknown.returncode == 2
        assert "no group 'third'" in unknown.stderr and "first, second" in unknown.stderr
        assert DynamoStateStore(table, client=moto_server.client("dynamodb")).get_setting("active_group") == "second"

        # --table names the table where the environment does not.
        reset = switch(["--reset", "--table", table], tmp_path, moto_server)
        assert reset.returncode == 0, reset.stderr
        assert reset.stdout.startswith("active group: first, the config's active_group (was second)")
        assert wait_for_group([server.url for server in instances], "first", ACCESS_KEY) == ["first"] * 3
    finally:
        for server in instances:
            server.stop()
    for result in (shown, switched, unknown, reset):
        assert ACCESS_KEY not in result.stdout + result.stderr and UPSTREAM_KEY not in result.stdout + result.stderr


def deployed_stack(moto_server: MotoServer, **outputs: dict) -> tuple[str, str]:  # noqa: F811
    """A stack with the state table and its StateTableName output (plus
    `outputs`), as the deployed stack has them: (its name, the table's)."""
    stack = f"ccproxy-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {
            "StateTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                    "BillingMode": "PAY_PER_REQUEST",
                },
            }
        },
        "Outputs": {"StateTableName": {"Value": {"Ref": "StateTable"}}, **outputs},
    }
    cloudformation = moto_server.client("cloudformation")
    cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    return stack, next(o["OutputValue"] for o in described if o["OutputKey"] == "StateTableName")


def test_switch_finds_the_table_in_the_stack_outputs(tmp_path, moto_server: MotoServer) -> None:  # noqa: F811
    """--stack reads the StateTableName output, as the deployed stack has it."""
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump(switch_config("http://127.0.0.1:9", ACCESS_KEY, UPSTREAM_KEY)))
    stack, table = deployed_stack(moto_server)

    switched = switch(["second", "--stack", stack], tmp_path, moto_server)
    assert switched.returncode == 0, switched.stderr
    assert DynamoStateStore(table, client=moto_server.client("dynamodb")).get_setting("active_group") == "second"
    shown = switch(["--stack", stack, "--region", "us-east-1"], tmp_path, moto_server)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("active group: second (switched to, in the DynamoDB table " + table)

    missing = switch(["second", "--stack", "no-such-stack"], tmp_path, moto_server)
    assert missing.returncode == 1 and "cannot read stack no-such-stack" in missing.stderr


def test_switch_with_a_stack_checks_the_group_against_the_config_pushed_to_it(tmp_path, moto_server: MotoServer) -> None:  # noqa: F811
    """The functions serve the pushed config, so that is where the group must
    be: `third` exists only there, `second` only in the local file."""
    local = switch_config("http://127.0.0.1:9", ACCESS_KEY, UPSTREAM_KEY)
    (tmp_path / "ccproxy.yaml").write_text(yaml.safe_dump(local))
    pushed = {**local, "groups": {"first": local["groups"]["first"], "third": local["groups"]["second"]}}
    bucket, key = f"logs-{uuid.uuid4().hex[:8]}", "config/ccproxy.yaml"
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket=bucket)
    stack, _ = deployed_stack(moto_server, ConfigObject={"Value": f"s3://{bucket}/{key}"})

    # Nothing pushed yet: the functions serve the packaged file, the local one.
    assert switch(["second", "--stack", stack], tmp_path, moto_server).returncode == 0
    s3.put_object(Bucket=bucket, Key=key, Body=yaml.safe_dump(pushed).encode())
    refused = switch(["second", "--stack", stack], tmp_path, moto_server)
    assert refused.returncode == 2
    assert f"no group 'second' in s3://{bucket}/{key} (its groups: first, third)" in refused.stderr
    switched = switch(["third", "--stack", stack], tmp_path, moto_server)
    assert switched.returncode == 0, switched.stderr
    assert switched.stdout.startswith("active group: third (was second)")
