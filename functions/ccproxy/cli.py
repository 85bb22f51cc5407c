"""The `ccproxy` console script."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from .command import Stop, stack_output, stack_output_or_stop
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
    from .live import FileSource
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
        # An edit of the file serves at once; a broken one is refused and logged.
        config_source=FileSource(config_path),
        watch_config=True,
    )
    app = create_app(settings)
    # One line per request unless asked for quiet, whatever the log level.
    logging.getLogger("ccproxy.access").setLevel(logging.WARNING if args.quiet else logging.INFO)
    print(f"ccproxy: serving {config_path} on http://{args.host}:{args.port}", file=sys.stderr)
    # proxy_headers off: ccproxy uses neither the client's address nor the
    # scheme, so X-Forwarded-* would only cost a middleware per request.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, proxy_headers=False)
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


def keys_push(args: argparse.Namespace) -> int:
    """Write the local secrets file into the deployment's secret. Prints key
    fingerprints and counts, never a key."""
    env = Environment.read()
    config_path = _config_path(args, env)
    source = Path(args.file) if args.file else env.secrets_file or config_path.parent / "secrets.json"
    secrets = _read_secrets(source)
    known = _known_providers(config_path)
    secret_id = _secret_id(args, env)
    document = _secret_document(secrets, source)
    if not args.dry_run:
        _put_secret(secret_id, document, args.region)
    _report_push(args, source, secret_id, secrets, known, config_path)
    return 0


def _read_secrets(source: Path) -> Any:
    import json

    from .stores.secrets import SecretsError, parse_secrets

    try:
        return parse_secrets(json.loads(source.read_text()), str(source))
    except FileNotFoundError:
        raise Stop(f"no secrets file at {source} (give one with --file, or set CCPROXY_SECRETS_FILE)") from None
    except ValueError as exc:
        where = f"line {getattr(exc, 'lineno', '?')}"
        raise Stop(f"{source}: not valid JSON ({exc.__class__.__name__}: {where})") from None
    except (OSError, SecretsError) as exc:
        raise Stop(str(exc)) from None


def _known_providers(config_path: Path) -> set[str] | None:
    """The config's provider ids, to point out secrets for none of them
    (None: no config to compare with)."""
    if not config_path.exists():
        return None
    config = _load_or_say_why(config_path)
    if config is None:
        raise Stop("")  # stderr says why already
    return set(config.providers)


def _secret_id(args: argparse.Namespace, env: Environment) -> str:
    secret_id = args.secret_id or env.secret_id
    if secret_id:
        return secret_id
    try:
        secret_id = stack_output(args.stack, "SecretId", args.region)
    except Exception as exc:  # boto3/botocore errors: credentials, region, missing stack
        raise Stop(f"cannot write the secret ({type(exc).__name__}: {exc})", 1) from None
    if not secret_id:
        raise Stop(f"stack {args.stack} has no SecretId output; give --secret-id")
    return secret_id


def _secret_document(secrets: Any, source: Path) -> str:
    import json

    document = json.dumps(secrets.document(), separators=(",", ":"))
    size = len(document.encode())
    if size > SECRET_LIMIT:
        raise Stop(f"{source} is {size} bytes; a secret holds at most {SECRET_LIMIT}")
    return document


def _put_secret(secret_id: str, document: str, region: str | None) -> None:
    import boto3

    try:
        boto3.client("secretsmanager", region_name=region).put_secret_value(SecretId=secret_id, SecretString=document)
    except Exception as exc:  # boto3/botocore errors: credentials, region, missing secret
        raise Stop(f"cannot write the secret ({type(exc).__name__}: {exc})", 1) from None


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
    names = ", ".join(k.name for k in secrets.access_keys)
    count = len(secrets.access_keys)
    print(f"  access keys: {count} key{'' if count == 1 else 's'} ({names})")
    if not secrets.access_keys:
        print("warning: no access_keys: the deployment refuses every request until one is added", file=sys.stderr)
    if not args.dry_run:
        print("the functions re-read the secret within 5 minutes; no redeploy needed")


# ------------------------------------------------------------ ccproxy access


class _SecretsTarget:
    """Where `ccproxy access` reads and writes the secrets document: the
    local secrets file, or (with --secret-id or --stack) the AWS secret."""

    def __init__(self, args: argparse.Namespace, env: Environment, config_path: Path) -> None:
        self.region = args.region
        self.secret_id: str | None = None
        self.path: Path | None = None
        if args.secret_id or args.stack:
            self.secret_id = args.secret_id or stack_output_or_stop(
                args.stack, "SecretId", args.region, "give --secret-id"
            )
        else:
            self.path = Path(args.file) if args.file else env.secrets_file or config_path.parent / "secrets.json"

    def __str__(self) -> str:
        return f"the secret {self.secret_id}" if self.secret_id else str(self.path)

    def read(self) -> dict[str, Any]:
        """The document as stored (an absent file is an empty document)."""
        import json

        from .stores.secrets import SecretsError, parse_secrets

        try:
            if self.secret_id:
                import boto3

                client = boto3.client("secretsmanager", region_name=self.region)
                text = client.get_secret_value(SecretId=self.secret_id).get("SecretString") or "{}"
            else:
                assert self.path is not None
                text = self.path.read_text() if self.path.exists() else "{}"
            data = json.loads(text) or {}
            parse_secrets(data, str(self))  # its shape checked before anything is changed
        except SecretsError as exc:
            raise Stop(str(exc)) from None
        except ValueError:
            raise Stop(f"{self}: not valid JSON") from None
        except Exception as exc:  # boto3/botocore errors: credentials, region, missing secret
            raise Stop(f"cannot read {self} ({type(exc).__name__}: {exc})", 1) from None
        data.setdefault("providers", {})
        data.setdefault("access_keys", [])
        return data

    def write(self, data: dict[str, Any]) -> None:
        import json
        import os

        document = json.dumps(data, indent=None if self.secret_id else 2)
        if len(document.encode()) > SECRET_LIMIT:
            raise Stop(f"the secrets document would be {len(document.encode())} bytes; a secret holds {SECRET_LIMIT}")
        if self.secret_id:
            _put_secret(self.secret_id, document, self.region)
            return
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(document + "\n")
        os.replace(temporary, self.path)


def _access_context(args: argparse.Namespace) -> tuple[Environment, Path, Config | None, _SecretsTarget]:
    env = Environment.read()
    config_path = _config_path(args, env)
    config = None
    if config_path.exists():
        config = _load_or_say_why(config_path)
        if config is None:
            raise Stop("")  # stderr says why already
    return env, config_path, config, _SecretsTarget(args, env, config_path)


def _named_keys(data: dict[str, Any], where: str) -> list[Any]:
    from .stores.secrets import parse_access_keys

    try:
        return parse_access_keys(data.get("access_keys") or [], where)
    except ValueError as exc:
        raise Stop(str(exc)) from None


NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


def access_add(args: argparse.Namespace) -> int:
    """A new random key, printed once and added to the secrets."""
    import datetime
    import re
    import secrets as random_source

    from .stores.secrets import AccessKey

    if not re.fullmatch(NAME_PATTERN, args.name):
        raise Stop(f"a key's name is letters, digits, '.', '_' and '-' (at most 64): not {args.name!r}")
    expires = None
    if args.expires:
        try:
            expires = datetime.date.fromisoformat(args.expires)
        except ValueError:
            raise Stop(f"--expires: not a date (YYYY-MM-DD): {args.expires!r}") from None
    for flag in ("rpm", "tokens_per_day"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise Stop(f"--{flag.replace('_', '-')} must be at least 1")
    _, _, config, target = _access_context(args)
    data = target.read()
    existing = _named_keys(data, str(target)) + (config.resolved_access_keys() if config else [])
    if any(k.name == args.name for k in existing):
        raise Stop(f"an access key named {args.name!r} exists already (revoke it first)")
    key = AccessKey(
        args.name,
        "ccp-" + random_source.token_urlsafe(32),
        tuple(_split(args.groups)) if args.groups else None,
        tuple(_split(args.models)) if args.models else None,
        args.rpm,
        args.tokens_per_day,
        expires,
    )
    data["access_keys"].append(key.document())
    target.write(data)
    print(key.key)
    print(
        f"ccproxy: added access key {key.name} ({key.fingerprint}) to {target}; "
        "the key is shown only this once: keep it now",
        file=sys.stderr,
    )
    if target.secret_id:
        print("ccproxy: the functions re-read the secret within 5 minutes", file=sys.stderr)
    return 0


def _split(values: list[str]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def access_revoke(args: argparse.Namespace) -> int:
    """Remove the key from the secrets and record its revocation in the
    state store, which every process reads within a minute."""
    from .access import revoke
    from .stores.state import state_store_from_env

    env, config_path, config, target = _access_context(args)
    data = target.read()
    entries = data["access_keys"]
    parsed = _named_keys(data, str(target))
    found = [i for i, key in enumerate(parsed) if key.name == args.name]
    in_config = [k for k in (config.resolved_access_keys() if config else []) if k.name == args.name]
    if not found and not in_config:
        raise Stop(f"no access key named {args.name!r} in {target}", 1)
    revoked = [parsed[i] for i in found] + in_config
    if found:
        # parse_access_keys drops empty entries: map back to the stored list.
        kept = [e for e in entries if not (e and _entry_name(e) == args.name)]
        data["access_keys"] = kept
        target.write(data)
    state = state_store_from_env(env=env)
    try:
        for key in revoked:
            revoke(state, key)
    finally:
        state.close()
    fingerprints = ", ".join(k.fingerprint for k in revoked)
    print(f"revoked access key {args.name} ({fingerprints})" + (f": removed from {target}" if found else ""))
    if in_config:
        print(f"ccproxy: the key is also in {config_path}: remove it there too", file=sys.stderr)
    print("every ccproxy sharing this state store refuses it within a minute")
    return 0


def _entry_name(entry: Any) -> str | None:
    from .stores.secrets import parse_access_key

    try:
        return parse_access_key(entry, "entry").name
    except ValueError:
        return None


def access_list(args: argparse.Namespace) -> int:
    """Every access key: name, fingerprint, scope, limits, today's use, expiry."""
    import time

    from .access import revoked_counter
    from .stores.state import state_store_from_env, utc_day

    env, _, config, target = _access_context(args)
    keys = (config.resolved_access_keys() if config else []) + _named_keys(target.read(), str(target))
    now = time.time()
    today = utc_day(now)
    state = state_store_from_env(env=env)
    try:
        used: dict[str, list[int]] = {}
        for usage in state.usage(today.isoformat()):
            parts = usage.entry.split("#", 2)
            if len(parts) == 3 and parts[0] == "access":
                counts = used.setdefault(parts[1], [0, 0])
                counts[0] += usage.requests
                counts[1] += usage.input_tokens + usage.output_tokens
        revoked = {k.name for k in keys if state.read_amount(revoked_counter(k), now) > 0}
    finally:
        state.close()
    rows = [("NAME", "KEY", "GROUPS", "MODELS", "RPM", "TOKENS/DAY", f"REQUESTS {today}", "TOKENS", "EXPIRES")]
    for key in keys:
        requests, tokens = used.get(key.name, [0, 0])
        expires = key.expires.isoformat() if key.expires else "never"
        if key.name in revoked:
            expires += " (revoked)"
        elif key.expired(today):
            expires += " (expired)"
        rows.append(
            (
                key.name,
                key.fingerprint,
                ",".join(key.groups) if key.groups is not None else "*",
                ",".join(key.models) if key.models is not None else "*",
                str(key.rpm) if key.rpm else "-",
                str(key.tokens_per_day) if key.tokens_per_day else "-",
                str(requests),
                str(tokens),
                expires,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if len(rows) == 1:
        print(f"no access keys (in the config or {target})", file=sys.stderr)
    return 0


def _add_access_parser(commands: Any) -> None:
    def where(parser: argparse.ArgumentParser, suppress: bool) -> None:
        default: Any = argparse.SUPPRESS if suppress else None
        parser.add_argument(
            "--config", default=default, help="config file (default: $CCPROXY_CONFIG, then ./ccproxy.yaml)"
        )
        parser.add_argument(
            "--file",
            default=default,
            help="the local secrets file (default: $CCPROXY_SECRETS_FILE, then secrets.json beside the config)",
        )
        parser.add_argument("--secret-id", default=default, help="use this AWS Secrets Manager secret instead")
        parser.add_argument("--stack", default=default, help="use the secret named by this stack's SecretId output")
        parser.add_argument("--region", default=default, help="AWS region (default: boto3's, e.g. $AWS_REGION)")

    access_parser = commands.add_parser(
        "access", help="list, add and revoke named access keys (scope, limits, today's use)"
    )
    where(access_parser, False)
    access_parser.set_defaults(run=access_list, log_level="warning")
    actions = access_parser.add_subparsers(dest="access_action")
    add_parser = actions.add_parser("add", help="make a new key, print it once and add it to the secrets")
    add_parser.add_argument("name")
    add_parser.add_argument("--groups", nargs="+", help="the groups it may use (default: all)")
    add_parser.add_argument("--models", nargs="+", help="model name globs it may use, e.g. 'claude-*' (default: all)")
    add_parser.add_argument("--rpm", type=int, help="requests per minute, at most")
    add_parser.add_argument("--tokens-per-day", type=int, help="input + output tokens per UTC day, at most")
    add_parser.add_argument("--expires", help="the last day it is valid, YYYY-MM-DD (UTC)")
    where(add_parser, True)
    add_parser.set_defaults(run=access_add, log_level="warning")
    revoke_parser = actions.add_parser("revoke", help="remove a key and refuse it everywhere within a minute")
    revoke_parser.add_argument("name")
    where(revoke_parser, True)
    revoke_parser.set_defaults(run=access_revoke, log_level="warning")


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
    _add_access_parser(commands)
    from .logview import add_parser as add_logs_parser

    add_logs_parser(commands)
    from .switchcmd import add_parser as add_switch_parser

    add_switch_parser(commands)
    from .configcmd import add_parser as add_config_parser

    add_config_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s"
    )
    # The format shows no caller, thread or process, so no record looks them
    # up (the logging HOWTO's optimizations; `serve` logs a line per request).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    try:
        return args.run(args)
    except Stop as stop:
        if str(stop):
            print(f"ccproxy: {stop}", file=sys.stderr)
        return stop.code


if __name__ == "__main__":
    sys.exit(main())
