"""Every setting ccproxy reads from its environment variables, in one place.

    variable                       field                 what it does (default)
    CCPROXY_CONFIG                 config                the config file (ccproxy.yaml in the current
                                                         directory for the CLI, the one shipped with
                                                         the code on Lambda)
    CCPROXY_CONFIG_BUCKET          config_bucket         the S3 bucket of the config that
                                                         `ccproxy config push` uploads, served once
                                                         pushed (unset: no pushed config, the config
                                                         file only)
    CCPROXY_CONFIG_KEY             config_key            that config's key in it (config/ccproxy.yaml)
    CCPROXY_SECRET_ID              secret_id             the Secrets Manager secret that holds the keys
                                                         (unset: no secret)
    CCPROXY_SECRETS_FILE           secrets_file          a local secrets file, when there is no secret
                                                         (unset: secrets.json beside the config)
    CCPROXY_TABLE                  table                 the DynamoDB table for the shared state
                                                         (unset: a SQLite file)
    CCPROXY_STATE                  state                 that SQLite file (.ccproxy/state.db under the
                                                         current directory)
    CCPROXY_LOG_BUCKET             log_bucket            the S3 bucket for exchange records (unset: none)
    CCPROXY_LOG_PREFIX             log_prefix            their key prefix in it (exchanges/)
    CCPROXY_LOG_DIR                log_dir               a local directory for them, when there is no
                                                         bucket (unset: exchanges are not recorded)
    CCPROXY_METRICS                metrics               1/true/yes/on or anything else (off): EMF
                                                         metrics (unset: on exactly on Lambda)
    CCPROXY_JSON_LOGS              json_logs             the same words: JSON logs (unset: on exactly
                                                         on Lambda)
    AWS_LAMBDA_FUNCTION_NAME       lambda_function_name  set by Lambda: running there (unset: not)
    AWS_LAMBDA_RUNTIME_API         lambda_runtime_api    set by Lambda: the runtime API's host:port,
                                                         which URL fetches refuse (unset: none)
    POWERTOOLS_METRICS_NAMESPACE   metrics_namespace     the metrics' namespace (ccproxy)
    POWERTOOLS_LOG_LEVEL,          log_level             the JSON logs' level, the first one set (INFO)
      then LOG_LEVEL
    AWS_REGION, then               aws_region            the DynamoDB client's region (unset: botocore's
      AWS_DEFAULT_REGION                                 own choice)
    SSL_CERT_FILE, SSL_CERT_DIR    ssl_cert_file,        the CA bundle or directory to trust instead of
                                   ssl_cert_dir          certifi's (unset: certifi's)

An empty value counts as unset, except CCPROXY_LOG_PREFIX (an empty prefix
writes at the bucket's root) and SSL_CERT_FILE / SSL_CERT_DIR (kept as they
are: httpx reads them itself, ccproxy only notices when they change).

Not here: the variables that libraries read for themselves (HTTP_PROXY and
the other proxy variables, AWS credentials and AWS_ENDPOINT_URL, the other
POWERTOOLS_ settings), and a config value written `env:NAME`, which names
whatever variable the user chose.

Nothing reads the environment once and keeps it: `Environment.read()` is
called where a setting is needed (building the app, a CLI command, a metric
being recorded), so a variable changed in between takes effect. Reading it
costs microseconds. Standard library only: the Lambda handler imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
DEFAULT_LOG_PREFIX = "exchanges/"
DEFAULT_CONFIG_KEY = "config/ccproxy.yaml"
DEFAULT_METRICS_NAMESPACE = "ccproxy"
DEFAULT_LOG_LEVEL = "INFO"


def _text(environ: Mapping[str, str], *names: str) -> str | None:
    """The first of `names` set to something non-empty, else None."""
    for name in names:
        value = environ.get(name)
        if value:
            return value
    return None


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name)
    return Path(value) if value else None


def _flag(environ: Mapping[str, str], name: str) -> bool | None:
    """On for one of TRUE_WORDS (any case, spaces around ignored), off for
    any other word, None when unset or blank."""
    value = environ.get(name, "").strip().lower()
    if not value:
        return None
    return value in TRUE_WORDS


@dataclass(frozen=True, slots=True)
class Environment:
    """The settings from the environment (the module doc says what each does).
    The defaults are those of an empty environment."""

    config: Path | None = None
    config_bucket: str | None = None
    config_key: str = DEFAULT_CONFIG_KEY
    secret_id: str | None = None
    secrets_file: Path | None = None
    table: str | None = None
    state: Path | None = None
    log_bucket: str | None = None
    log_prefix: str = DEFAULT_LOG_PREFIX
    log_dir: Path | None = None
    metrics: bool | None = None
    json_logs: bool | None = None
    lambda_function_name: str | None = None
    lambda_runtime_api: str | None = None
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    log_level: str = DEFAULT_LOG_LEVEL
    aws_region: str | None = None
    ssl_cert_file: str | None = None
    ssl_cert_dir: str | None = None

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The settings in `environ`, by default the process environment as it is now."""
        if environ is None:
            environ = os.environ
        return cls(
            config=_path(environ, "CCPROXY_CONFIG"),
            config_bucket=_text(environ, "CCPROXY_CONFIG_BUCKET"),
            config_key=_text(environ, "CCPROXY_CONFIG_KEY") or DEFAULT_CONFIG_KEY,
            secret_id=_text(environ, "CCPROXY_SECRET_ID"),
            secrets_file=_path(environ, "CCPROXY_SECRETS_FILE"),
            table=_text(environ, "CCPROXY_TABLE"),
            state=_path(environ, "CCPROXY_STATE"),
            log_bucket=_text(environ, "CCPROXY_LOG_BUCKET"),
            log_prefix=environ.get("CCPROXY_LOG_PREFIX", DEFAULT_LOG_PREFIX),
            log_dir=_path(environ, "CCPROXY_LOG_DIR"),
            metrics=_flag(environ, "CCPROXY_METRICS"),
            json_logs=_flag(environ, "CCPROXY_JSON_LOGS"),
            lambda_function_name=_text(environ, "AWS_LAMBDA_FUNCTION_NAME"),
            lambda_runtime_api=_text(environ, "AWS_LAMBDA_RUNTIME_API"),
            metrics_namespace=_text(environ, "POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_METRICS_NAMESPACE,
            log_level=(_text(environ, "POWERTOOLS_LOG_LEVEL", "LOG_LEVEL") or DEFAULT_LOG_LEVEL).upper(),
            aws_region=_text(environ, "AWS_REGION", "AWS_DEFAULT_REGION"),
            ssl_cert_file=environ.get("SSL_CERT_FILE"),
            ssl_cert_dir=environ.get("SSL_CERT_DIR"),
        )

    @property
    def on_lambda(self) -> bool:
        return self.lambda_function_name is not None
