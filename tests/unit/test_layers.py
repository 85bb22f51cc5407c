"""The shape of the code, checked: layers import only downward, no module
imports itself back round a cycle, and the core names no protocol.

Module-level imports are read from the source with `ast` (an import inside a
function is a deliberate lazy one and not a layering edge).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "functions"
PACKAGE = ROOT / "ccproxy"

# What the protocol registry lists; the core must never name one.
PROTOCOL_NAMES = {"openai", "claude", "gemini", "ollama"}
CORE = ("ccproxy.proxy", "ccproxy.pipeline", "ccproxy.app", "ccproxy.rotation", "ccproxy.routing", "ccproxy.observe")

# The pure layers and what each may import from ccproxy (prefixes).
LEAVES = ("ccproxy.errors", "ccproxy.jsonutil", "ccproxy.ids", "ccproxy.framing", "ccproxy.unified", "ccproxy")
ALLOWED = {
    "ccproxy.protocols": LEAVES + ("ccproxy.protocols",),
    "ccproxy.compat": LEAVES + ("ccproxy.compat",),
    "ccproxy.stores": ("ccproxy.jsonutil", "ccproxy.errors", "ccproxy.stores", "ccproxy.environment", "ccproxy"),
}
# What no lower layer may reach.
TOP = ("ccproxy.app", "ccproxy.proxy", "ccproxy.cli", "ccproxy.lambda_app", "ccproxy.lambda_handler")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}


def top_level_imports(name: str, path: Path) -> set[str]:
    """The ccproxy modules `name` imports at module level."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("ccproxy"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("ccproxy"):
                continue
            known = modules()
            # `from . import x` and `from .pkg import sub` name modules too.
            subs = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in known]
            found.update(subs or [source])
    found.discard(name)
    return found


GRAPH = {name: top_level_imports(name, path) for name, path in modules().items()}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes if p != "ccproxy") or name == "ccproxy"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_import_only_downward(layer: str) -> None:
    wrong = {
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name == layer or name.startswith(layer + ".")
        for target in targets
        if not _within(target, ALLOWED[layer])
    }
    assert not wrong, sorted(wrong)


def test_nothing_below_the_app_imports_the_app_or_the_entry_points() -> None:
    wrong = {
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name not in TOP
        for target in targets
        if target in TOP and not (name == "ccproxy.app" and target == "ccproxy.proxy")
    }
    assert not wrong, sorted(wrong)


def test_no_import_cycles() -> None:
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append(" -> ".join(visiting[visiting.index(name) :] + [name]))
            return
        visiting.append(name)
        for target in sorted(GRAPH.get(name, ())):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(GRAPH):
        visit(name)
    assert not cycles, cycles


@pytest.mark.parametrize("name", CORE)
def test_the_core_names_no_protocol(name: str) -> None:
    tree = ast.parse(modules()[name].read_text())
    named = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in PROTOCOL_NAMES
    }
    assert not named, f"{name} names {sorted(named)}"


def test_the_checks_see_the_package() -> None:
    """The graph is not empty by mistake: known edges are in it."""
    assert "ccproxy.protocols.base" in GRAPH["ccproxy.protocols"] or any(
        target.startswith("ccproxy.protocols.") for target in GRAPH["ccproxy.protocols"]
    )
    assert "ccproxy.proxy" in GRAPH["ccproxy.app"]
    assert "ccproxy.unified" in GRAPH["ccproxy.pipeline"]
