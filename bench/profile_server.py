"""Where ccproxy's added latency goes: the server profiled under load.

Builds the app exactly as `ccproxy serve` does (config, secrets, SQLite
state, uvicorn with the same options), runs it in this process under
cProfile (or pyinstrument, if importable and --pyinstrument is given),
drives it from a separate load process against bench/fake_upstream.py, and
prints the top functions (cProfile: by own time and by cumulative time).

Run: .venv/bin/python bench/profile_server.py [--case a|b] [--stream]
         [--requests N] [--concurrency N] [--pyinstrument] [--http auto|h11|httptools]
         [--loop auto|asyncio|uvloop] [--app ccproxy|bare|forward|forward-aiohttp]

--app other than ccproxy profiles bench/relay.py's apps: the floor under
ccproxy's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import relay  # noqa: E402
import run as bench  # noqa: E402

LOAD = """
import asyncio, json, sys
sys.path.insert(0, {bench!r})
import load
job = load.Job({url!r}, {body!r}.encode(), {headers!r}, tuple(m.encode() for m in {markers!r}))
async def main():
    async with load.Clients({concurrency}) as clients:
        await load.run(clients, job, 20)
        result = await load.run(clients, job, {requests})
    print(json.dumps({{"median_ttfb_ms": result.median_ttfb() * 1000, "median_ttlb_ms": result.median_ttlb() * 1000,
                      "failures": result.failures, "first_failure": result.first_failure, "wall_s": result.wall}}))
