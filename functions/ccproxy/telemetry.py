"""Powertools on Lambda: JSON logs that carry the request id, and metrics in
CloudWatch's embedded metric format (EMF), one JSON line on stdout per
request that CloudWatch turns into metrics without any API call.

Everything here is lazy and cheap. Importing this module imports nothing
heavy; Powertools is imported on first use. Outside Lambda every function is
a no-op, unless asked for:

    metrics   on when AWS_LAMBDA_FUNCTION_NAME is set (Lambda sets it) or
              CCPROXY_METRICS=1; CCPROXY_METRICS=0 turns them off anywhere
    JSON logs on when AWS_LAMBDA_FUNCTION_NAME is set or CCPROXY_JSON_LOGS=1

The metrics (namespace `ccproxy`, or POWERTOOLS_METRICS_NAMESPACE), each with
the dimensions `provider` and `model`:

    Requests         Count         1 per request
    Errors           Count         1 when the status is 400 or more, else 0
    UpstreamLatency  Milliseconds  time to the upstream's first byte, when known
    InputTokens      Count         when the upstream reported usage
    OutputTokens     Count         likewise
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .environment import DEFAULT_METRICS_NAMESPACE, Environment
from .errors import ProxyError
from .observe import Observer
from .unified import Response

NAMESPACE = DEFAULT_METRICS_NAMESPACE
SERVICE = "ccproxy"  # also the name of the stdlib logger the app logs to

log = logging.getLogger("ccproxy.telemetry")

_emf_class: Any = None
_logger: Any = None
_cold = True


# Each function reads the environment when called, not at import: a
# variable changed in between (as the tests do) takes effect.


def on_lambda(env: Environment | None = None) -> bool:
    return (env or Environment.read()).on_lambda


def metrics_enabled(env: Environment | None = None) -> bool:
    env = env or Environment.read()
    return env.on_lambda if env.metrics is None else env.metrics


def json_logs_enabled(env: Environment | None = None) -> bool:
    env = env or Environment.read()
    return env.on_lambda if env.json_logs is None else env.json_logs


def _emf() -> Any:
    """Powertools' EMF provider class, imported on first use (~40 ms)."""
    global _emf_class
    if _emf_class is None:
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

        _emf_class = AmazonCloudWatchEMFProvider
    return _emf_class


def record(
    *,
    provider: str,
    model: str,
    client_protocol: str,
    status: int,
    upstream_latency_ms: float | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    access_key: str | None = None,
) -> None:
    """Emit one request's metrics as a single EMF line, flushed at once.

    A no-op unless metrics are enabled (see the module doc). Never raises:
    metrics must not fail a request."""
    env = Environment.read()
    if not metrics_enabled(env):
        return
    try:
        # A fresh provider per call: its metric and dimension sets are its
        # own, so concurrent requests never mix their values (Powertools'
        # `Metrics` shares one set between every instance). `service=""`
        # keeps POWERTOOLS_SERVICE_NAME from adding a third dimension.
        metrics = _emf()(namespace=env.metrics_namespace, service="")
        metrics.add_dimension(name="provider", value=str(provider or "unknown"))
        metrics.add_dimension(name="model", value=str(model or "unknown"))
        metrics.add_metadata(key="client_protocol", value=str(client_protocol))
        if access_key:
            # Metadata, not a dimension: one metric series per key would be costly.
            metrics.add_metadata(key="access_key", value=str(access_key))
        metrics.add_metadata(key="status", value=int(status))
        metrics.add_metric(name="Requests", unit="Count", value=1)
        metrics.add_metric(name="Errors", unit="Count", value=1 if status >= 400 else 0)
        if upstream_latency_ms is not None:
            metrics.add_metric(name="UpstreamLatency", unit="Milliseconds", value=float(upstream_latency_ms))
        if input_tokens is not None:
            metrics.add_metric(name="InputTokens", unit="Count", value=int(input_tokens))
        if output_tokens is not None:
            metrics.add_metric(name="OutputTokens", unit="Count", value=int(output_tokens))
        metrics.flush_metrics()
    except Exception as exc:  # metrics are best effort
        log.warning("metrics not recorded (%s: %s)", type(exc).__name__, exc)


