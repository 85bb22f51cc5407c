"""The app as both Lambda functions build it: the config `ccproxy config
push` uploaded (else the one shipped with the code), keys only from the
secret, state in DynamoDB, exchange logs in S3, and no open access even
without access keys.

With CCPROXY_CONFIG_BUCKET set, a pushed config is served from the start
(a cold start after a push never serves the packaged file first), and a new
push is taken within remote_config.CHECK_SECONDS; the packaged file serves
while nothing is pushed, and again once the pushed object is deleted.

Keys come only from the secret. The config may name
keys (`keys: [env:OPENAI_API_KEY]`, `access_keys: [...]`) so that the same
ccproxy.yaml serves locally and on AWS, but here those entries are never
read: a provider that lists `keys` only says it needs a key, which must then
be in the secret under its id; `access_keys` in the config are ignored.
No function ever reads a key from its environment variables or its code.

With no access key in the secret every request is refused with 503, in the
shape of the route's protocol, and the reason is logged. The function still
starts (so /health answers and the adapter's readiness check passes): a key
pushed into the secret later takes effect once the cached secret is
re-read (within 5 minutes), with no redeploy.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette

from . import telemetry
from .app import Settings, create_app
from .config import Config, load
from .environment import Environment
from .remote_config import S3Source
from .stores.config_object import S3ConfigObject
from .stores.logs import log_sink_from_env
from .stores.secrets import secret_store_from_env
from .stores.state import state_store_from_env

log = logging.getLogger("ccproxy")


def config_path(env: Environment) -> Path:
    return env.config or Path(__file__).parent.parent / "ccproxy.yaml"


def secret_only(config: Config) -> Config:
    """The config with every key it names removed: a provider that listed
    `keys` keeps a marker that resolves to nothing, so without a key in the
    secret it fails with a clear message instead of calling its API
    unauthenticated; a provider without `keys` stays keyless."""
    providers = {
        provider_id: provider.model_copy(
            # An `env:` reference no environment defines (the name is not a
            # valid variable name), worded for the "no API key: set ..." error.
            update={"keys": [f"env:providers.{provider_id} in the secret"] if provider.keys else []}
        )
        for provider_id, provider in config.providers.items()
    }
    return config.model_copy(update={"providers": providers, "access_keys": []})


def where_keys_live(env: Environment) -> str:
    if env.secret_id:
        return f"the secret {env.secret_id}"
    if env.secrets_file:
        return f"the secrets file {env.secrets_file}"
    return "no secret (CCPROXY_SECRET_ID is not set)"


def access_key_hint(env: Environment) -> str:
    """What the log says when requests are refused for want of an access key."""
    if not (env.secret_id or env.secrets_file):
        return "CCPROXY_SECRET_ID is not set, and keys come only from the secret"
    return (
        f"{where_keys_live(env)} has no access_keys; add one (ccproxy keys push) and it takes effect within 5 minutes"
    )


def initial_config(env: Environment) -> tuple[Config, str, S3Source | None]:
    """The config to start with, what it is (for the log), and the pushed
    object to follow (None without CCPROXY_CONFIG_BUCKET: the packaged file only)."""
    path = config_path(env)
    if not env.config_bucket:
        return load(path), str(path), None
    source = S3Source(S3ConfigObject(env.config_bucket, env.config_key, env), path)
    config, pushed = source.initial()
    if pushed:
        return config, f"{source} (pushed; checked for a newer push every {source.every:g} s)", source
    return config, f"{path} (packaged; {source} checked for a push every {source.every:g} s)", source


def create() -> Starlette:
    """The app for both functions (uvicorn's factory for the streaming one,
    Mangum's app for the API one), built once per execution environment."""
    env = Environment.read()
    logger = telemetry.setup_logging(env)
    config, served, source = initial_config(env)
    secrets = secret_store_from_env(None, env=env)
    app = create_app(
        Settings(
            config=secret_only(config),
            config_source=source,
            prepare_config=secret_only,
            secrets=secrets,
            open_when_no_keys=False,
            state=state_store_from_env(env=env),
            logs=log_sink_from_env(env),
            finish_inside_response=True,
            access_key_hint=access_key_hint(env),
        )
    )
    app.add_middleware(telemetry.RequestContext, logger=logger)
    log.info(
        "ccproxy ready: config %s; keys from %s; state in %s",
        served,
        where_keys_live(env),
        f"table {env.table}" if env.table else "SQLite",
    )
    return app