asyncio.run(main())
"""


def patch_ids() -> None:
    """new_call_id with one getrandom call instead of one per character."""
    import secrets as _secrets
    import sys

    from ccproxy import ids

    alphabet = ids._ALPHABET

    def new_call_id(prefix: str = "call_") -> str:
        return prefix + "".join(alphabet[b % 62] for b in _secrets.token_bytes(24))

    # Every module that imported it by name (the codecs' halves).
    for name, module in list(sys.modules.items()):
        if name.startswith("ccproxy") and getattr(module, "new_call_id", None) is ids.new_call_id:
            module.new_call_id = new_call_id  # type: ignore[attr-defined]
    ids.new_call_id = new_call_id  # type: ignore[assignment]


PACKAGES = (
    "ccproxy",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "starlette",
    "uvicorn",
    "pydantic",
    "asyncio",
    "json",
    "sqlite3",
    "selectors",
    "ssl",
    "socket",
)


def by_package(profiler: cProfile.Profile, requests: int) -> str:
    """cProfile own time summed by package; builtins are charged to the
    package of their caller (socket send to asyncio, execute to ccproxy...)."""
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}

    def package(filename: str) -> str:
        parts = filename.replace("\\", "/").split("/")
        for name in reversed(parts):
            stem = name.removesuffix(".py")
            if stem in PACKAGES:
                return stem
            if name in PACKAGES:
                return name
        return "other"

    for (filename, _, name), (_, _, tottime, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename == "~":  # a builtin: charge it to its heaviest caller's package
            if name == "<method 'poll' of 'select.epoll' objects>":
                owner = "idle (epoll wait)"
            elif callers:
                heaviest = max(callers.items(), key=lambda item: item[1][2])[0]
                owner = package(heaviest[0])
            else:
                owner = "other"
        else:
            owner = package(filename)
        totals[owner] = totals.get(owner, 0.0) + tottime
    busy = sum(v for k, v in totals.items() if not k.startswith("idle"))
    lines = ["| package (own time, cProfile) | share of busy CPU | µs per request |", "|---|---:|---:|"]
    for owner, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        if owner.startswith("idle"):
            continue
        lines.append(f"| {owner} | {seconds / busy:.0%} | {seconds / requests * 1e6:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=["a", "b"], default="a")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--no-profile", action="store_true", help="only time it")
    # auto: what `ccproxy serve` gets (httptools and uvloop, installed with it)
    parser.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument(
        "--by-package", action="store_true", help="cProfile: also sum own time by package (where the CPU goes)"
    )
    parser.add_argument(
        "--app",
        choices=["ccproxy", "bare", "forward", "forward-aiohttp"],
        default="ccproxy",
        help="bare: Starlette answering a canned body (the server stack alone); "
        "forward: Starlette + ccproxy's pooled httpx client relaying the upstream's "
        "bytes (server stack + upstream client, no conversion)",
    )
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        choices=["memory-state", "fast-ids", "no-secrets-file", "asgi-2.4"],
        help="measure a suggested fix without editing ccproxy (monkeypatched here): "
        "memory-state: the in-memory state store instead of SQLite; fast-ids: one "
        "urandom call per id instead of 24; no-secrets-file: no secrets.json stat per request",
    )
    args = parser.parse_args()

    import uvicorn
    from ccproxy.app import Settings, create_app
    from ccproxy.config import load as load_config
    from ccproxy.stores.secrets import secret_store_from_env
    from ccproxy.stores.state import state_store_from_env

    server_cpus, client_cpus = bench.cpu_split()
    if server_cpus:
        os.sched_setaffinity(0, server_cpus)
    with tempfile.TemporaryDirectory(prefix="ccproxy-profile-") as tmp_name:
        tmp = Path(tmp_name)
        fake_port = bench.free_port()
        fake = bench.start(
            "fake",
            [sys.executable, str(BENCH / "fake_upstream.py"), str(fake_port)],
            bench.clean_env(),
            tmp,
            client_cpus,
            f"http://127.0.0.1:{fake_port}",
            "/health",
            20,
        )
        try:
            config_path, _ = bench.write_configs(tmp, fake.url)
            os.environ["CCPROXY_STATE"] = str(tmp / "state.db")
            config = load_config(config_path)
            secrets, state = secret_store_from_env(config_path), state_store_from_env()
            if "memory-state" in args.what_if:
                from ccproxy.stores.state import MemoryStateStore

                state = MemoryStateStore()
            if "no-secrets-file" in args.what_if:
                from ccproxy.stores.secrets import NoSecrets

                secrets = NoSecrets()
            if "fast-ids" in args.what_if:
                patch_ids()
            app = create_app(Settings(config=config, secrets=secrets, open_when_no_keys=True, state=state))
            if args.app != "ccproxy":
                app = relay.app(args.app, fake.url, args.case)
            if "asgi-2.4" in args.what_if:  # Starlette streams without its disconnect-listener task group
                inner = app

                async def app(scope, receive, send):
                    scope["asgi"] = {**scope.get("asgi", {}), "spec_version": "2.4"}
                    await inner(scope, receive, send)

            port = bench.free_port()
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    host="127.0.0.1",
                    port=port,
                    log_level="warning",
                    access_log=False,
                    proxy_headers=False,
                    http=args.http,
                    loop=args.loop,
                )
            )
            # A forward relay answers with the upstream's own bytes.
            target = "relay" if args.app.startswith("forward") else "ccproxy"
            job = bench.job(args.case, target, f"http://127.0.0.1:{port}", args.stream)
            script = LOAD.format(
                bench=str(BENCH),
                url=job.url,
                body=job.body.decode(),
                headers=job.headers,
                markers=[m.decode() for m in job.markers],
                concurrency=args.concurrency,
                requests=args.requests,
            )

            async def drive() -> str:
                task = asyncio.create_task(server.serve())
                while not server.started:
                    await asyncio.sleep(0.05)
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", script, stdout=subprocess.PIPE, preexec_fn=bench.pinned(client_cpus)
                )
                out, _ = await process.communicate()
                server.should_exit = True
                await task
                return out.decode()

            profiler = None
            if args.no_profile:
                pass
            elif args.pyinstrument:
                import pyinstrument

                profiler = pyinstrument.Profiler(async_mode="disabled", interval=0.0002)
                profiler.start()
            else:
                profiler = cProfile.Profile()
                profiler.enable()
            started = time.perf_counter()
            cpu_started = time.process_time()
            if args.loop != "asyncio":
                import uvloop

                out = uvloop.run(drive())
            else:
                out = asyncio.run(drive())
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            if isinstance(profiler, cProfile.Profile):
                profiler.disable()
            elif profiler is not None:
                profiler.stop()
            print(f"load: {out.strip()}")
            print(
                f"server: {elapsed:.1f} s wall, {cpu:.2f} s CPU, "
                f"{cpu / (args.requests + 20) * 1e6:.0f} us CPU per request (profiler overhead included if on)"
            )
            if isinstance(profiler, cProfile.Profile):
                if args.by_package:
                    print(by_package(profiler, args.requests + 20))
                for order in ("tottime", "cumulative"):
                    text = io.StringIO()
                    stats = pstats.Stats(profiler, stream=text)
                    stats.sort_stats(order).print_stats(args.top)
                    print(text.getvalue())
            elif profiler is not None:
                print(profiler.output_text(unicode=True, color=False, show_all=False))
        finally:
            fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
