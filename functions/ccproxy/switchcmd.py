"""`ccproxy switch`: the group the `/switch` prefix routes to, changed live.

ccproxy switch                 print the active group and where it comes from
ccproxy switch GROUP           make GROUP the active group of every server sharing the state store
ccproxy switch --reset         forget the group switched to: the config's active_group again

The choice lives in the state store (the SQLite file of the machine's
servers, or the deployment's DynamoDB table), so it outlives a restart or a
redeploy; each server re-reads it every few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .command import Stop, stack_output_or_stop
from .config import Config, ConfigError, default_path, from_text, load
from .environment import Environment
from .live import ACTIVE_GROUP_SETTING
from .stores.state import DynamoStateStore, SqliteStateStore, StateStore, state_store_from_env

FOLLOW_NOTE = "every server follows within a few seconds"


def run(args: argparse.Namespace) -> int:
    env = Environment.read()
    config_path = Path(args.config) if args.config else default_path(env)
    if args.reset and args.group:
        raise Stop("give a GROUP or --reset, not both")
    config = _checked_config(_served_config(args, config_path), args.group) if args.group else None
    state = _state_store(args, env)
    try:
        if config is not None:
            _switch(state, args.group, config)
        elif args.reset:
            _reset(state, config_path)
        else:
            _show(state, config_path)
    finally:
        state.close()
    return 0


def _served_config(args: argparse.Namespace, config_path: Path) -> tuple[str, Callable[[], Config]]:
    """Where the groups a switch may choose are: with --stack, the config
    pushed to it (`ccproxy config push`) if there is one, which is what its
    functions serve; else the local file. As (its name, how to load it)."""
    if args.stack:
        pushed = _pushed_config(args.stack, args.region)
        if pushed is not None:
            return pushed
    return str(config_path), lambda: load(config_path)


def _pushed_config(stack: str, region: str | None) -> tuple[str, Callable[[], Config]] | None:
    from .command import stack_output
    from .configcmd import CONFIG_OUTPUT, object_location
    from .stores.config_object import ConfigObjectError, Pushed, S3ConfigObject

    try:
        url = stack_output(stack, CONFIG_OUTPUT, region)
    except Exception as exc:  # boto3's errors: credentials, region, missing stack
        raise Stop(f"cannot read stack {stack} ({type(exc).__name__}: {exc})", 1) from None
    if url is None:  # a stack deployed before config push: its packaged file is the local one
        return None
    bucket, key = object_location(url, f"stack {stack}'s {CONFIG_OUTPUT} output")
    try:
        found = S3ConfigObject(bucket, key, region=region).read_if_changed(None)
    except ConfigObjectError as exc:
        raise Stop(str(exc), 1) from None
    except Exception as exc:  # boto3's errors: credentials, region
        raise Stop(f"cannot read the config pushed to {url} ({type(exc).__name__}: {exc})", 1) from None
    if not isinstance(found, Pushed):
        return None  # nothing pushed: the functions serve the packaged file
    return url, lambda: from_text(found.body, url)


def _checked_config(served: tuple[str, Callable[[], Config]], group: str) -> Config:
    """The config, once it is known to have `group`."""
    where, read = served
    try:
        config = read()
    except ConfigError as exc:
        raise Stop(str(exc)) from None
    if group not in config.groups:
        known = ", ".join(config.groups) or "none"
        raise Stop(f"no group {group!r} in {where} (its groups: {known})")
    return config


def _load_if_possible(config_path: Path) -> tuple[Config | None, str]:
    """The config, or None and why not: showing or forgetting the choice
    does not need it, only says more with it."""
    try:
        return load(config_path), ""
    except ConfigError as exc:
        return None, str(exc)


def _state_store(args: argparse.Namespace, env: Environment) -> StateStore:
    """--table, else the table in --stack's outputs, else the store the
    environment names (as `ccproxy serve` and the functions choose it)."""
    table = args.table or (_stack_table(args.stack, args.region) if args.stack else None)
    try:
        if table:
            return DynamoStateStore(table, env=dataclasses.replace(env, aws_region=args.region or env.aws_region))
        if args.region:
            env = dataclasses.replace(env, aws_region=args.region)
        return state_store_from_env(env=env)
    except Exception as exc:  # a SQLite file that cannot be opened; boto3's errors: region, endpoint
        raise Stop(f"cannot open the state store ({type(exc).__name__}: {exc})", 1) from None


def _stack_table(stack: str, region: str | None) -> str:
    return stack_output_or_stop(stack, "StateTableName", region, "give --table")


def _where(state: StateStore) -> str:
    if isinstance(state, DynamoStateStore):
        return f"the DynamoDB table {state.table_name}"
    if isinstance(state, SqliteStateStore):
        return f"the state file {state.path}"
    return "the state store"


def _read(state: StateStore) -> str | None:
    try:
        return state.get_setting(ACTIVE_GROUP_SETTING)
    except Exception as exc:  # locked past the busy timeout; boto3's errors: credentials, missing table
        raise Stop(f"cannot read the active group from {_where(state)} ({type(exc).__name__}: {exc})", 1) from None


def _write(state: StateStore, group: str | None) -> None:
    try:
        state.put_setting(ACTIVE_GROUP_SETTING, group)
    except Exception as exc:  # locked past the busy timeout; boto3's errors: credentials, missing table
        raise Stop(f"cannot write the active group to {_where(state)} ({type(exc).__name__}: {exc})", 1) from None


def _switch(state: StateStore, group: str, config: Config) -> None:
    previous = _read(state) or config.active_group
    _write(state, group)
    print(f"active group: {group} (was {previous}); {FOLLOW_NOTE}")


def _reset(state: StateStore, config_path: Path) -> None:
    config, problem = _load_if_possible(config_path)
    previous = _read(state)
    _write(state, None)
    if config is None:
        print(f"ccproxy: {problem}", file=sys.stderr)
        configured = "the config's active_group"
    else:
        configured = f"{config.active_group}, the config's active_group"
    if previous is None:
        print(f"active group: {configured} (none was switched to)")
    else:
        print(f"active group: {configured} (was {previous}); {FOLLOW_NOTE}")


def _show(state: StateStore, config_path: Path) -> None:
    config, problem = _load_if_possible(config_path)
    chosen = _read(state)
    if chosen is None:
        if config is None:
            raise Stop(f"none switched to in {_where(state)}, and {problem}")
        print(f"active group: {config.active_group} (the config's active_group in {config_path}; none switched to)")
        return
    if config is None:
        print(f"active group: {chosen} (switched to, in {_where(state)})")
        print(f"ccproxy: {problem}", file=sys.stderr)
        return
    print(f"active group: {chosen} (switched to, in {_where(state)}; {config_path} says {config.active_group})")
    if chosen not in config.groups:
        print(
            f"ccproxy: {chosen!r} is no group of {config_path} (any more): /switch serves "
            f"{config.active_group} until you switch to another group or --reset",
            file=sys.stderr,
        )


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "switch", help="print or set the active group (/switch) of every server sharing the state store"
    )
    parser.add_argument("group", nargs="?", help="the group to switch to (none: print the active group)")
    parser.add_argument(
        "--reset", action="store_true", help="forget the group switched to: the config's active_group again"
    )
    parser.add_argument("--config", help="config file (default: $CCPROXY_CONFIG, then ./ccproxy.yaml)")
    parser.add_argument(
        "--table",
        help="the DynamoDB state table (default: $CCPROXY_TABLE, else the SQLite file $CCPROXY_STATE "
        "or .ccproxy/state.db)",
    )
    parser.add_argument("--stack", help="use the state table named by this stack's StateTableName output")
    parser.add_argument("--region", help="AWS region (default: boto3's, e.g. $AWS_REGION)")
    parser.set_defaults(run=run, log_level="warning")
