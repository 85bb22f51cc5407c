"""Serve an ASGI app on a loopback port from a background thread."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx
import uvicorn


class BackgroundServer:
    def __init__(self, app, host: str = "127.0.0.1") -> None:
        config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.host = host
        self.port = 0

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def serving(app) -> Iterator[BackgroundServer]:
    server = BackgroundServer(app).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A loopback port nobody is listening on (for servers started as
    processes, which cannot report a port 0 back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(process: subprocess.Popen, url: str, output: Callable[[], str], timeout: float = 20) -> None:
    """Poll `url`/health until it answers 200; if the process dies or the time
    runs out, kill it and fail with what it printed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the server did not start: " + output())
        time.sleep(0.1)


CCPROXY = Path(sys.executable).parent / "ccproxy"


def start_ccproxy(config: Path, env: dict[str, str], cwd: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`ccproxy serve` as users run it, in a process of its own; returns the
    process and its URL once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [str(CCPROXY), "serve", "--config", str(config), "--port", str(port), *options],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(process, url, lambda: process.stdout.read().decode())
    return process, url
