"""The `ccproxy` console script."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, default_path, load
from .environment import Environment


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def _config_path(args: argparse.Namespace, env: Environment) -> Path:
    return Path(args.config) if args.config else default_path(env)


def _load_or_say_why(path: Path) -> Config | None:
    """The config, or None once stderr says why it cannot be loaded."""
    try:
        return load(path)
    except ConfigError as exc:
        print(f"ccproxy: {exc}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import Settings, create_app
    from .keys import KeyRing
    from .stores.secrets import secret_store_from_env
    from .stores.state import state_store_from_env

    env = Environment.read()
    config_path = _config_path(args, env)
    config = _load_or_say_why(config_path)
    if config is None:
        return 2
    secrets = secret_store_from_env(config_path, env=env)
    loopback = _is_loopback(args.host)
    if not loopback and not KeyRing(config, secrets).access_keys():
        print(
            f"ccproxy: refusing to listen on {args.host} without an access key: "
            "set access_keys in the config or the secrets (or listen on 127.0.0.1)",
            file=sys.stderr,
        )
        return 2
    from .stores.logs import log_sink_from_env

    settings = Settings(
        config=config,
        secrets=secrets,
        open_when_no_keys=loopback,
        state=state_store_from_env(env=env),
        logs=log_sink_from_env(env),
    )
    app = create_app(settings)
    # One line per request unless asked for quiet, whatever the log level.
    logging.getLogger("ccproxy.access").setLevel(logging.WARNING if args.quiet else logging.INFO)
    print(f"ccproxy: serving {config_path} on http://{args.host}:{args.port}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def keys(args: argparse.Namespace) -> int:
    """Each provider's keys by fingerprint, with cooldowns and today's usage."""
    import datetime
    import time

    from .keys import KeyRing
    from .rotation import key_name
    from .stores.secrets import secret_store_from_env
    from .stores.state import state_store_from_env

    env = Environment.read()
    config_path = _config_path(args, env)
    config = _load_or_say_why(config_path)
    if config is None:
        return 2
    ring = KeyRing(config, secret_store_from_env(config_path, env=env))
    state = state_store_from_env(env=env)
    now = time.time()
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    cooldowns = state.cooldowns(now)
    usage = {u.entry: u for u in state.usage(day)}
    rows = [("PROVIDER", "KEY", "STATE", f"REQUESTS {day}", "INPUT", "OUTPUT")]
    for provider_id in config.providers:
        try:
            provider_keys = ring.provider_keys(provider_id)
        except Exception as exc:  # a missing key is shown, not fatal
            rows.append((provider_id, "-", f"no key: {getattr(exc, 'message', exc)}", "", "", ""))
            continue
        for key in provider_keys:
            name = key_name(provider_id, key)
            cooling = [c for c in cooldowns if c.entry == name or c.entry.startswith(name + "#")]
            status = "ready"
            if cooling:
                status = "; ".join(
                    f"cooling{' on ' + c.entry[len(name) + 1 :] if c.entry != name else ''} "
                    f"{max(1, round(c.until - now))}s ({c.reason})"
                    for c in cooling
                )
            used = usage.get(name)
            rows.append(
                (
                    provider_id,
                    name.split("#", 1)[1],
                    status,
                    str(used.requests if used else 0),
                    str(used.input_tokens if used else 0),
                    str(used.output_tokens if used else 0),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    state.close()
    return 0


SECRET_LIMIT = 65536  # bytes: the most a Secrets Manager secret value holds


def _stack_output(stack: str, key: str, region: str | None) -> str | None:
    import boto3

    reply = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)
    for output in reply["Stacks"][0].get("Outputs") or []:
        if output.get("OutputKey") == key:
            return output.get("OutputValue")
    return None


class _Stop(Exception):
    """A command stops here: `message` goes to stderr, `code` is the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def keys_push(args: argparse.Namespace) -> int:
    """Write the local secrets file into the deployment's secret. Prints key
    fingerprints and counts, never a key."""
    env = Environment.read()
    config_path = _config_path(args, env)
    source = Path(args.file) if args.file else env.secrets_file or config_path.parent / "secrets.json"
    try:
        secrets = _read_secrets(source)
        known = _known_providers(config_path)
        secret_id = _secret_id(args, env)
        document = _secret_document(secrets, source)
        if not args.dry_run:
            _put_secret(secret_id, document, args.region)
    except _Stop as stop:
        if str(stop):
            print(f"ccproxy: {stop}", file=sys.stderr)
        return stop.code
    _report_push(args, source, secret_id, secrets, known, config_path)
    return 0