class Metrics(Observer):
    """The metrics as an observer of one request: a line for each failed
    attempt at once, and one for the answer once its last byte is out."""

    def __init__(self, client_protocol: str) -> None:
        self.client_protocol = client_protocol
        self.access_key: str | None = None  # its name
        self.target: tuple[str, str] | None = None
        self.latency_ms: float | None = None
        self.usage: tuple[int | None, int | None] | None = None

    def attempt_started(
        self, provider: str, model: str, protocol: str, key_fingerprint: str, compat: bool, passthrough: bool
    ) -> None:
        self.target = (provider, model)

    def identified(self, access_key: str) -> None:
        self.access_key = access_key

    def attempt_failed(self, provider: str, model: str, key_fingerprint: str, error: ProxyError) -> None:
        record(
            provider=provider,
            model=model,
            client_protocol=self.client_protocol,
            status=error.status,
            access_key=self.access_key,
        )

    def answered(self, response: Response, error: ProxyError | None, upstream_latency_ms: float) -> None:
        self.latency_ms = upstream_latency_ms
        self.usage = (response.usage.input_tokens, response.usage.output_tokens)

    async def finish(self, status: int) -> None:
        if self.target is None or self.usage is None:
            return  # failed attempts were counted as they failed
        record(
            provider=self.target[0],
            model=self.target[1],
            client_protocol=self.client_protocol,
            status=200,
            upstream_latency_ms=self.latency_ms,
            input_tokens=self.usage[0],
            output_tokens=self.usage[1],
            access_key=self.access_key,
        )


def count(name: str, value: int = 1) -> None:
    """One dimensionless count (for instance LogWriteFailures), as EMF."""
    env = Environment.read()
    if not metrics_enabled(env):
        return
    try:
        metrics = _emf()(namespace=env.metrics_namespace, service="")
        metrics.add_metric(name=name, unit="Count", value=value)
        metrics.flush_metrics()
    except Exception as exc:  # metrics are best effort
        log.warning("metric %s not recorded (%s: %s)", name, type(exc).__name__, exc)


def setup_logging(env: Environment | None = None) -> Any:
    """Structured JSON logging for the `ccproxy` logger and its children, on
    stdout (where Lambda sends it to CloudWatch). Returns the Powertools
    Logger, or None when JSON logs are off (then nothing changes)."""
    global _logger
    env = env or Environment.read()
    if _logger is not None or not json_logs_enabled(env):
        return _logger
    from aws_lambda_powertools.logging import Logger

    _logger = Logger(service=SERVICE, level=env.log_level)
    return _logger


def _header_json(headers: list[tuple[bytes, bytes]], name: bytes) -> dict[str, Any]:
    for key, value in headers:
        if key == name:
            try:
                found = json.loads(value)
            except ValueError:
                return {}
            return found if isinstance(found, dict) else {}
    return {}


def request_keys(scope: dict[str, Any]) -> dict[str, Any]:
    """The ids that tie a log line to its invocation and its HTTP request:

    - under Mangum (the API function), the Lambda context and the API
      Gateway event are in the ASGI scope;
    - under the Lambda Web Adapter (the streaming function), the adapter
      forwards them as the JSON headers x-amzn-lambda-context and
      x-amzn-request-context.
    """
    keys: dict[str, Any] = {}
    context = scope.get("aws.context")
    event = scope.get("aws.event")
    if context is not None or event is not None:
        request_id = getattr(context, "aws_request_id", None)
        request_context = (event or {}).get("requestContext") or {}
    else:
        headers = scope.get("headers") or []
        lambda_context = _header_json(headers, b"x-amzn-lambda-context")
        request_id = lambda_context.get("request_id") or lambda_context.get("aws_request_id")
        request_context = _header_json(headers, b"x-amzn-request-context")
    if request_id:
        keys["function_request_id"] = request_id
    if request_context.get("requestId"):
        keys["correlation_id"] = request_context["requestId"]
    return keys


class RequestContext:
    """ASGI middleware: while a request is served (its streamed body
    included), every log line carries its request ids and whether it is the
    environment's first request (cold_start). Passes straight through when
    JSON logs are off."""

    def __init__(self, app: Any, logger: Any) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        global _cold
        # /health is the adapter's readiness check, not an invocation.
        if self.logger is None or scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        keys = request_keys(scope)
        keys["cold_start"], _cold = _cold, False
        # Context-local keys (a ContextVar): each request runs in its own
        # asyncio task, so concurrent requests never see each other's ids.
        self.logger.thread_safe_append_keys(**keys)
        try:
            await self.app(scope, receive, send)
        finally:
            self.logger.thread_safe_remove_keys(keys)
