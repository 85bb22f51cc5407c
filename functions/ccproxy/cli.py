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
    app = create_app(Settings(config=config, secrets=secrets, open_when_no_keys=loopback))
    print(f"ccproxy: serving {config_path} on http://{args.host}:{args.port}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
