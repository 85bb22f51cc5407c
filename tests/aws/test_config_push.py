"""`ccproxy config push` against moto's S3, and the Lambda app following the
pushed object: a push is served within the re-read period with no redeploy,
checked by ETag at most once a period; a broken push is refused and the
config before it keeps serving; a deleted object falls back to the packaged
file; a cold start after a push serves it at once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import yaml
from ccproxy import lambda_app
from ccproxy.environment import DEFAULT_CONFIG_KEY
from ccproxy.remote_config import CHECK_SECONDS
from ccproxy.stores.config_object import MAX_CONFIG_BYTES

from tests.support.server import CCPROXY, BackgroundServer

from .conftest import ACCESS_KEY, ROOT, forget_cached_secrets, lambda_config
from .test_api_function import _CfnLoader

KEY = DEFAULT_CONFIG_KEY
PERIOD = 0.2  # the re-read period the running tests use instead of CHECK_SECONDS
LITERAL_KEY = "sk-literal-in-config-0123456789"
LITERAL_ACCESS_KEY = "ccp-literal-in-config-0123456789"


def pushed_config(urls: dict[str, str]) -> dict[str, Any]:
    """The deployment's config with one more alias, `pushed-*`, sent to the
    OpenAI fake (in the packaged config it falls to `*`, the Ollama fake)."""
    config = lambda_config(urls)
    config["groups"]["default"]["models"] = {
        "pushed-*": ["up-openai/gpt-upstream"], **config["groups"]["default"]["models"]
    }
    return config


def pushed_yaml(urls: dict[str, str]) -> bytes:
    return yaml.safe_dump(pushed_config(urls), sort_keys=False).encode()  # the aliases' order matters


@pytest.fixture
def urls(fakes) -> dict[str, str]:
    return {protocol: url for protocol, (_, url) in fakes.items()}


@pytest.fixture
def config_file(tmp_path, urls) -> Path:
    path = tmp_path / "push" / "ccproxy.yaml"
    path.parent.mkdir()
    path.write_text("# pushed from a laptop\n" + yaml.safe_dump(pushed_config(urls), sort_keys=False))
    return path


def run(args: list[str], cwd: Path, moto_server, **extra: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env.update(moto_server.env)
    env.update(extra)
    return subprocess.run([str(CCPROXY), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def stored(deployment) -> bytes | None:
    s3 = deployment.moto.client("s3")
    try:
        return s3.get_object(Bucket=deployment.bucket, Key=KEY)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------ the CLI


def test_push_uploads_the_checked_file_byte_for_byte(deployment, config_file, moto_server):  # noqa: F811
    to = f"s3://{deployment.bucket}/{KEY}"
    result = run(["config", "push", "--config", str(config_file), "--to", to], config_file.parent, moto_server)
    assert result.returncode == 0, result.stderr
    assert stored(deployment) == config_file.read_bytes()  # comments and all
    etag = deployment.moto.client("s3").head_object(Bucket=deployment.bucket, Key=KEY)["ETag"].strip('"')
    assert to in result.stdout and etag in result.stdout
    assert f"every function serves it within {CHECK_SECONDS:g} s" in result.stdout


def test_push_finds_the_object_from_the_stack_output(deployment, config_file, moto_server):  # noqa: F811
    stack = f"ccproxy-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},  # any resource moto can create
        "Outputs": {"ConfigObject": {"Value": f"s3://{deployment.bucket}/{KEY}"}},
    }
    moto_server.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    result = run(["config", "push", "--stack", stack], config_file.parent, moto_server)  # ./ccproxy.yaml
    assert result.returncode == 0, result.stderr
    assert stored(deployment) == config_file.read_bytes()

    older = f"ccproxy-{uuid.uuid4().hex[:8]}"  # a stack deployed before the output existed
    moto_server.client("cloudformation").create_stack(
        StackName=older, TemplateBody=json.dumps({"Resources": template["Resources"]})
    )
    result = run(["config", "push", "--stack", older], config_file.parent, moto_server)
    assert result.returncode == 2
    assert "no ConfigObject output" in result.stderr and "--to" in result.stderr


def test_a_bad_config_is_refused_and_nothing_uploaded(deployment, config_file, moto_server):  # noqa: F811
    s3 = deployment.moto.client("s3")
    s3.put_object(Bucket=deployment.bucket, Key=KEY, Body=b"# the config pushed before\n")
    config_file.write_text(config_file.read_text() + "groupz: {}\n")
    result = run(["config", "push", "--to", f"s3://{deployment.bucket}/{KEY}"], config_file.parent, moto_server)
    assert result.returncode == 2
    assert "ccproxy.yaml: groupz: unknown key" in result.stderr and "nothing pushed" in result.stderr
    assert stored(deployment) == b"# the config pushed before\n"


def test_a_config_with_a_literal_key_is_refused_without_showing_it(deployment, config_file, moto_server):  # noqa: F811
    config = yaml.safe_load(config_file.read_text())
    config["providers"]["up-openai"]["keys"] = ["env:OPENAI_API_KEY", LITERAL_KEY]
    config["providers"]["up-openai"]["headers"] = {"X-Trace": "{uuid}", "X-Api-Key": LITERAL_KEY}
    config["providers"]["up-openai"]["proxy"] = f"http://user:{LITERAL_KEY}@127.0.0.1:3128"
    config["access_keys"] = ["env:CCPROXY_ACCESS_KEY", {"name": "laptop", "key": LITERAL_ACCESS_KEY}]
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run(["config", "push", "--to", f"s3://{deployment.bucket}/{KEY}"], config_file.parent, moto_server)
    assert result.returncode == 2
    assert "providers.up-openai.keys[1]" in result.stderr and "access_keys[1]" in result.stderr
    assert "providers.up-openai.headers.X-Api-Key" in result.stderr and "providers.up-openai.proxy" in result.stderr
    assert "X-Trace" not in result.stderr
    assert "env:NAME" in result.stderr and "secret" in result.stderr
    assert "keys[0]" not in result.stderr and "access_keys[0]" not in result.stderr  # env: references are fine
    output = result.stdout + result.stderr
    assert LITERAL_KEY not in output and LITERAL_ACCESS_KEY not in output
    assert stored(deployment) is None


def test_a_config_over_the_cap_is_refused(deployment, config_file, moto_server):  # noqa: F811
    config_file.write_text(config_file.read_text() + "#" * MAX_CONFIG_BYTES + "\n")
    result = run(["config", "push", "--to", f"s3://{deployment.bucket}/{KEY}"], config_file.parent, moto_server)
    assert result.returncode == 2 and "at most" in result.stderr
    assert stored(deployment) is None


def test_the_template_points_the_functions_and_the_cli_at_one_object():
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["CCPROXY_CONFIG_BUCKET"] == "ExchangeLogBucket"
    assert variables["CCPROXY_CONFIG_KEY"] == KEY
    assert template["Outputs"]["ConfigObject"]["Value"] == "s3://${ExchangeLogBucket}/" + KEY
    statements = {s["Sid"]: s for s in template["Resources"]["AppAccessPolicy"]["Properties"]["PolicyDocument"]["Statement"]}
    assert statements["ReadPushedConfig"]["Resource"] == "${ExchangeLogBucket.Arn}/" + KEY.split("/")[0] + "/*"
    # Listing the prefix is what makes a missing object a 404 rather than a 403.
    listing = statements["TellMissingConfigFromForbidden"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": KEY.split("/")[0] + "/*"}}


# ------------------------------------------------------ the running function


class Function:
    """lambda_app.create() served over HTTP, with the S3 GetObject calls its
    config source makes, and each config it takes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.live = app.state.live
        self.source = self.live.source
        self.statuses: list[int] = []  # of each GetObject the source sent
        self.reloads: list[Any] = []
        self.source.config_object.client.meta.events.register("after-call.s3.GetObject", self._called)
        self.live.follow(self.reloads.append)
        self.server = BackgroundServer(app).start()

    def _called(self, http_response: Any, **_: Any) -> None:
        self.statuses.append(http_response.status_code)

    def aliases(self) -> list[str]:
        reply = httpx.get(f"{self.server.url}/v1/models", headers={"authorization": f"Bearer {ACCESS_KEY}"})
        assert reply.status_code == 200, reply.text
        return [model["id"] for model in reply.json()["data"]]

    def ask_until(self, predicate: Callable[[], Any], what: str) -> None:
        """Keep sending requests (a check happens only when one comes) until `predicate` holds."""
        def asked() -> bool:
            self.aliases()
            return bool(predicate())

        until(asked, what=what)

    def serves_pushed(self) -> bool:
        return "pushed-*" in self.aliases()

    def chat(self, model: str) -> None:
        reply = httpx.post(
            f"{self.server.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {ACCESS_KEY}"},
            json={"model": model, "messages": [{"role": "user", "content": "hello"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text


@pytest.fixture
def start_function(deployment, monkeypatch):
    """Build the Lambda app as a cold start does, with the pushed config's bucket set."""
    monkeypatch.setenv("CCPROXY_CONFIG_BUCKET", deployment.bucket)
    monkeypatch.delenv("CCPROXY_CONFIG_KEY", raising=False)
    started: list[Function] = []

    def start() -> Function:
        forget_cached_secrets()
        function = Function(lambda_app.create())
        started.append(function)
        return function

    yield start
    for function in started:
        function.server.stop()


def put(deployment, body: bytes) -> str:
    return deployment.moto.client("s3").put_object(Bucket=deployment.bucket, Key=KEY, Body=body)["ETag"]


def test_a_push_is_served_within_the_period_and_checked_at_most_once_a_period(
    deployment, config_file, moto_server, start_function, upstreams  # noqa: F811
):
    function = start_function()
    assert function.source.every == CHECK_SECONDS
    function.source.every = 3600.0  # a period that does not end during the first part
    assert not function.serves_pushed()
    result = run(["config", "push", "--to", f"s3://{deployment.bucket}/{KEY}"], config_file.parent, moto_server)
    assert result.returncode == 0, result.stderr

    # Before the period ends: the old config, and not one S3 request.
    for _ in range(20):
        assert not function.serves_pushed()
    function.chat("pushed-model")
    assert [len(f.requests) for f in (upstreams["ollama"], upstreams["openai"])] == [1, 0]
    assert function.statuses == [] and function.reloads == []

    # Once it ends: the push serves, and checks stay at most one per period.
    function.source.every = PERIOD
    began = time.monotonic()
    until(function.serves_pushed, what="the pushed config to serve")
    for _ in range(30):
        assert function.serves_pushed()
    elapsed = time.monotonic() - began
    assert 1 <= len(function.statuses) <= elapsed / PERIOD + 1, (function.statuses, elapsed)
    function.chat("pushed-model")
    assert [len(f.requests) for f in (upstreams["ollama"], upstreams["openai"])] == [1, 1]

    # The checks that follow are ETag checks: 304, and no reload.
    function.ask_until(lambda: function.statuses.count(304) >= 3, what="three more checks")
    assert function.statuses[0] == 200 and set(function.statuses[1:]) == {304}
    assert len(function.reloads) == 1
    assert function.reloads[0].providers["up-openai"].keys == ["env:providers.up-openai in the secret"]  # secret_only


def test_a_broken_push_is_refused_and_the_config_before_it_keeps_serving(
    deployment, urls, start_function, upstreams, caplog
):
    put(deployment, pushed_yaml(urls))
    function = start_function()
    function.source.every = PERIOD
    assert function.serves_pushed()
    caplog.set_level(logging.ERROR, logger="ccproxy")
    put(deployment, b"providers: {up-openai: {protocol: nonsense, base_url: http://x}}\n")

    function.ask_until(lambda: 200 in function.statuses, what="the broken version to be read")
    function.ask_until(lambda: function.statuses.count(304) >= 2, what="two more checks")
    assert function.serves_pushed() and function.reloads == []
    function.chat("pushed-model")
    assert len(upstreams["openai"].requests) == 1
    refused = [r.getMessage() for r in caplog.records if "config not reloaded" in r.getMessage()]
    assert len(refused) == 1, refused  # read and refused once, not at every check
    assert f"s3://{deployment.bucket}/{KEY}: providers.up-openai.protocol" in refused[0]
    assert function.statuses.count(200) == 1

    put(deployment, b"#" * (MAX_CONFIG_BYTES + 1))
    function.ask_until(lambda: function.statuses.count(200) >= 2, what="the large version to be read")
    assert function.serves_pushed() and function.reloads == []
    assert any("at most" in r.getMessage() for r in caplog.records if "config not reloaded" in r.getMessage())


def test_a_deleted_object_falls_back_to_the_packaged_file(deployment, urls, start_function, upstreams):
    put(deployment, pushed_yaml(urls))
    function = start_function()
    function.source.every = PERIOD
    assert function.serves_pushed()
    deployment.moto.client("s3").delete_object(Bucket=deployment.bucket, Key=KEY)
    until(lambda: not function.serves_pushed(), what="the packaged config to serve again")
    assert function.aliases() == list(lambda_config(urls)["groups"]["default"]["models"])
    function.chat("pushed-model")
    assert [len(f.requests) for f in (upstreams["ollama"], upstreams["openai"])] == [1, 0]
    # Still missing: nothing more is taken, and a new push is served again.
    function.ask_until(lambda: function.statuses.count(404) >= 2, what="two more checks")
    assert len(function.reloads) == 1
    put(deployment, pushed_yaml(urls))
    until(function.serves_pushed, what="the new push to serve")


def test_a_cold_start_after_a_push_serves_it_at_once(deployment, urls, start_function, upstreams, caplog):
    caplog.set_level(logging.INFO, logger="ccproxy")
    put(deployment, pushed_yaml(urls))
    function = start_function()
    assert function.source.every == CHECK_SECONDS  # no check is due: this is what the start read
    assert function.serves_pushed()
    function.chat("pushed-model")
    assert len(upstreams["openai"].requests) == 1
    ready = [r.getMessage() for r in caplog.records if "ccproxy ready" in r.getMessage()]
    assert ready and f"s3://{deployment.bucket}/{KEY} (pushed" in ready[-1]


def test_a_cold_start_with_nothing_or_a_broken_push_serves_the_packaged_file(
    deployment, urls, start_function, upstreams, caplog
):
    caplog.set_level(logging.INFO, logger="ccproxy")
    function = start_function()
    assert function.aliases() == list(lambda_config(urls)["groups"]["default"]["models"])
    ready = [r.getMessage() for r in caplog.records if "ccproxy ready" in r.getMessage()]
    assert f"{deployment.config_path} (packaged" in ready[-1]

    put(deployment, b"groups: [not, a, mapping]\n")
    function = start_function()
    assert function.aliases() == list(lambda_config(urls)["groups"]["default"]["models"])
    assert any(f"s3://{deployment.bucket}/{KEY}" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)
    function.source.every = PERIOD  # the refused version is not read again
    function.ask_until(lambda: len(function.statuses) >= 2, what="two checks")
    assert set(function.statuses) == {304} and function.reloads == []
