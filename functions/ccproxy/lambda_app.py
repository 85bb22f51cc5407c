"""The app as both Lambda functions build it: config from the deployment,
keys only from the secret, and no open access even without access keys."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette

from .app import Settings, create_app
from .config import load
from .stores.secrets import secret_store_from_env
from .stores.state import state_store_from_env


def config_path() -> Path:
    return Path(os.environ.get("CCPROXY_CONFIG") or Path(__file__).parent.parent / "ccproxy.yaml")


def create() -> Starlette:
    config = load(config_path())
    return create_app(
        Settings(config=config, secrets=secret_store_from_env(None), open_when_no_keys=False, state=state_store_from_env())
    )
