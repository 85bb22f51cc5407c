"""The `ccproxy` console script."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from .config import ConfigError, default_path, load


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import Settings, create_app
    from .keys import KeyRing
    from .stores.secrets import secret_store_from_env
    from .stores.state import state_store_from_env

    config_path = Path(args.config) if args.config else default_path()
    try:
        config = load(config_path)
    except ConfigError as exc:
        print(f"ccproxy: {exc}", file=sys.stderr)
        return 2
    secrets = secret_store_from_env(config_path)
    loopback = _is_loopback(args.host)
    if not loopback and not KeyRing(config, secrets).access_keys():
        print(
            f"ccproxy: refusing to listen on {args.host} without an access key: "
            "set access_keys in the config or the secrets (or listen on 127.0.0.1)",
            file=sys.stderr,
        )
        return 2
    from .stores.logs import log_sink_from_env

    settings = Settings(config=config, secrets=secrets, open_when_no_keys=loopback, state=state_store_from_env(),
                        logs=log_sink_from_env())
    app = create_app(settings)
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

    config_path = Path(args.config) if args.config else default_path()
    try:
        config = load(config_path)
    except ConfigError as exc:
        print(f"ccproxy: {exc}", file=sys.stderr)
        return 2
    ring = KeyRing(config, secret_store_from_env(config_path))
    state = state_store_from_env()
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
                    f"cooling{' on ' + c.entry[len(name) + 1:] if c.entry != name else ''} "
                    f"{max(1, round(c.until - now))}s ({c.reason})" for c in cooling
                )
            used = usage.get(name)
            rows.append((provider_id, name.split("#", 1)[1], status,
                         str(used.requests if used else 0), str(used.input_tokens if used else 0),
                         str(used.output_tokens if used else 0)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    state.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ccproxy", description="Any LLM client on any model.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the proxy")
    serve_parser.add_argument("--config", help="config file (default: $CCPROXY_CONFIG, then ./ccproxy.yaml)")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=11435)
    serve_parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve_parser.set_defaults(run=serve)
    keys_parser = commands.add_parser("keys", help="list provider keys (by fingerprint), cooldowns and today's usage")
    keys_parser.add_argument("--config", help="config file (default: $CCPROXY_CONFIG, then ./ccproxy.yaml)")
    keys_parser.set_defaults(run=keys, log_level="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
