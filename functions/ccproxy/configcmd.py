"""`ccproxy config push`: the config file into the deployment's S3 object,
which every function serves within a re-read period, with no redeploy.

The file is checked here first, as the functions would load it, and only
then uploaded, byte for byte as checked. It must name its keys by `env:`
references alone: the bucket holds config, and keys belong in the secret
(`ccproxy keys push`), where the functions read them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .command import Stop, stack_output_or_stop
from .environment import Environment

CONFIG_OUTPUT = "ConfigObject"


def push(args: argparse.Namespace) -> int:
    path, body = _checked_config(args)
    bucket, key = _destination(args)
    etag = _upload(bucket, key, body, args.region)
    from .remote_config import CHECK_SECONDS

    print(f"pushed {path} to s3://{bucket}/{key} (ETag {etag.strip(chr(34))})")
    print(f"every function serves it within {CHECK_SECONDS:g} s; no redeploy needed")
    return 0


def _checked_config(args: argparse.Namespace) -> tuple[Path, bytes]:
    """The file's path and bytes, once they load as a config holding no literal key."""
    from .config import ConfigError, default_path, from_text

    path = Path(args.config) if args.config else default_path(Environment.read())
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise Stop(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        config = from_text(body, str(path))
    except ConfigError as exc:
        raise Stop(f"{exc}; nothing pushed") from None
    literal = literal_keys(config.providers, config.access_keys)
    if literal:
        raise Stop(
            f"{path}: {', '.join(literal)} {'holds' if len(literal) == 1 else 'hold'} a literal key; nothing pushed. "
            "The bucket is for config: name keys as env:NAME here (the functions never read those) and put "
            "the keys themselves in the secret (ccproxy keys push)"
        )
    return path, body


# Headers that carry credentials: a literal value of one is a key in the config.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"}
)


def literal_keys(providers: dict[str, Any], access_keys: list[Any]) -> list[str]:
    """Where the config holds a key itself rather than an `env:` reference,
    by place (never by value): provider keys, credential headers, a proxy
    URL with a password, access keys."""
    found = []
    for provider_id, provider in providers.items():
        for index, key in enumerate(provider.keys):
            if key and not key.startswith("env:"):
                found.append(f"providers.{provider_id}.keys[{index}]")
        for name in provider.headers:
            if name.lower() in CREDENTIAL_HEADERS:
                found.append(f"providers.{provider_id}.headers.{name}")
        if provider.proxy and "@" in provider.proxy.partition("://")[2].partition("/")[0]:
            found.append(f"providers.{provider_id}.proxy")
    for index, entry in enumerate(access_keys):
        key = entry.get("key") if isinstance(entry, dict) else entry
        if isinstance(key, str) and key and not key.startswith("env:"):
            found.append(f"access_keys[{index}]")
    return found


def _destination(args: argparse.Namespace) -> tuple[str, str]:
    """(bucket, key): from --to, else from the stack's ConfigObject output."""
    if args.to:
        return object_location(args.to, "--to")
    url = stack_output_or_stop(
        args.stack,
        CONFIG_OUTPUT,
        args.region,
        "deployed before config push? deploy it again, or give --to s3://BUCKET/KEY",
    )
    return object_location(url, f"stack {args.stack}'s {CONFIG_OUTPUT} output")


def object_location(url: str, where: str) -> tuple[str, str]:
    """(bucket, key) of an object's s3:// URL; `where` names the URL's source in the refusal."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not bucket or not key or key.endswith("/"):
        raise Stop(f"{where}: not an object's s3://bucket/key: {url!r}")
    return bucket, key


def _upload(bucket: str, key: str, body: bytes, region: str | None) -> str:
    from .stores.config_object import ConfigObjectError, S3ConfigObject

    try:
        return S3ConfigObject(bucket, key, region=region).put(body)
    except ConfigObjectError as exc:
        raise Stop(str(exc)) from None
    except Exception as exc:  # boto3/botocore errors: credentials, region, missing bucket
        raise Stop(f"cannot write s3://{bucket}/{key} ({type(exc).__name__}: {exc})", 1) from None


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("config", help="the deployment's live config")
    actions = parser.add_subparsers(dest="config_action", required=True)
    push_parser = actions.add_parser(
        "push", help="check the config file and upload it; every function serves it within 30 s, no redeploy"
    )
    push_parser.add_argument("--config", help="the config file (default: $CCPROXY_CONFIG, then ./ccproxy.yaml)")
    where = push_parser.add_mutually_exclusive_group()
    where.add_argument(
        "--stack", default="ccproxy", help="the stack whose ConfigObject output names the object (default: ccproxy)"
    )
    where.add_argument("--to", metavar="s3://BUCKET/KEY", help="upload to this object instead")
    push_parser.add_argument("--region", help="AWS region (default: boto3's, e.g. $AWS_REGION)")
    push_parser.set_defaults(run=push, log_level="warning")
