"""ccproxy beside LiteLLM's proxy, on one machine, in one run.

`make bench` runs `.venv/bin/python bench/run.py`; `--quick` for a short
run. Prints a markdown table, each figure the median of repeated runs:

- added latency per request (whole; streamed: to first and to last byte)
  against calling the fake upstream directly, at 1 and 32 clients, for
  (a) an Anthropic client (POST /v1/messages) on an OpenAI upstream and
  (b) an OpenAI client (POST /v1/chat/completions) on a Gemini upstream;
- the server's CPU time per request at 1 client (the scheduler's own
  account of every thread), beside the floor's and the fake upstream's;
- stream conversion throughput in process, on one core;
- peak memory (RSS) of the server under 64 concurrent streams;
- cold start (import the Lambda handler and build the app in a fresh
  process) and the size of the dependency layer and function package.

Everything runs on loopback: bench/fake_upstream.py is the upstream;
ccproxy is `.venv/bin/ccproxy serve` on a generated config; LiteLLM's proxy
is installed by this script into bench/.venv-litellm (skipped, with a note,
if that fails) and configured on the same fake upstream. With two or more
CPUs, the servers run on the last CPU and the load client and the fake
upstream on the others, so the proxy under test has a core of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import httpx  # noqa: E402
import load  # noqa: E402

VENV_BIN = Path(sys.executable).parent if (Path(sys.executable).parent / "ccproxy").exists() else ROOT / ".venv" / "bin"
CC_PYTHON = VENV_BIN / "python"
CC_SERVE = VENV_BIN / "ccproxy"
LL_VENV = BENCH / ".venv-litellm"
LL_PYTHON = LL_VENV / "bin" / "python"
# The newest LiteLLM whose proxy installs from PyPI as one package here
# (from 1.110 on, [proxy] needs a litellm-proxy package PyPI does not serve;
# 1.109 needs a litellm-proxy-extras release it does not serve either).
LITELLM_SPEC = os.environ.get("BENCH_LITELLM", "litellm[proxy]==1.106.12")
LITELLM_INSTALL_TIMEOUT = float(os.environ.get("BENCH_LITELLM_INSTALL_TIMEOUT", "900"))
ACCESS_KEY = "sk-bench-" + "0123456789abcdef" * 3  # LiteLLM refuses weak master keys
EVENTS = 50  # content events per upstream stream
PROMPT = [{"role": "user", "content": "Say hello"}]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- settings


@dataclass(frozen=True)
class Plan:
    rounds: int
    # requests per measurement: (concurrency, streamed) -> count; LiteLLM is
    # an order of magnitude slower, so it gets fewer (its medians are as stable)
    counts: dict[tuple[int, bool], int]
    litellm_counts: dict[tuple[int, bool], int]
    memory_bursts: int
    memory_seconds: float
    cold_runs: int
    litellm_cold_runs: int
    conversion_events: int
    conversion_runs: int


FULL = Plan(
    rounds=5,
    counts={(1, False): 200, (1, True): 60, (32, False): 480, (32, True): 128},
    litellm_counts={(1, False): 80, (1, True): 24, (32, False): 160, (32, True): 64},
    memory_bursts=3,
    memory_seconds=2.0,
    cold_runs=10,
    litellm_cold_runs=3,
    conversion_events=20000,
    conversion_runs=5,
)
QUICK = Plan(
    rounds=3,
    counts={(1, False): 100, (1, True): 30, (32, False): 192, (32, True): 64},
    litellm_counts={(1, False): 40, (1, True): 12, (32, False): 96, (32, True): 32},
    memory_bursts=1,
    memory_seconds=2.0,
    cold_runs=5,
    litellm_cold_runs=3,
    conversion_events=5000,
    conversion_runs=3,
)
CONCURRENCY = (1, 32)
MEMORY_STREAMS = 64


# ----------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """(CPUs for the servers under test, CPUs for the client and the fake)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def pinned(cpus: set[int] | None):
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("CCPROXY_", "LITELLM_", "AWS_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # cold starts are measured with bytecode cached, as installed
    env.update(extra)
    return env


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    url: str
    logfile: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-1500:]
        except OSError:
            return ""


def start(
    name: str,
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    cpus: set[int] | None,
    url: str,
    health: str,
    timeout: float,
) -> Server:
    logfile = cwd / f"{name}.log"
    with open(logfile, "wb") as out:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=pinned(cpus),
        )
    server = Server(name, process, url, logfile)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + health, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not start: {server.log_tail()}")
        time.sleep(0.1)