def _read_secrets(source: Path) -> Any:
    import json

    from .stores.secrets import SecretsError, parse_secrets

    try:
        return parse_secrets(json.loads(source.read_text()), str(source))
    except FileNotFoundError:
        raise _Stop(f"no secrets file at {source} (give one with --file, or set CCPROXY_SECRETS_FILE)") from None
    except ValueError as exc:
        where = f"line {getattr(exc, 'lineno', '?')}"
        raise _Stop(f"{source}: not valid JSON ({exc.__class__.__name__}: {where})") from None
    except (OSError, SecretsError) as exc:
        raise _Stop(str(exc)) from None


def _known_providers(config_path: Path) -> set[str] | None:
    """The config's provider ids, to point out secrets for none of them
    (None: no config to compare with)."""
    if not config_path.exists():
        return None
    config = _load_or_say_why(config_path)
    if config is None:
        raise _Stop("")  # stderr says why already
    return set(config.providers)


def _secret_id(args: argparse.Namespace, env: Environment) -> str:
    secret_id = args.secret_id or env.secret_id
    if secret_id:
        return secret_id
    try:
        secret_id = _stack_output(args.stack, "SecretId", args.region)
    except Exception as exc:  # boto3/botocore errors: credentials, region, missing stack
        raise _Stop(f"cannot write the secret ({type(exc).__name__}: {exc})", 1) from None
    if not secret_id:
        raise _Stop(f"stack {args.stack} has no SecretId output; give --secret-id")
    return secret_id


def _secret_document(secrets: Any, source: Path) -> str:
    import json

    document = json.dumps({"providers": secrets.providers, "access_keys": secrets.access_keys}, separators=(",", ":"))
    size = len(document.encode())
    if size > SECRET_LIMIT:
        raise _Stop(f"{source} is {size} bytes; a secret holds at most {SECRET_LIMIT}")
    return document


def _put_secret(secret_id: str, document: str, region: str | None) -> None:
    import boto3

    try:
        boto3.client("secretsmanager", region_name=region).put_secret_value(SecretId=secret_id, SecretString=document)
    except Exception as exc:  # boto3/botocore errors: credentials, region, missing secret
        raise _Stop(f"cannot write the secret ({type(exc).__name__}: {exc})", 1) from None


def _report_push(
    args: argparse.Namespace, source: Path, secret_id: str, secrets: Any, known: set[str] | None, config_path: Path
) -> None:
    from .keys import fingerprint

    def listed(keys: list[str]) -> str:
        return f"{len(keys)} key{'' if len(keys) == 1 else 's'} ({', '.join(fingerprint(k) for k in keys)})"

    print(f"{'would push' if args.dry_run else 'pushed'} {source} to {secret_id}")
    for provider_id, provider_keys in secrets.providers.items():
        note = "" if known is None or provider_id in known else f"  (no provider {provider_id!r} in {config_path})"
        print(f"  provider {provider_id}: {listed(provider_keys)}{note}")
    print(f"  access keys: {listed(secrets.access_keys)}")
    if not secrets.access_keys:
        print("warning: no access_keys: the deployment refuses every request until one is added", file=sys.stderr)
    if not args.dry_run:
        print("the functions re-read the secret within 5 minutes; no redeploy needed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ccproxy", description="Any LLM client on any model.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the proxy")
    serve_parser.add_argument("--config", help="config file (default: $CCPROXY_CONFIG, then ./ccproxy.yaml)")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=11435)
    serve_parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve_parser.add_argument("--quiet", action="store_true", help="no access log line per request")
    serve_parser.set_defaults(run=serve)
    keys_parser = commands.add_parser("keys", help="list provider keys (by fingerprint), cooldowns and today's usage")
    keys_parser.add_argument("--config", help="config file (default: $CCPROXY_CONFIG, then ./ccproxy.yaml)")
    keys_parser.set_defaults(run=keys, log_level="warning")
    keys_actions = keys_parser.add_subparsers(dest="keys_action")
    push_parser = keys_actions.add_parser(
        "push", help="write the local secrets file into the deployment's Secrets Manager secret"
    )
    # SUPPRESS: `ccproxy keys --config F push` keeps the F given before `push`.
    push_parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="config file; secrets.json beside it is pushed (default: $CCPROXY_CONFIG, then ./ccproxy.yaml)",
    )
    push_parser.add_argument(
        "--file", help="the secrets file to push (default: $CCPROXY_SECRETS_FILE, then secrets.json beside the config)"
    )
    push_parser.add_argument(
        "--secret-id", help="the secret (default: $CCPROXY_SECRET_ID, then the stack's SecretId output)"
    )
    push_parser.add_argument(
        "--stack", default="ccproxy", help="the stack whose SecretId output names the secret (default: ccproxy)"
    )
    push_parser.add_argument("--region", help="AWS region (default: boto3's, e.g. $AWS_REGION)")
    push_parser.add_argument("--dry-run", action="store_true", help="check and summarize the file; write nothing")
    push_parser.set_defaults(run=keys_push, log_level="warning")
    from .logview import add_parser as add_logs_parser

    add_logs_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s"
    )
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
