"""Powertools telemetry: EMF metrics per request, request ids on log lines,
and a handler that stays cheap to import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from ccproxy import telemetry

from .conftest import ROOT


@pytest.fixture
def off_lambda(monkeypatch):
    for name in ("AWS_LAMBDA_FUNCTION_NAME", "CCPROXY_METRICS", "CCPROXY_JSON_LOGS", "POWERTOOLS_METRICS_NAMESPACE",
                 "POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def emf_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]


def test_metrics_are_a_no_op_off_lambda(off_lambda, capsys):
    telemetry.record(provider="openai", model="gpt-4.1", client_protocol="claude", status=200, upstream_latency_ms=12.5, input_tokens=10, output_tokens=5)
    assert capsys.readouterr().out == ""


def test_one_emf_line_per_request_on_lambda(off_lambda, capsys):
    off_lambda.setenv("AWS_LAMBDA_FUNCTION_NAME", "ccproxy-StreamingFunction-abc")
    off_lambda.setenv("POWERTOOLS_SERVICE_NAME", "ccproxy")  # as template.yaml sets it: no extra dimension
    telemetry.record(provider="openai", model="gpt-4.1-mini", client_protocol="claude", status=200, upstream_latency_ms=123.4, input_tokens=21, output_tokens=9)
    [line] = emf_lines(capsys.readouterr().out)
    directive = line["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "ccproxy"
    assert directive["Dimensions"] == [["provider", "model"]]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units == {
        "Requests": "Count", "Errors": "Count", "UpstreamLatency": "Milliseconds",
        "InputTokens": "Count", "OutputTokens": "Count",
    }  # fmt: skip
    assert (line["provider"], line["model"]) == ("openai", "gpt-4.1-mini")
    # Powertools writes each value as a list (EMF allows several per line).
    assert (line["Requests"], line["Errors"], line["UpstreamLatency"]) == ([1], [0], [123.4])
    assert (line["InputTokens"], line["OutputTokens"]) == ([21], [9])
    assert line["client_protocol"] == "claude" and line["status"] == 200
    assert isinstance(line["_aws"]["Timestamp"], int)


def test_errors_count_and_unknown_values_are_left_out(off_lambda, capsys):
    off_lambda.setenv("CCPROXY_METRICS", "1")
    telemetry.record(provider="gemini", model="gemini-2.5-flash", client_protocol="openai", status=429, upstream_latency_ms=None, input_tokens=None, output_tokens=None)
    telemetry.record(provider="gemini", model="gemini-2.5-flash", client_protocol="openai", status=200, upstream_latency_ms=80.0, input_tokens=3, output_tokens=None)
    first, second = emf_lines(capsys.readouterr().out)
    assert first["Errors"] == [1] and first["Requests"] == [1]
    assert not {"UpstreamLatency", "InputTokens", "OutputTokens"} & set(first)
    assert {m["Name"] for m in first["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {"Requests", "Errors"}
    assert second["Errors"] == [0] and second["InputTokens"] == [3] and "OutputTokens" not in second


def test_metrics_can_be_turned_off_on_lambda(off_lambda, capsys):
    off_lambda.setenv("AWS_LAMBDA_FUNCTION_NAME", "f")
    off_lambda.setenv("CCPROXY_METRICS", "0")
    telemetry.record(provider="openai", model="m", client_protocol="openai", status=200, upstream_latency_ms=1.0, input_tokens=1, output_tokens=1)
    assert capsys.readouterr().out == ""


def test_a_broken_metric_never_raises(off_lambda, capsys):
    off_lambda.setenv("CCPROXY_METRICS", "1")
    telemetry.record(provider="openai", model="m", client_protocol="openai", status=200, upstream_latency_ms=float("nan"), input_tokens=1, output_tokens=1)  # EMF refuses NaN; no exception here
    telemetry.record(provider="openai", model="m", client_protocol="openai", status=200, upstream_latency_ms=1.0, input_tokens=1, output_tokens=1)
    assert len(emf_lines(capsys.readouterr().out)) >= 1


def test_recording_is_cheap(off_lambda, capsys):
    off_lambda.setenv("CCPROXY_METRICS", "1")
    telemetry.record(provider="openai", model="m", client_protocol="openai", status=200, upstream_latency_ms=1.0, input_tokens=1, output_tokens=1)  # the lazy import
    count = 200
    started = time.perf_counter()
    for _ in range(count):
        telemetry.record(provider="openai", model="gpt-4.1-mini", client_protocol="claude", status=200, upstream_latency_ms=123.4, input_tokens=21, output_tokens=9)
    per_call = (time.perf_counter() - started) / count
    capsys.readouterr()
    assert per_call < 0.002, f"{per_call * 1e6:.0f} µs per record()"


def test_request_ids_from_mangum_and_from_the_adapter():
    mangum_scope = {
        "type": "http",
        "aws.context": SimpleNamespace(aws_request_id="lambda-req-1"),
        "aws.event": {"requestContext": {"requestId": "apigw-req-1"}},
        "headers": [],
    }
    assert telemetry.request_keys(mangum_scope) == {"function_request_id": "lambda-req-1", "correlation_id": "apigw-req-1"}
    adapter_scope = {
        "type": "http",
        "headers": [
            (b"x-amzn-lambda-context", json.dumps({"request_id": "lambda-req-2"}).encode()),
            (b"x-amzn-request-context", json.dumps({"requestId": "url-req-2"}).encode()),
        ],
    }
    assert telemetry.request_keys(adapter_scope) == {"function_request_id": "lambda-req-2", "correlation_id": "url-req-2"}
    assert telemetry.request_keys({"type": "http", "headers": [(b"x-amzn-lambda-context", b"not json")]}) == {}


def test_logging_is_left_alone_off_lambda(off_lambda):
    assert telemetry.setup_logging() is None


def _import_time(env: dict[str, str]) -> tuple[float, list[str]]:
    code = (
        "import sys, time, json\n"
        "t = time.perf_counter()\n"
        "import ccproxy.lambda_handler\n"
        "took = time.perf_counter() - t\n"
        "lazy = ['aws_lambda_powertools.utilities.parameters', 'aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch']\n"
        "print(json.dumps([took, [m for m in lazy if m in sys.modules]]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    took, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    return took, loaded


def test_importing_the_handler_is_cheap(deployment, record_property):
    """The cold start's own part: import the handler and build the app.
    Nothing is read from AWS yet (the secret is read on the first request);
    off Lambda, Powertools is not imported at all."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    base.update(deployment.env)
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    _import_time(base)  # warm the bytecode cache, as a deployed package has it
    off_aws = {k: v for k, v in base.items() if k not in ("CCPROXY_TABLE", "CCPROXY_LOG_BUCKET")}
    off_aws["CCPROXY_STATE"] = str(deployment.config_path.parent / "state.db")
    took_plain, loaded = _import_time(off_aws)
    assert loaded == []
    took_lambda, loaded = _import_time({**base, "AWS_LAMBDA_FUNCTION_NAME": "ccproxy-ApiFunction-test"})
    # On Lambda the JSON logger is set up at once (importing Powertools'
    # package brings its metrics module along); the secret is still not read.
    assert "aws_lambda_powertools.utilities.parameters" not in loaded
    record_property("handler_import_s", round(took_plain, 3))
    record_property("handler_import_lambda_s", round(took_lambda, 3))
    print(f"handler import: {took_plain:.3f}s; as on Lambda (boto3 clients, JSON logger): {took_lambda:.3f}s")
    # Generous bounds for slow CI machines; here it is about 0.3 s and 0.5 s.
    assert took_plain < 2.0 and took_lambda < 3.0


def test_the_metrics_observer_names_the_access_key_never_the_key(off_lambda, capsys):
    """The key's name rides as metadata on every metric line of its requests."""
    import asyncio

    from ccproxy.errors import ProxyError
    from ccproxy.unified import Response, Usage

    off_lambda.setenv("CCPROXY_METRICS", "1")
    metrics = telemetry.Metrics("claude")
    metrics.identified("laptop")
    metrics.attempt_started("openai", "gpt-4.1", "openai", "fp", False, False)
    metrics.attempt_failed("openai", "gpt-4.1", "fp", ProxyError(429, "slow down"))
    metrics.answered(Response(usage=Usage(input_tokens=3, output_tokens=2)), None, 12.0)
    asyncio.run(metrics.finish(200))
    lines = emf_lines(capsys.readouterr().out)
    assert [line["status"] for line in lines] == [429, 200]
    assert all(line["access_key"] == "laptop" for line in lines)
    assert all("provider" in d for line in lines for d in line["_aws"]["CloudWatchMetrics"][0]["Dimensions"])