# ----------------------------------------------------------------- LiteLLM


def install_litellm() -> tuple[bool, str]:
    """bench/.venv-litellm with LITELLM_SPEC; (ok, note)."""
    marker = LL_VENV / ".bench-installed"
    if marker.exists() and marker.read_text().strip() == LITELLM_SPEC and LL_PYTHON.exists():
        return True, ""
    log(f"installing {LITELLM_SPEC} into {LL_VENV.relative_to(ROOT)} (once; timeout {LITELLM_INSTALL_TIMEOUT:.0f} s)")
    started = time.monotonic()
    try:
        if not LL_PYTHON.exists():
            base = getattr(sys, "_base_executable", None) or sys.executable
            subprocess.run([base, "-m", "venv", str(LL_VENV)], check=True, capture_output=True, timeout=120)
        result = subprocess.run(
            [str(LL_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", LITELLM_SPEC],
            capture_output=True,
            text=True,
            timeout=max(1.0, LITELLM_INSTALL_TIMEOUT - (time.monotonic() - started)),
        )
    except subprocess.TimeoutExpired:
        return False, f"LiteLLM skipped: `pip install {LITELLM_SPEC}` did not finish in {LITELLM_INSTALL_TIMEOUT:.0f} s"
    except (OSError, subprocess.CalledProcessError) as exc:
        return False, f"LiteLLM skipped: could not create {LL_VENV.name} ({exc})"
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        return False, f"LiteLLM skipped: `pip install {LITELLM_SPEC}` failed: {(errors or ['?'])[-1][:300]}"
    marker.write_text(LITELLM_SPEC + "\n")
    log(f"LiteLLM installed in {time.monotonic() - started:.0f} s")
    return True, ""


def litellm_version() -> str:
    try:
        out = subprocess.run(
            [str(LL_PYTHON), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def litellm_env(**extra: str) -> dict[str, str]:
    # No network here: the model cost map ships with the package.
    return clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", **extra)


# ----------------------------------------------------------------- configs


def write_configs(tmp: Path, fake: str) -> tuple[Path, Path]:
    ccproxy = tmp / "ccproxy.yaml"
    ccproxy.write_text(
        json.dumps(
            {
                "providers": {
                    "fake_openai": {"protocol": "openai", "base_url": f"{fake}/v1", "keys": ["bench-key"]},
                    "fake_gemini": {"protocol": "gemini", "base_url": f"{fake}/v1beta", "keys": ["bench-key"]},
                },
                "groups": {
                    "default": {
                        "models": {
                            "claude-bench-slow": ["fake_openai/gpt-bench-slow"],
                            "gemini-bench-slow": ["fake_gemini/gemini-bench-slow"],
                            "claude-bench": ["fake_openai/gpt-bench"],
                            "gemini-bench": ["fake_gemini/gemini-bench"],
                        }
                    }
                },
                "access_keys": [ACCESS_KEY],
            },
            indent=2,
        )
    )
    litellm = tmp / "litellm.yaml"
    models = []
    for alias, target, base in (
        ("claude-bench", "openai/gpt-bench", f"{fake}/v1"),
        ("claude-bench-slow", "openai/gpt-bench-slow", f"{fake}/v1"),
        ("gemini-bench", "gemini/gemini-bench", f"{fake}/v1beta"),
        ("gemini-bench-slow", "gemini/gemini-bench-slow", f"{fake}/v1beta"),
    ):
        models.append(
            {"model_name": alias, "litellm_params": {"model": target, "api_base": base, "api_key": "bench-key"}}
        )
    litellm.write_text(
        json.dumps(
            {
                "model_list": models,
                "litellm_settings": {
                    "drop_params": True,
                    # Like ccproxy, call the OpenAI upstream's chat completions for an
                    # Anthropic client (LiteLLM's default for openai/ models is the
                    # Responses API, a different upstream call).
                    "use_chat_completions_url_for_anthropic_messages": True,
                },
                "general_settings": {"master_key": ACCESS_KEY},
            },
            indent=2,
        )
    )
    return ccproxy, litellm


# ----------------------------------------------------------------- jobs

CASES = {
    "a": "Anthropic client → OpenAI upstream",
    "b": "OpenAI client → Gemini upstream",
    "c": "Responses client → OpenAI upstream",
}
# Cases LiteLLM is not measured on: its /v1/responses calls an upstream's
# Responses API, which is another upstream call than ccproxy's.
CCPROXY_ONLY = frozenset({"c"})
# Cases whose direct request is another case's, byte for byte: measured once,
# so that both compare with the same baseline.
SAME_DIRECT = {"c": "a"}


def job(case: str, target: str, url: str, stream: bool, slow: bool = False) -> load.Job:
    """The request of `case` sent to `target` (direct: the fake upstream,
    in the upstream's own protocol, as the proxies send it; relay: the
    client's request, answered with the upstream's own bytes)."""
    if target == "relay":
        client, direct = job(case, "ccproxy", url, stream, slow), job(case, "direct", url, stream, slow)
        return load.Job(client.url, client.body, client.headers, direct.markers)
    suffix = "-slow" if slow else ""
    auth = {"content-type": "application/json", "authorization": f"Bearer {ACCESS_KEY}"}
    whole_marker = (b"Hello from the fake upstream.",)
    if case == "c" and target != "direct":
        body = {
            "model": "claude-bench" + suffix,
            "max_output_tokens": 64,
            "input": "Say hello",
            "stream": stream,
            "store": False,
        }
        markers = (f"w{EVENTS - 1} ".encode(), b"response.completed") if stream else whole_marker
        return load.Job(url + "/v1/responses", json.dumps(body).encode(), auth, markers)
    if case in ("a", "c"):
        if target == "direct":
            body = {"model": "gpt-bench" + suffix, "max_tokens": 64, "messages": PROMPT, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            markers = (f"w{EVENTS - 1} ".encode(), b"[DONE]") if stream else whole_marker
            return load.Job(url + "/v1/chat/completions", json.dumps(body).encode(), auth, markers)
        body = {"model": "claude-bench" + suffix, "max_tokens": 64, "messages": PROMPT, "stream": stream}
        markers = (f"w{EVENTS - 1} ".encode(), b"message_stop") if stream else whole_marker
        return load.Job(
            url + "/v1/messages", json.dumps(body).encode(), {**auth, "anthropic-version": "2023-06-01"}, markers
        )
    if target == "direct":
        body = {
            "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
            "generationConfig": {"maxOutputTokens": 64},
        }
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        markers = (f"w{EVENTS - 1} ".encode(), b'"finishReason":"STOP"') if stream else whole_marker
        return load.Job(
            f"{url}/v1beta/models/gemini-bench{suffix}:{verb}",
            json.dumps(body).encode(),
            {"content-type": "application/json", "x-goog-api-key": "bench-key"},
            markers,
        )
    body = {"model": "gemini-bench" + suffix, "max_tokens": 64, "messages": PROMPT, "stream": stream}
    markers = (f"w{EVENTS - 1} ".encode(), b"[DONE]") if stream else whole_marker
    return load.Job(url + "/v1/chat/completions", json.dumps(body).encode(), auth, markers)


# ----------------------------------------------------------------- latency


@dataclass
class Cell:
    """One (case, streamed, concurrency, target): the per-round medians."""

    ttfb: list[float] = field(default_factory=list)
    ttlb: list[float] = field(default_factory=list)
    events_per_s: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # the server's CPU time per request (1 client)
    failures: int = 0
    first_failure: str = ""


HEALTH = {"direct": "/health", "ccproxy": "/health", "relay": "/health", "litellm": "/health/liveliness"}
# What each latency figure is: (streamed, Result field, name).
MEASURES = ((False, "ttlb", "whole"), (True, "ttfb", "first byte"), (True, "ttlb", "last byte"))
WHOLE_TARGET_MS = 0.7  # added to a whole answer, one client
# The floor (bench/relay.py) is measured with one client: under 32, the
# servers' throughput, not their fixed cost, makes the figures.
RELAY_CASES = ("a", "b")


async def measure(
    job_: load.Job, concurrency: int, count: int, health: str, pid: int | None = None
) -> tuple[load.Result, float | None]:
    """The run's result, and the CPU time process `pid` spent per request
    meanwhile, in µs (None without a pid or where the kernel does not say)."""
    async with load.Clients(concurrency) as clients:
        if concurrency == 1:
            await load.run(clients, job_, 5)  # connect and warm up the code path
        else:
            await load.connect(clients, health)  # the 1-client run just warmed the code path
        before = cpu_seconds(pid)
        result = await load.run(clients, job_, count)
        after = cpu_seconds(pid)
    spent = None if before is None or after is None else (after - before) / count * 1e6
    return result, spent


def cpu_seconds(pid: int | None) -> float | None:
    """The CPU time all of a process's threads have run, from the scheduler's
    own account (/proc/PID/task/*/schedstat, in ns): exact, where utime and
    stime are sampled at each clock tick."""
    if pid is None:
        return None
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


async def latency(plan: Plan, targets: dict[str, str], pids: dict[str, int]) -> dict[tuple[str, bool, int, str], Cell]:
    cells: dict[tuple[str, bool, int, str], Cell] = {}
    for round_ in range(plan.rounds):
        log(f"latency round {round_ + 1}/{plan.rounds}")
        for case in CASES:
            for stream in (False, True):
                for concurrency in CONCURRENCY:
                    for target, url in targets.items():
                        if target == "litellm" and case in CCPROXY_ONLY:
                            continue
                        if target == "direct" and case in SAME_DIRECT:
                            continue
                        if target == "relay" and (case not in RELAY_CASES or concurrency != 1):
                            continue
                        counts = plan.litellm_counts if target == "litellm" else plan.counts
                        result, cpu_us = await measure(
                            job(case, target, url, stream),
                            concurrency,
                            counts[(concurrency, stream)],
                            url + HEALTH[target],
                            pids.get(target) if concurrency == 1 else None,
                        )
                        cell = cells.setdefault((case, stream, concurrency, target), Cell())
                        cell.failures += result.failures
                        cell.first_failure = cell.first_failure or result.first_failure
                        if result.ttlb:
                            cell.ttfb.append(result.median_ttfb())
                            cell.ttlb.append(result.median_ttlb())
                            cell.events_per_s.append(len(result.ttlb) * EVENTS / result.wall)
                        if cpu_us is not None:
                            cell.cpu_us.append(cpu_us)
    return cells


def added(cells: dict, case: str, stream: bool, concurrency: int, target: str, which: str) -> float | None:
    """Median over rounds of (target's median - direct's median), in ms."""
    mine = cells.get((case, stream, concurrency, target))
    direct = cells.get((SAME_DIRECT.get(case, case), stream, concurrency, "direct"))
    if mine is None or direct is None or not getattr(mine, which) or mine.failures:
        return None
    pairs = zip(getattr(mine, which), getattr(direct, which))
    return statistics.median(m - d for m, d in pairs) * 1000


# ----------------------------------------------------------------- other load on the machine


def busy_jiffies() -> int:
    """Busy CPU time of the whole machine (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle


def tree_jiffies(pids: list[int]) -> int:
    """utime + stime of these processes and their descendants (living ones)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            stats[int(entry)] = rest
            children.setdefault(int(rest[1]), []).append(int(entry))
    total, todo, seen = 0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
        total += int(stats[pid][11]) + int(stats[pid][12])
    return total


class OtherLoad:
    """How much CPU processes other than the benchmark's used meanwhile: on
    a shared machine (other sessions running tests) the figures get noisier."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.busy = busy_jiffies()
        self.ours = tree_jiffies(pids)

    def cores(self) -> float:
        elapsed = time.monotonic() - self.started
        other = (busy_jiffies() - self.busy) - (tree_jiffies(self.pids) - self.ours)
        return max(0.0, other / os.sysconf("SC_CLK_TCK") / max(elapsed, 1e-9))


# ----------------------------------------------------------------- memory


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


async def memory(plan: Plan, server: Server, case: str) -> tuple[float, float, int]:
    """(idle RSS MiB, peak RSS MiB under MEMORY_STREAMS streams, failures)."""
    idle = tree_rss_kib(server.process.pid) / 1024
    peaks, failures = [], 0
    stream_job = job(case, server.name, server.url, True, slow=True)
    for _ in range(plan.memory_bursts):
        peak = 0
        done = asyncio.Event()

        async def sample(done: asyncio.Event = done) -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss_kib(server.process.pid))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        async with load.Clients(MEMORY_STREAMS) as clients:
            result = await load.run_for(clients, stream_job, plan.memory_seconds)
        done.set()
        await sampler
        failures += result.failures
        peaks.append(peak / 1024)
    return idle, statistics.median(peaks), failures


# ----------------------------------------------------------------- cold start and sizes

CC_COLD = (
    "import time; t = time.perf_counter(); import ccproxy.lambda_handler as h; "
    "assert h.handler is not None; print(time.perf_counter() - t)"
)
LL_COLD = (
    "import time; t = time.perf_counter(); import litellm.proxy.proxy_server as p; "
    "assert p.app is not None; print(time.perf_counter() - t)"
)


def cold_start(
    python: Path, code: str, env: dict[str, str], cwd: Path, runs: int, cpus: set[int] | None
) -> tuple[float, float] | None:
    """(median import time, median whole process time) in seconds, over
    `runs` fresh processes after one discarded run (which writes .pyc)."""
    inner, outer = [], []
    for i in range(runs + 1):
        started = time.perf_counter()
        result = subprocess.run(
            [str(python), "-c", code],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=pinned(cpus),
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            log(f"cold start failed: {result.stderr[-800:]}")
            return None
        if i:
            inner.append(float(result.stdout.split()[-1]))
            outer.append(elapsed)
    return statistics.median(inner), statistics.median(outer)


def tree_size(path: Path, skip: tuple[str, ...] = ("__pycache__",), skip_suffix: tuple[str, ...] = ()) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(skip_suffix or ("\0",))]
        for name in filenames:
            if name.endswith(".pyc"):
                continue
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def layer_size(tmp: Path) -> tuple[int | None, str]:
    """The dependency layer as SAM builds it: pip install --target, no .pyc."""
    target = tmp / "layer"
    result = subprocess.run(
        [
            str(CC_PYTHON),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--target",
            str(target),
            "-r",
            str(ROOT / "layers" / "dependencies" / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        return None, f"layer size skipped: pip failed: {result.stderr.strip().splitlines()[-1:]}"
    return tree_size(target), ""


def litellm_installed_size() -> int:
    """LiteLLM's proxy and everything it pulled in (site-packages less pip)."""
    site = next((LL_VENV / "lib").glob("python3*/site-packages"))
    total = 0
    for entry in site.iterdir():
        if entry.name.startswith(("pip", "setuptools", "_distutils_hack", "distutils-precedence")):
            continue
        total += tree_size(entry) if entry.is_dir() else entry.stat().st_size
    return total


# ----------------------------------------------------------------- report


def machine() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores{mem}; Linux {platform.release()}; Python {platform.python_version()}"


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} ms" if abs(value) < 100 else f"{value:.0f} ms"


def ratio(mine: float | None, theirs: float | None) -> str:
    if mine is None or theirs is None:
        return "—"
    if mine <= 0:
        return "n/a (ccproxy ≤ 0)"
    if mine <= 0.05:
        return f"> {theirs / 0.05:.0f}×"
    return f"{theirs / mine:.1f}×"


def us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} µs"


def cpu_us(cells: dict, case: str, stream: bool, target: str) -> float | None:
    """Median over rounds of the server's CPU time per request at 1 client."""
    cell = cells.get((SAME_DIRECT.get(case, case) if target == "direct" else case, stream, 1, target))
    if cell is None or not cell.cpu_us or cell.failures:
        return None
    return statistics.median(cell.cpu_us)


def mib(n: float | None) -> str:
    return "—" if n is None else f"{n:.0f} MiB"


def streamed(stream: bool, what: str) -> str:
    return f"streamed, {what}" if stream else what


def report(out: dict[str, Any]) -> str:
    cells = out["cells"]
    have_ll = out["litellm"] is not None
    ll = out["litellm_label"]
    lines = [
        f"Machine: {out['machine']}",
        f"ccproxy {out['ccproxy_version']}; {ll if have_ll else 'LiteLLM: not measured'}; "
        f"{out['placement']}; medians of {out['rounds']} rounds{' (--quick)' if out['quick'] else ''}",
        "",
        f"| measure | ccproxy | {ll if have_ll else 'LiteLLM'} | LiteLLM ÷ ccproxy |",
        "|---|---:|---:|---:|",
    ]

    def row(label: str, mine: str, theirs: str, factor: str = "") -> None:
        lines.append(f"| {label} | {mine} | {theirs if have_ll else 'skipped'} | {factor if have_ll else ''} |")

    for case, title in CASES.items():
        for concurrency in CONCURRENCY:
            who = "1 client" if concurrency == 1 else f"{concurrency} clients"
            for stream, which, what in MEASURES:
                mine = added(cells, case, stream, concurrency, "ccproxy", which)
                theirs = added(cells, case, stream, concurrency, "litellm", which)
                label = f"({case}) {title}: added latency, {streamed(stream, what)}, {who}"
                row(label, ms(mine), ms(theirs), ratio(mine, theirs))
    for case in RELAY_CASES:
        for stream, which, what in MEASURES:
            floor = added(cells, case, stream, 1, "relay", which)
            row(
                f"({case}) the floor, a relay with no conversion (bench/relay.py): added latency, "
                f"{streamed(stream, what)}, 1 client",
                ms(floor),
                "n/a",
            )
    for case, title in CASES.items():
        for stream in (False, True):
            floor, upstream = cpu_us(cells, case, stream, "relay"), cpu_us(cells, case, stream, "direct")
            beside = [f"floor {us(floor)}"] if floor is not None else []
            if upstream is not None and not stream:
                beside.append(f"the fake upstream {us(upstream)}")
            mine, theirs = cpu_us(cells, case, stream, "ccproxy"), cpu_us(cells, case, stream, "litellm")
            row(
                f"({case}) {title}: server CPU time per request, {'streamed' if stream else 'whole'}, 1 client"
                + (f" ({'; '.join(beside)})" if beside else ""),
                us(mine),
                us(theirs),
                ratio(mine, theirs),
            )
    for case in CASES:

        def rate(target: str, case: str = case) -> str:
            cell = cells.get((SAME_DIRECT.get(case, case) if target == "direct" else case, True, 32, target))
            if cell is None or not cell.events_per_s or cell.failures:
                return "—"
            return f"{statistics.median(cell.events_per_s):,.0f}"

        row(
            f"({case}) streamed events/s through the server, 32 clients (direct: {rate('direct')})",
            rate("ccproxy"),
            rate("litellm"),
        )
    conv = out["conversion"] or {}
    lines.append(
        f"| stream conversion in process, one core, OpenAI → Anthropic events/s | "
        f"{conv.get('openai->claude', 0):,.0f} | n/a (no comparable in-process API) | |"
    )
    lines.append(
        f"| stream conversion in process, one core, Gemini → OpenAI events/s | "
        f"{conv.get('gemini->openai', 0):,.0f} | n/a | |"
    )
    for key, label in (
        ("idle", "server RSS, idle after warm-up"),
        ("peak", f"server peak RSS, {MEMORY_STREAMS} concurrent streams"),
    ):
        mine = out["memory"].get("ccproxy", {}).get(key)
        theirs = out["memory"].get("litellm", {}).get(key)
        row(label, mib(mine), mib(theirs), ratio(mine, theirs) if key == "peak" else "")
    cold, ll_cold, aws_cold = out["cold"].get("ccproxy"), out["cold"].get("litellm"), out["cold"].get("ccproxy_aws")
    row(
        "cold start: import the Lambda handler and build the app (in process)",
        f"{cold[0]:.3f} s" if cold else "—",
        f"{ll_cold[0]:.3f} s" if ll_cold else "—",
        ratio(cold[0] if cold else None, ll_cold[0] if ll_cold else None),
    )
    row(
        "cold start: whole fresh process (interpreter start to exit)",
        f"{cold[1]:.3f} s" if cold else "—",
        f"{ll_cold[1]:.3f} s" if ll_cold else "—",
        ratio(cold[1] if cold else None, ll_cold[1] if ll_cold else None),
    )
    if aws_cold:
        row(
            "cold start with CCPROXY_TABLE set (boto3 DynamoDB client built; no AWS call)",
            f"{aws_cold[0]:.3f} s",
            "n/a",
        )
    layer, ll_size = out["sizes"].get("layer"), out["sizes"].get("litellm")
    row(
        "dependency layer (pip install --target, no .pyc) / LiteLLM[proxy] installed",
        mib(layer / 2**20 if layer else None),
        mib(ll_size / 2**20 if ll_size else None),
        ratio(layer, ll_size) if layer and ll_size else "",
    )
    package = out["sizes"].get("package")
    row("function package (functions/, no caches)", f"{package / 1024:.0f} KiB" if package else "—", "n/a")
    lines.append("")
    lines.append(
        "Added latency: the median over rounds of (the proxy's median − the fake upstream's median "
        "called directly), same request and concurrency; each stream is "
        f"{EVENTS} content events. Direct medians:"
    )
    for case, title in CASES.items():
        parts = []
        for concurrency in CONCURRENCY:
            for stream, which, what in MEASURES:
                cell = cells.get((SAME_DIRECT.get(case, case), stream, concurrency, "direct"))
                if cell and getattr(cell, which):
                    parts.append(f"{what} @{concurrency} {statistics.median(getattr(cell, which)) * 1000:.2f} ms")
        same = f" (the same request as ({SAME_DIRECT[case]})'s)" if case in SAME_DIRECT else ""
        lines.append(f"- ({case}) {title}{same}: " + ", ".join(parts))
    lines += [f"- note: {note}" for note in out["notes"]]
    # Targets: under 1 ms with one client (32 clients on one
    # server core queue behind each other by design), under 0.7 ms for a
    # whole answer; at least 10 times less than LiteLLM's on every row. Where
    # the floor (bench/relay.py) was measured, it is given beside.
    verdicts, negative = [], False
    for case in CASES:
        for concurrency in CONCURRENCY:
            for stream, which, what in MEASURES:
                mine = added(cells, case, stream, concurrency, "ccproxy", which)
                theirs = added(cells, case, stream, concurrency, "litellm", which)
                if mine is None:
                    continue
                negative = negative or mine < 0
                met = theirs is None or mine <= 0 or theirs >= 10 * mine
                verdict = f"({case}) {what} @{concurrency}: {mine:.2f} ms"
                if concurrency == 1:
                    limit = WHOLE_TARGET_MS if not stream else 1.0
                    met = met and mine < limit
                    verdict += f" {'<' if mine < limit else '≥'} {limit:g} ms"
                    floor = added(cells, case, stream, concurrency, "relay", which)
                    if floor is not None:
                        verdict += f" (floor {floor:.2f} ms)"
                if theirs is not None and mine > 0:
                    verdict += f", {ratio(mine, theirs)} less than LiteLLM"
                verdicts.append(verdict + (" (met)" if met else " (missed)"))
    if cold:
        verdicts.append(
            f"cold start {cold[0]:.3f} s {'<' if cold[0] < 0.5 else '≥'} 0.5 s ({'met' if cold[0] < 0.5 else 'missed'})"
        )
    lines.append("- targets: " + "; ".join(verdicts))
    if negative:
        lines.append(
            "- note: a negative added latency means the load client was the bottleneck of the direct "
            "run: it shares a core with the fake upstream, and through ccproxy it receives fewer, larger "
            "chunks (ccproxy hands on together what arrived together), so it has less to do"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer rounds and requests)")
    parser.add_argument("--no-litellm", action="store_true", help="measure ccproxy alone")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    began = time.monotonic()
    notes: list[str] = []

    server_cpus, client_cpus = cpu_split()
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)
        client_list = ", ".join(map(str, sorted(client_cpus)))
        placement = f"servers on CPU {min(server_cpus)}, client and fake upstream on CPU {client_list}"
    else:
        placement = "one CPU shared by all"

    have_litellm = False
    if args.no_litellm:
        notes.append("LiteLLM skipped (--no-litellm)")
    else:
        have_litellm, note = install_litellm()
        if note:
            notes.append(note)
            log(note)

    out: dict[str, Any] = {
        "machine": machine(),
        "placement": placement,
        "rounds": plan.rounds,
        "quick": args.quick,
        "ccproxy_version": subprocess.run(
            [str(CC_PYTHON), "-c", "import ccproxy; print(ccproxy.__version__)"], capture_output=True, text=True
        ).stdout.strip(),
        "litellm": None,
        "litellm_label": "LiteLLM",
        "cells": {},
        "conversion": None,
        "memory": {},
        "cold": {},
        "sizes": {},
        "notes": notes,
    }
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="ccproxy-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            fake_port = free_port()
            fake = start(
                "fake",
                [str(CC_PYTHON), str(BENCH / "fake_upstream.py"), str(fake_port), str(EVENTS)],
                clean_env(),
                tmp,
                client_cpus,
                f"http://127.0.0.1:{fake_port}",
                "/health",
                20,
            )
            servers.append(fake)
            cc_config, ll_config = write_configs(tmp, fake.url)
            cc_port = free_port()
            ccproxy = start(
                "ccproxy",
                [str(CC_SERVE), "serve", "--config", str(cc_config), "--port", str(cc_port), "--log-level", "warning"],
                clean_env(CCPROXY_STATE=str(tmp / "state.db")),
                tmp,
                server_cpus,
                f"http://127.0.0.1:{cc_port}",
                "/health",
                60,
            )
            servers.append(ccproxy)
            relay_port = free_port()
            relay = start(
                "relay",
                [str(CC_PYTHON), str(BENCH / "relay.py"), str(relay_port), fake.url],
                clean_env(),
                tmp,
                server_cpus,
                f"http://127.0.0.1:{relay_port}",
                "/health",
                60,
            )
            servers.append(relay)
            targets = {"direct": fake.url, "ccproxy": ccproxy.url, "relay": relay.url}
            litellm: Server | None = None
            if have_litellm:
                out["litellm_label"] = f"LiteLLM {litellm_version()}"
                ll_port = free_port()
                log("starting LiteLLM's proxy")
                try:
                    litellm = start(
                        "litellm",
                        [
                            str(LL_VENV / "bin" / "litellm"),
                            "--config",
                            str(ll_config),
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(ll_port),
                            "--num_workers",
                            "1",
                        ],
                        litellm_env(),
                        tmp,
                        server_cpus,
                        f"http://127.0.0.1:{ll_port}",
                        "/health/liveliness",
                        300,
                    )
                    servers.append(litellm)
                    targets["litellm"] = litellm.url
                    out["litellm"] = litellm.url
                except RuntimeError as exc:
                    notes.append(f"LiteLLM skipped: its proxy did not start ({str(exc)[-300:]})")
                    log(notes[-1])

            other = OtherLoad([os.getpid()] + [server.process.pid for server in servers])
            pids = {server.name if server is not fake else "direct": server.process.pid for server in servers}
            cells = asyncio.run(latency(plan, targets, pids))
            other_cores = other.cores()
            notes.append(
                f"other processes on the machine used {other_cores:.0%} of a core on average during the "
                "latency runs" + (" (figures noisier than on an idle machine)" if other_cores > 0.1 else "")
            )
            out["cells"] = cells
            for (case, stream, concurrency, target), cell in cells.items():
                if cell.failures:
                    notes.append(
                        f"{target} ({case}, {'streamed' if stream else 'whole'}, {concurrency} clients): "
                        f"{cell.failures} failed requests, first: {cell.first_failure[:200]}"
                    )

            log(f"memory under {MEMORY_STREAMS} concurrent streams")
            for server in (ccproxy, litellm):
                if server is None:
                    continue
                idle, peak, failures = asyncio.run(memory(plan, server, "a"))
                out["memory"][server.name] = {"idle": idle, "peak": peak}
                if failures:
                    notes.append(f"{server.name}: {failures} failed streams in the memory test")
        finally:
            for server in reversed(servers):
                server.stop()

        log("stream conversion throughput (in process)")
        conv = subprocess.run(
            [
                str(CC_PYTHON),
                str(BENCH / "streamconv.py"),
                "--events",
                str(plan.conversion_events),
                "--runs",
                str(plan.conversion_runs),
            ]
            + (["--cpu", str(min(server_cpus))] if server_cpus else []),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp,
        )
        if conv.returncode == 0:
            out["conversion"] = json.loads(conv.stdout.strip().splitlines()[-1])
        else:
            notes.append(f"stream conversion failed: {conv.stderr[-300:]}")

        log("cold start")
        cold_dir = tmp / "cold"
        cold_dir.mkdir()
        lambda_config = cold_dir / "ccproxy.yaml"
        lambda_config.write_text((tmp / "ccproxy.yaml").read_text())
        cc_env = clean_env(CCPROXY_CONFIG=str(lambda_config), CCPROXY_STATE=str(cold_dir / "state.db"))
        out["cold"]["ccproxy"] = cold_start(CC_PYTHON, CC_COLD, cc_env, cold_dir, plan.cold_runs, server_cpus)
        aws_env = clean_env(
            CCPROXY_CONFIG=str(lambda_config),
            CCPROXY_TABLE="bench-table",
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_EC2_METADATA_DISABLED="true",
        )
        out["cold"]["ccproxy_aws"] = cold_start(CC_PYTHON, CC_COLD, aws_env, cold_dir, plan.cold_runs, server_cpus)
        if out["litellm"] is not None:
            out["cold"]["litellm"] = cold_start(
                LL_PYTHON, LL_COLD, litellm_env(), cold_dir, plan.litellm_cold_runs, server_cpus
            )

        log("sizes (pip install --target of the layer)")
        layer, note = layer_size(tmp)
        if note:
            notes.append(note)
        out["sizes"]["layer"] = layer
        out["sizes"]["package"] = tree_size(ROOT / "functions", skip=("__pycache__",), skip_suffix=(".egg-info",))
        if out["litellm"] is not None:
            out["sizes"]["litellm"] = litellm_installed_size()

    notes.append(f"total run time {time.monotonic() - began:.0f} s")
    text = report(out)
    print(text)
    if args.json:
        serial = dict(out)
        serial["cells"] = {"|".join(map(str, key)): cell.__dict__ for key, cell in out["cells"].items()}
        Path(args.json).write_text(json.dumps(serial, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
