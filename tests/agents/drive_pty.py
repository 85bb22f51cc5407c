"""Drive an interactive TUI agent in a pty: wait, type the prompt, wait for 'done', exit.

    DRIVE_PROMPT='...' DRIVE_AFTER='/context' python3 drive_pty.py -- claude --allowedTools Bash

DRIVE_AFTER: "|"-separated lines typed after the answer (e.g. "/context", which makes
Claude Code send a burst of count_tokens requests). DRIVE_LOG: where the raw terminal
output goes. Used by record.sh for the interactive Claude Code recordings.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import sys
import time
from typing import BinaryIO

ANSWER_WAIT = 90.0  # seconds for the agent's turn
CURSOR_QUERY = b"\x1b[6n"  # a TUI asking where the cursor is waits for the answer
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[a-zA-Z]")


class Terminal:
    """The agent's side of a pty: what it printed so far, and a keyboard."""

    def __init__(self, fd: int, log: BinaryIO) -> None:
        self.fd = fd
        self.log = log
        self.output = b""

    def pump(self, seconds: float) -> bool:
        """Read for `seconds`; False once the agent has closed the terminal."""
        end = time.time() + seconds
        while time.time() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return False
            if not data:
                return False
            self.output += data
            self.log.write(data)
            self.log.flush()
            if CURSOR_QUERY in data:
                os.write(self.fd, b"\x1b[1;1R")
        return True

    def enter(self, text: str) -> None:
        """Type `text` a key at a time, as a person would, then Enter."""
        for ch in text:
            os.write(self.fd, ch.encode())
            time.sleep(0.02)
        time.sleep(0.5)
        os.write(self.fd, b"\r")

    def answered(self) -> bool:
        # The prompt itself says "done" once; the answer says it again.
        return ESCAPES.sub(b"", self.output).count(b"done") >= 2


def stop(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        time.sleep(1)
    os.waitpid(pid, 0)


def main() -> None:
    command = sys.argv[sys.argv.index("--") + 1:]
    prompt = os.environ["DRIVE_PROMPT"]
    after = [line for line in os.environ.get("DRIVE_AFTER", "").split("|") if line]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.execvp(command[0], command)
    with open(os.environ.get("DRIVE_LOG", "/tmp/drive.log"), "wb") as log:
        terminal = Terminal(fd, log)
        terminal.pump(8)
        terminal.enter(prompt)
        started = time.time()
        while time.time() - started < ANSWER_WAIT and terminal.pump(1) and not terminal.answered():
            pass
        terminal.pump(3)
        for line in after:
            terminal.enter(line)
            terminal.pump(8)
        terminal.enter("/exit")
        terminal.pump(5)
    stop(pid)


if __name__ == "__main__":
    main()
