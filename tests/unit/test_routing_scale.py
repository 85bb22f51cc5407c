"""Alias lookup is compiled once per config and does not grow with the number
of aliases, and the first alias in config order that matches still wins."""

from __future__ import annotations

import fnmatch
import gc
import random
import re
import time

import pytest
from ccproxy import routing
from ccproxy.config import parse
from ccproxy.errors import ProxyError
from ccproxy.routing import resolve

ALIASES = 1000


def _config(models: dict[str, str]) -> object:
    return parse(
        {"providers": {"p": {"protocol": "openai", "base_url": "http://x"}}, "groups": {"default": {"models": models}}},
        "test",
    )


def _per_call_ms(call, calls: int = 2000) -> float:
    call()  # compiled on first use
    best = float("inf")
    for _ in range(3):  # the best of three runs: a shared machine adds noise, never removes it
        started = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - started) * 1000 / calls)
    return best


def _miss(config, name: str) -> None:
    try:
        resolve(config, "default", name)
    except ProxyError:
        return
    raise AssertionError(f"{name} matched")


@pytest.mark.parametrize(
    "shape",
    [
        lambda i: f"model-{i}",              # exact names
        lambda i: f"model-{i}-*",            # globs with a literal head
        lambda i: f"*-v{i}",                 # globs with a literal tail only
        lambda i: f"fam{i % 7}-?-{i}*" if i % 2 else f"exact-{i}",  # a mix
    ],
    ids=["exact", "head-globs", "tail-globs", "mixed"],
)
def test_lookup_of_the_last_alias_and_of_a_miss_does_not_grow(shape) -> None:
    aliases = [shape(i) for i in range(ALIASES)]
    config = _config({alias: f"p/m{i}" for i, alias in enumerate(aliases)})
    last = aliases[-1].replace("*", "x").replace("?", "q")
    assert resolve(config, "default", last).alias == aliases[-1]
    hit = _per_call_ms(lambda: resolve(config, "default", last))
    miss = _per_call_ms(lambda: _miss(config, "no-such-model-anywhere"))
    print(f"\n{ALIASES} aliases: last alias {hit * 1000:.1f} us, miss {miss * 1000:.1f} us per lookup")
    assert hit < 0.2, f"{hit:.3f} ms per lookup of the last alias"
    assert miss < 0.2, f"{miss:.3f} ms per missed lookup"


def test_the_first_alias_in_config_order_wins() -> None:
    config = _config({"gpt-*": "p/glob", "gpt-4": "p/exact", "claude-3": "p/exact2", "claude-?": "p/glob2", "*": "p/any"})
    # A glob listed before an exact name it also matches wins, as before.
    assert str(resolve(config, "default", "gpt-4").targets[0]) == "p/glob"
    # An exact name listed before a glob wins.
    assert str(resolve(config, "default", "claude-3").targets[0]) == "p/exact2"
    assert str(resolve(config, "default", "claude-4").targets[0]) == "p/glob2"
    assert resolve(config, "default", "other").alias == "*"
    assert str(resolve(config, "default", "default@gpt-9").targets[0]) == "p/glob"


def test_compiled_once_per_config(monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    original = routing._AliasMatcher.__init__

    def counting(self, models):
        built.append(1)
        original(self, models)

    monkeypatch.setattr(routing._AliasMatcher, "__init__", counting)
    config = _config({f"m{i}-*": "p/m" for i in range(50)})
    for i in range(100):
        resolve(config, "default", f"m{i % 50}-x")
    assert len(built) == 1
    other = _config({"only": "p/m"})
    resolve(other, "default", "only")
    assert len(built) == 2
    # A config that goes away takes its compiled matcher with it.
    key = id(other)
    del other
    gc.collect()
    assert key not in routing._matchers


def test_same_answers_as_trying_each_glob_in_turn() -> None:
    """Random globs over a small alphabet (heads, tails, classes, stray
    brackets) against the plain first-match loop the matcher replaces."""
    rng = random.Random(7)
    pieces = ["a", "b", "-", "*", "?", "[ab]", "[!a]", "]", "[", "ab"]
    for _ in range(200):
        aliases = list(dict.fromkeys("".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(12)))
        config = _config({alias: "p/m" for alias in aliases})
        for _ in range(40):
            name = "".join(rng.choice("ab-[]x") for _ in range(rng.randint(1, 5)))
            expected = next((a for a in aliases if re.compile(fnmatch.translate(a)).match(name)), None)
            try:
                got = resolve(config, "default", name).alias
            except ProxyError:
                got = None
            assert got == expected, (aliases, name)
