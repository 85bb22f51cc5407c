"""A moto server on a loopback port: the AWS stores under test talk real HTTP
to it through boto3, exactly as they would to AWS (no patched boto3).

Use the `moto_server` fixture from a test module:

    from tests.support.aws import moto_server  # noqa: F401

It sets AWS_ENDPOINT_URL and test credentials for the session, so code that
builds its own boto3 clients (and subprocesses that inherit the environment)
reach the server. `MotoServer.reset()` clears every service's state.
"""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

REGION = "us-east-1"


class MotoServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The variables that point boto3 (here or in a subprocess) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def start(self, set_env: bool = True) -> "MotoServer":
        from moto.server import ThreadedMotoServer

        # Port 0: the OS picks a free port, read back after the bind.
        self._server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        if set_env:
            for name, value in self.env.items():
                self._saved_env.setdefault(name, os.environ.get(name))
                os.environ[name] = value
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def reset(self) -> None:
        """Forget every bucket, table and secret."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def client(self, service: str) -> Any:
        """A low-level boto3 client for `service` on this server."""
        import boto3

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_state_table(self, name: str | None = None) -> str:
        """A table shaped like template.yaml's StateTable (pk HASH, on-demand,
        TTL on expires_at); a fresh unique name unless one is given."""
        name = name or f"state-{uuid.uuid4().hex[:12]}"
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
        return name


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()
