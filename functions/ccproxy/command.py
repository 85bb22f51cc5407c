"""What every `ccproxy` command shares: how one stops with a message, and
how one finds a resource of the deployed stack."""

from __future__ import annotations


class Stop(Exception):
    """The command stops here: its message (if any) goes to stderr, `code`
    is the exit status (2: the user's input; 1: a store or AWS failed)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def stack_output(stack: str, key: str, region: str | None) -> str | None:
    """The stack's output `key`, or None when it has none. Raises boto3's
    errors (credentials, region, no such stack)."""
    import boto3

    reply = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)
    for output in reply["Stacks"][0].get("Outputs") or []:
        if output.get("OutputKey") == key:
            return output.get("OutputValue")
    return None


def stack_output_or_stop(stack: str, key: str, region: str | None, instead: str) -> str:
    """The stack's output `key`; `instead` says what to do where the stack has none."""
    try:
        found = stack_output(stack, key, region)
    except Exception as exc:  # boto3/botocore errors: credentials, region, missing stack
        raise Stop(f"cannot read stack {stack} ({type(exc).__name__}: {exc})", 1) from None
    if not found:
        raise Stop(f"stack {stack} has no {key} output; {instead}")
    return found
