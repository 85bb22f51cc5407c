"""End-to-end: real coding agents finish a tool-using turn through ccproxy.

    .venv/bin/python tests/agents/e2e.py                        # the whole matrix
    .venv/bin/python tests/agents/e2e.py --agents cc-claude oc-openai --upstreams gemini ollama

For every upstream protocol ccproxy speaks (openai, claude, gemini, ollama,
and responses when tests/fakes has its fake) a strict fake upstream
(tests/fakes) runs on loopback, and one `ccproxy serve` process fronts them
all: group `up-<protocol>` routes every model name
(`claude-sonnet-4-5`, `gemini-2.5-flash`, `via-<protocol>` and a catch-all
`*`, so side requests such as `claude-haiku-*` titles land there too) to that
upstream, and an agent reaches the group through the URL prefix
`http://127.0.0.1:PORT/up-<protocol>`. The agent sees only its own protocol
and the alias; the group decides the upstream.

The scripted model (`ShellFake`, a FakeUpstream subclass; tests/fakes is not
edited): the first generate request that offers the agent's shell tool
(`Bash`, `run_shell_command`, `bash`, Codex's `exec_command`) gets ONE call
`{"command": "echo hello"}` (`cmd` for `exec_command`; + any other *required*
argument), or, when the agent offers only Codex's code-mode `exec` tool (a
freeform tool taking JavaScript that reaches the shell as
`tools.exec_command`), ONE `exec` call with that script as its `input`; a
request asking for structured output
gets JSON fitting its schema; every other generate request gets the text
"done". When the upstream request asks for reasoning (Anthropic `thinking`,
Gemini `includeThoughts`, OpenAI `reasoning_effort`, Responses `reasoning`,
Ollama `think`) the
answer carries a thinking part first (with the fakes' signatures), as the
real APIs do. count_tokens/countTokens get the fakes' own answers.

A cell PASSes when the agent exits 0, its stdout contains "done", the fake
received a generate request whose tool result contains "hello" (the shell
really ran and the result came back through ccproxy), and the fake recorded
no violation (a request the real API would refuse). Failures print the
agent's stderr/stdout tail, the ccproxy access-log lines of that group, the
fake's violations and the requests the fake saw.

Agents: `AGENTS_BIN` (default tests/agents/.npm/node_modules/.bin, where
`make agents-e2e` installs them) holds
`claude`, `gemini`, `opencode` and `codex`. Nothing leaves loopback; every
key is fake.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(REPO), str(HERE)]

import httpx  # noqa: E402
from capture import example_of  # noqa: E402  (tests/agents/capture.py: a value fitting a JSON schema)
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402

from tests.fakes import DIALECTS, UPSTREAM_MODELS, FakeUpstream  # noqa: E402
from tests.fakes.base import Context, dumps, stream_response  # noqa: E402
from tests.fakes.scenarios import Call, Scenario, Turn  # noqa: E402
from tests.support.server import BackgroundServer, free_port  # noqa: E402

# responses only once tests/fakes has its fake
PROTOCOLS = tuple(p for p in ("openai", "claude", "gemini", "ollama", "responses") if p in DIALECTS)
UPSTREAM_KEYS = {"openai": "sk-fake-openai-0123456789", "claude": "sk-ant-fake-0123456789",
                 "gemini": "AIza-fake-0123456789", "ollama": None, "responses": "sk-fake-responses-0123456789"}
BASE_PATHS = {"openai": "/v1", "claude": "/v1", "gemini": "/v1beta", "ollama": "", "responses": "/v1"}
ACCESS_KEY = "ccp-e2e-access-key"
SHELL_TOOLS = ("Bash", "run_shell_command", "bash", "exec_command")
# Codex's code mode: a freeform `exec` tool runs JavaScript that reaches the shell as tools.exec_command.
CODE_MODE_MARK = "tools.exec_command"
CODE_MODE_SCRIPT = 'const r = await tools.exec_command({cmd: "echo hello"});\ntext(r.output);'
FINAL = "done"
THOUGHT = "The user wants `echo hello` run with the shell tool; then I say done."
PROMPTS = {
    "claude-code": "Run `echo hello` with your Bash tool, then say done",
    "gemini-cli": "Run `echo hello` with your shell tool, then say done",
    "opencode": "Run `echo hello` with your bash tool, then say done",
    "codex": "Run `echo hello` with your shell tool, then say done",
}


# ---------------------------------------------------------------- the scripted model

@dataclass(frozen=True)
class Offered:
    """A function (or freeform) tool the upstream request offers."""
    name: str
    schema: dict
    description: str = ""
    freeform: bool = False  # a Responses custom tool: its call carries a string `input`


def offered_tools(protocol: str, body: dict) -> list[Offered]:
    """Every function the upstream request offers."""
    if protocol == "responses":
        return responses_tools(body)
    out = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if protocol == "claude" and tool.get("name") and "input_schema" in tool:
            out.append(Offered(tool["name"], tool.get("input_schema") or {}, tool.get("description") or ""))
        elif protocol in ("openai", "ollama") and isinstance(tool.get("function"), dict):
            fn = tool["function"]
            out.append(Offered(fn.get("name", ""), fn.get("parameters") or {}, fn.get("description") or ""))
        elif protocol == "gemini":
            for decl in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
                schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {}
                out.append(Offered(decl.get("name", ""), schema, decl.get("description") or ""))
    return out


def responses_tools(body: dict) -> list[Offered]:
    """Flat function and custom tools, those in namespaces, and those an
    `additional_tools` input item declares (as Codex's code mode sends them)."""
    out: list[Offered] = []

    def walk(tools: Any) -> None:
        for tool in tools if isinstance(tools, list) else []:
            if not isinstance(tool, dict):
                continue
            if tool.get("type") == "namespace":
                walk(tool.get("tools"))
            elif tool.get("type") in ("function", "custom") and tool.get("name"):
                out.append(Offered(tool["name"], tool.get("parameters") or {}, tool.get("description") or "",
                                   tool["type"] == "custom"))

    walk(body.get("tools"))
    for item in body.get("input") if isinstance(body.get("input"), list) else []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            walk(item.get("tools"))
    return out


def tool_results(protocol: str, body: dict) -> list[str]:
    """Every tool result in the conversation, as JSON text."""
    out = []
    if protocol == "claude":
        for m in body.get("messages") or []:
            for block in m.get("content") if isinstance(m.get("content"), list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    out.append(json.dumps(block.get("content"), ensure_ascii=False))
    elif protocol in ("openai", "ollama"):
        for m in body.get("messages") or []:
            if isinstance(m, dict) and m.get("role") == "tool":
                out.append(json.dumps(m.get("content"), ensure_ascii=False))
    elif protocol == "gemini":
        for c in body.get("contents") or []:
            for part in c.get("parts") or []:
                fr = part.get("functionResponse") or part.get("function_response")
                if fr:
                    out.append(json.dumps(fr.get("response"), ensure_ascii=False))
    elif protocol == "responses":
        for item in body.get("input") if isinstance(body.get("input"), list) else []:
            if isinstance(item, dict) and item.get("type") in ("function_call_output", "custom_tool_call_output"):
                out.append(json.dumps(item.get("output"), ensure_ascii=False))
    return out


def structured_schema(protocol: str, body: dict) -> Any:
    """The JSON schema a request wants its answer to fit, or None."""
    if protocol == "claude":
        fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
        return fmt.get("schema") or {} if fmt.get("type") == "json_schema" else None
    if protocol == "openai":
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema":
            return (rf.get("json_schema") or {}).get("schema") or {}
        return {} if rf.get("type") == "json_object" else None
    if protocol == "gemini":
        gc = body.get("generationConfig") or body.get("generation_config") or {}
        if (gc.get("responseMimeType") or gc.get("response_mime_type")) == "application/json":
            return gc.get("responseJsonSchema") or gc.get("responseSchema") or {}
        return None
    if protocol == "responses":
        fmt = (body.get("text") or {}).get("format") or {}
        if fmt.get("type") == "json_schema":
            return fmt.get("schema") or {}
        return {} if fmt.get("type") == "json_object" else None
    fmt = body.get("format")
    return fmt if isinstance(fmt, dict) else ({} if fmt == "json" else None)


def wants_thinking(protocol: str, body: dict) -> bool:
    if protocol == "claude":
        return (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
    if protocol == "gemini":
        gc = body.get("generationConfig") or {}
        return bool((gc.get("thinkingConfig") or {}).get("includeThoughts"))
    if protocol == "openai":
        return body.get("reasoning_effort") not in (None, "none")
    if protocol == "responses":
        reasoning = body.get("reasoning")
        return isinstance(reasoning, dict) and reasoning.get("effort") != "none"
    return bool(body.get("think"))


def shell_call(tools: list[Offered]) -> Call | None:
    by_name = {t.name: t for t in tools}
    for name in SHELL_TOOLS:
        if name in by_name:
            schema = by_name[name].schema or {}
            props = schema.get("properties") or {}
            key = "cmd" if "cmd" in props and "command" not in props else "command"
            as_argv = (props.get(key) or {}).get("type") == "array"  # Codex's older `shell`: an argv list
            command: Any = ["bash", "-lc", "echo hello"] if as_argv else "echo hello"
            args: dict[str, Any] = {key: command}
            for req in schema.get("required") or []:
                if req not in args:  # any other required argument
                    args[req] = "Print hello" if req == "description" else example_of(props.get(req), req)
            return Call(name, args)
    for tool in tools:  # Codex's code mode: the shell only inside the script tool
        takes_input = tool.freeform or "input" in (tool.schema.get("properties") or {})
        if CODE_MODE_MARK in tool.description and takes_input:
            return Call(tool.name, {"input": CODE_MODE_SCRIPT})
    return None


@dataclass
class Seen:
    """One generate request the fake answered, for the report."""
    path: str
    model: str
    stream: bool
    answer: str


class ShellFake(FakeUpstream):
    """A strict fake (validation and rendering untouched) whose generate
    answers come from the request instead of the scenario queue."""

    def __init__(self, protocol: str, key: str | None) -> None:
        super().__init__(protocol, key)
        self.lock = threading.Lock()
        self.begin()

    def begin(self) -> None:
        """A new cell: forget requests, violations and the call made."""
        self.reset()
        self.called = False
        self.seen: list[Seen] = []
        self.results: list[str] = []

    def turn_for(self, ctx: Context) -> tuple[Turn, str]:
        body = ctx.body
        thinking = THOUGHT if wants_thinking(self.protocol, body) else ""
        schema = structured_schema(self.protocol, body)
        results = tool_results(self.protocol, body)
        if results:
            self.results.extend(results)
        if schema is not None:
            text = json.dumps(example_of(schema))
            return Turn(text=text, thinking=thinking), f"json {text}"
        if not results:
            call = shell_call(offered_tools(self.protocol, body))
            with self.lock:
                take = call is not None and not self.called
                self.called = self.called or take
            if take:
                return Turn(thinking=thinking, calls=(call,)), f"call {call.name} {dumps(call.args)}"
        return Turn(text=FINAL, thinking=thinking), f"text {FINAL!r}"

    async def _answer(self, ctx: Context, scenario: Scenario, request: Request) -> Response:
        if ctx.endpoint.kind != "generate":
            return await super()._answer(ctx, scenario, request)
        turn, what = self.turn_for(ctx)
        self.seen.append(Seen(ctx.request.path, ctx.model, ctx.stream, what + (" +thinking" if turn.thinking else "")))
        if not ctx.stream:
            return Response(dumps(self.dialect.whole(ctx, turn)).encode(), media_type="application/json")
        plan = self.dialect.stream_plan(ctx, turn)
        return stream_response(plan.head + plan.body + plan.tail, self.dialect.stream_media_type)


# ---------------------------------------------------------------- ccproxy

# A group shaped as the README's recipe shapes Claude Code for a small model.
SHAPE = {
    "tools": {"keep": ["Bash", "Read", "Edit", "Write", "Glob", "Grep"]},
    "replace": [{"find": "You are Claude Code, Anthropic's official CLI for Claude.", "with": "You are a coding agent."}],
    "prompt": [{"mode": "append", "to": "system", "text": "Use one tool at a time. Keep answers short."}],
    "limits": {"max_tokens": 4096},
    "defaults": {"temperature": 0.2},
}

def ccproxy_config(fake_urls: dict[str, str]) -> dict:
    providers, groups = {}, {}
    for p in PROTOCOLS:
        provider: dict[str, Any] = {"protocol": p, "base_url": fake_urls[p] + BASE_PATHS[p]}
        if UPSTREAM_KEYS[p]:
            provider["keys"] = [UPSTREAM_KEYS[p]]
        providers[f"up-{p}"] = provider
    for p in PROTOCOLS:
        target = [f"up-{p}/{UPSTREAM_MODELS[p]}"]
        groups[f"up-{p}"] = {"models": {"claude-sonnet-4-5": target, "gemini-2.5-flash": target,
                                        f"via-{p}": target, "*": target}}
        groups[f"shaped-{p}"] = {"shape": SHAPE, "models": {"*": target}}
    default = {f"via-{p}": [f"up-{p}/{UPSTREAM_MODELS[p]}"] for p in PROTOCOLS}
    default["*"] = [f"up-openai/{UPSTREAM_MODELS['openai']}"]
    groups["default"] = {"models": default}
    return {"providers": providers, "groups": groups, "active_group": "default", "access_keys": [ACCESS_KEY]}


class CCProxy:
    def __init__(self, workdir: Path, fake_urls: dict[str, str]) -> None:
        self.dir = workdir / "ccproxy"
        self.dir.mkdir(parents=True)
        self.config = self.dir / "ccproxy.json"  # JSON is YAML
        self.config.write_text(json.dumps(ccproxy_config(fake_urls), indent=1))
        self.log = self.dir / "ccproxy.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
        env.update(CCPROXY_STATE=str(self.dir / "state.db"), PYTHONUNBUFFERED="1")
        exe = Path(sys.executable).parent / "ccproxy"
        self.fh = open(self.log, "wb")
        self.process = subprocess.Popen([str(exe), "serve", "--config", str(self.config), "--port", str(self.port)],
                                        cwd=self.dir, env=env, stdout=self.fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("ccproxy did not start:\n" + self.log.read_text(errors="replace"))
            time.sleep(0.1)

    def lines(self, start: int, end: int | None = None) -> list[str]:
        with open(self.log, "rb") as fh:
            fh.seek(start)
            data = fh.read() if end is None else fh.read(end - start)
        return data.decode(errors="replace").splitlines()

    def offset(self) -> int:
        return self.log.stat().st_size

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.fh.close()


# ---------------------------------------------------------------- the agents

@dataclass(frozen=True)
class Variant:
    name: str
    agent: str  # claude-code | gemini-cli | opencode | codex
    model: str | None  # what the agent is told (None: its default)
    provider: str = ""  # opencode: ccproxy (openai-compatible) | anthropic | google
    groups: str = "up"  # the agent's base URL names the group `{groups}-{upstream}`


VARIANTS = (
    Variant("cc-claude", "claude-code", "claude-sonnet-4-5"),
    Variant("cc-gemini", "claude-code", "gemini-2.5-flash"),
    # The README's recipe for a small model: Claude Code's tools and prompt trimmed.
    Variant("cc-shaped", "claude-code", "claude-sonnet-4-5", groups="shaped"),
    Variant("gemini-cli", "gemini-cli", "gemini-2.5-flash"),
    Variant("gemini-cli-auto", "gemini-cli", None),
    Variant("oc-openai", "opencode", "gpt-4.1", "ccproxy"),
    Variant("oc-anthropic", "opencode", "claude-sonnet-4-5", "anthropic"),
    Variant("oc-google", "opencode", "gemini-2.5-flash", "google"),
    Variant("codex", "codex", None),  # its default model: code mode (tools in an additional_tools item)
    Variant("codex-gpt-5.5", "codex", "gpt-5.5"),  # flat function tools (exec_command), custom apply_patch
)

GEMINI_SETTINGS = {"privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
                   "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
                   "security": {"auth": {"selectedType": "gemini-api-key"}}}


def agent_command(v: Variant, base: str, home: Path, bin_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The command line and the extra environment, as tests/agents/record.sh runs them."""
    if v.agent == "claude-code":
        env = {"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": ACCESS_KEY, "ANTHROPIC_MODEL": v.model or "",
               "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1"}
        return [str(bin_dir / "claude"), "-p", PROMPTS[v.agent], "--allowedTools", "Bash"], env
    if v.agent == "gemini-cli":
        (home / ".gemini").mkdir()
        (home / ".gemini" / "settings.json").write_text(json.dumps(GEMINI_SETTINGS))
        env = {"GOOGLE_GEMINI_BASE_URL": base, "GEMINI_API_KEY": ACCESS_KEY, "GEMINI_CLI_TRUST_WORKSPACE": "true",
               "GEMINI_TELEMETRY_ENABLED": "false"}
        if v.model:
            env["GEMINI_MODEL"] = v.model
        return [str(bin_dir / "gemini"), "-p", PROMPTS[v.agent], "--yolo"], env
    if v.agent == "codex":
        return codex_command(v, base, home, bin_dir)
    key = {"apiKey": "{env:CCPROXY_KEY}"}
    config = {
        "$schema": "https://opencode.ai/config.json", "autoupdate": False, "share": "disabled",
        "permission": {"bash": "allow", "edit": "allow", "read": "allow"},
        "provider": {
            "ccproxy": {"npm": "@ai-sdk/openai-compatible", "name": "ccproxy",
                        "options": {"baseURL": base + "/v1", **key},
                        "models": {"gpt-4.1": {"name": "gpt-4.1 via ccproxy", "tool_call": True, "reasoning": False}}},
            "anthropic": {"options": {"baseURL": base + "/v1", **key}},
            "google": {"options": {"baseURL": base + "/v1beta", **key}},
        },
    }
    env = {"CCPROXY_KEY": ACCESS_KEY, "OPENCODE_CONFIG_CONTENT": json.dumps(config),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_STATE_HOME": str(home / ".local/state"),
           "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_SHARE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1",
           "OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "OPENCODE_DISABLE_CLAUDE_CODE": "1"}
    return [str(bin_dir / "opencode"), "run", "--model", f"{v.provider}/{v.model}", PROMPTS[v.agent]], env


def codex_command(v: Variant, base: str, home: Path, bin_dir: Path) -> tuple[list[str], dict[str, str]]:
    """codex exec with a provider `ccproxy` on the Responses wire API, in a
    throw-away CODEX_HOME: no login, the key from CCPROXY_KEY."""
    (home / ".codex").mkdir()
    provider = f'{{name="ccproxy", base_url="{base}/v1", env_key="CCPROXY_KEY", wire_api="responses"}}'
    command = [str(bin_dir / "codex"), "exec", "--skip-git-repo-check", "-c", "model_provider=ccproxy",
               "-c", f"model_providers.ccproxy={provider}"]
    if v.model:
        command += ["-m", v.model]
    env = {"CCPROXY_KEY": ACCESS_KEY, "CODEX_HOME": str(home / ".codex")}
    return [*command, PROMPTS[v.agent]], env


@dataclass
class Cell:
    variant: Variant
    upstream: str
    ok: bool = False
    why: list[str] = field(default_factory=list)
    exit_code: int | None = None
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    log: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    other_requests: list[str] = field(default_factory=list)


def mine(line: str, group: str) -> bool:
    """ccproxy log lines of this group's cell: its access lines, and anything
    that is neither an access line nor uvicorn's INFO chatter (errors)."""
    if line.startswith("INFO ccproxy.access: "):
        return any(f" /{group}{end}" in line for end in ("/", " ", "?"))
    return not line.startswith("INFO:")


def run_cell(v: Variant, upstream: str, fake: ShellFake, proxy: CCProxy, scratch: Path, bin_dir: Path,
             timeout: int) -> Cell:
    cell = Cell(v, upstream)
    work = scratch / f"{v.name}--{upstream}"
    home, proj = work / "home", work / "proj"
    home.mkdir(parents=True)
    proj.mkdir()
    (proj / "README.md").write_text("hi\n")
    group = f"{v.groups}-{upstream}"
    command, extra = agent_command(v, f"{proxy.url}/{group}", home, bin_dir)
    env = {"PATH": f"{bin_dir}:{os.path.dirname(shutil.which('node') or '/usr/bin/node')}:/usr/local/bin:/usr/bin:/bin",
           "HOME": str(home), "USER": os.environ.get("USER", "root"), "LANG": "C.UTF-8", "TERM": "dumb",
           "TMPDIR": str(work), "NO_PROXY": "127.0.0.1,localhost", "CI": "1", **extra}
    fake.begin()
    start_log = proxy.offset()
    started = time.monotonic()
    try:
        done = subprocess.run(["timeout", "-k", "5", str(timeout), *command], cwd=proj, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 30)
        cell.exit_code = done.returncode
        cell.stdout, cell.stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        cell.exit_code = -1
        cell.stdout = (exc.stdout or b"").decode(errors="replace")
        cell.stderr = (exc.stderr or b"").decode(errors="replace")
    cell.seconds = time.monotonic() - started
    time.sleep(0.3)  # the last access-log line
    cell.log = [line for line in proxy.lines(start_log) if mine(line, group)]
    cell.violations = list(fake.violations)
    cell.seen = list(fake.seen)
    cell.other_requests = [f"{r.method} {r.path}" for r in fake.requests if not any(s.path == r.path for s in cell.seen)]
    if cell.exit_code != 0:
        cell.why.append(f"exit code {cell.exit_code}" + (" (timeout)" if cell.exit_code in (124, -1, 137) else ""))
    if FINAL not in cell.stdout:
        cell.why.append(f"stdout lacks {FINAL!r}")
    if not fake.called:
        cell.why.append("the fake never made the shell call (no generate request offered the shell tool)")
    elif not any("hello" in r for r in fake.results):
        cell.why.append("no generate request carried the tool result 'hello'")
    if cell.violations:
        cell.why.append(f"{len(cell.violations)} fake violation(s)")
    cell.ok = not cell.why
    return cell


# ---------------------------------------------------------------- report

def tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def report(cells: list[Cell], variants: list[Variant], upstreams: list[str], lines: int) -> str:
    by = {(c.variant.name, c.upstream): c for c in cells}
    width = max(len("agent-variant"), *(len(v.name) for v in variants)) + 2
    out = ["", "agent-variant".ljust(width) + "".join(u.ljust(9) for u in upstreams)]
    for v in variants:
        row = v.name.ljust(width)
        for u in upstreams:
            c = by.get((v.name, u))
            row += ("PASS" if c and c.ok else "FAIL" if c else "-").ljust(9)
        out.append(row)
    for c in cells:
        if c.ok:
            continue
        out += ["", f"== FAIL {c.variant.name} x {c.upstream} ({c.variant.agent}, model {c.variant.model or 'default'}, "
                    f"{c.seconds:.0f}s): " + "; ".join(c.why)]
        out.append("   fake answered:")
        out += [f"      {s.path} model={s.model} stream={s.stream}: {s.answer}" for s in c.seen] or ["      (nothing)"]
        if c.other_requests:
            out.append("   other fake requests: " + ", ".join(c.other_requests))
        if c.violations:
            out.append("   fake violations:")
            out += [f"      {x}" for x in c.violations]
        out.append("   ccproxy log:")
        out.append(indent(tail("\n".join(c.log), lines) or "(nothing)"))
        out.append("   agent stderr (tail):")
        out.append(indent(tail(c.stderr, lines) or "(empty)"))
        out.append("   agent stdout (tail):")
        out.append(indent(tail(c.stdout, lines) or "(empty)"))
    passed = sum(c.ok for c in cells)
    out += ["", f"{passed}/{len(cells)} cells passed"]
    return "\n".join(out)


def main() -> int:
    names = [v.name for v in VARIANTS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", nargs="+", default=names, metavar="VARIANT",
                        help=f"variants, or an agent name for all its variants: {', '.join(names)}; "
                             "claude-code, gemini-cli, opencode, codex")
    parser.add_argument("--upstreams", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--timeout", type=int, default=180, help="seconds per agent run")
    parser.add_argument("--lines", type=int, default=15, help="tail lines per failure")
    parser.add_argument("--serial", action="store_true", help="one cell at a time (default: one worker per upstream)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (homes, projects, ccproxy log)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()

    variants = [v for v in VARIANTS if v.name in args.agents or v.agent in args.agents]
    unknown = set(args.agents) - set(names) - {v.agent for v in VARIANTS}
    if unknown or not variants:
        parser.error(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(names)}")
    bin_dir = Path(os.environ.get("AGENTS_BIN", Path(__file__).parent / ".npm" / "node_modules" / ".bin"))
    needed = {"claude-code": "claude", "gemini-cli": "gemini", "opencode": "opencode", "codex": "codex"}
    missing = [needed[v.agent] for v in variants if not (bin_dir / needed[v.agent]).exists()]
    if missing:
        parser.error(f"not in AGENTS_BIN={bin_dir}: {', '.join(sorted(set(missing)))}")

    scratch = Path(tempfile.mkdtemp(prefix="ccproxy-e2e-"))
    fakes, servers = {}, []
    proxy = None
    try:
        urls = {}
        for p in PROTOCOLS:
            fakes[p] = ShellFake(p, UPSTREAM_KEYS[p])
            server = BackgroundServer(fakes[p].app).start()
            servers.append(server)
            urls[p] = server.url
        proxy = CCProxy(scratch, urls)
        print(f"ccproxy {proxy.url}; fakes {urls}; scratch {scratch}", file=sys.stderr)

        def column(upstream: str) -> list[Cell]:
            out = []
            for v in variants:
                cell = run_cell(v, upstream, fakes[upstream], proxy, scratch, bin_dir, args.timeout)
                print(f"{'PASS' if cell.ok else 'FAIL'} {v.name} x {upstream} ({cell.seconds:.0f}s)"
                      + ("" if cell.ok else ": " + "; ".join(cell.why)), file=sys.stderr, flush=True)
                out.append(cell)
            return out

        if args.serial:
            cells = [c for u in args.upstreams for c in column(u)]
        else:
            with ThreadPoolExecutor(len(args.upstreams)) as pool:
                cells = [c for col in pool.map(column, args.upstreams) for c in col]
        order = {v.name: i for i, v in enumerate(variants)}
        cells.sort(key=lambda c: (order[c.variant.name], args.upstreams.index(c.upstream)))
        print(report(cells, variants, args.upstreams, args.lines))
        if args.json:
            Path(args.json).write_text(json.dumps([{
                "variant": c.variant.name, "agent": c.variant.agent, "model": c.variant.model, "upstream": c.upstream,
                "pass": c.ok, "why": c.why, "exit_code": c.exit_code, "seconds": round(c.seconds, 1),
                "violations": c.violations, "answered": [s.__dict__ for s in c.seen], "ccproxy_log": c.log,
                "stderr_tail": tail(c.stderr, 40), "stdout_tail": tail(c.stdout, 40)} for c in cells], indent=1))
        return 0 if all(c.ok for c in cells) else 1
    finally:
        if proxy:
            proxy.stop()
        for server in servers:
            server.stop()
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
