"""Drive an interactive TUI agent in a pty: wait, type the prompt, wait for 'done', exit.

    DRIVE_PROMPT='...' DRIVE_AFTER='/context' python3 drive_pty.py -- claude --allowedTools Bash

DRIVE_AFTER: "|"-separated lines typed after the answer (e.g. "/context", which makes
Claude Code send a burst of count_tokens requests). DRIVE_LOG: where the raw terminal
output goes. Used by record.sh for the interactive Claude Code recordings.
"""
import os
import pty
import re
import select
import signal
import sys
import time


def main() -> None:
    cmd = sys.argv[sys.argv.index("--") + 1:]
    prompt = os.environ["DRIVE_PROMPT"]
    extra = os.environ.get("DRIVE_AFTER", "")  # e.g. "/context" typed after the answer
    log = open(os.environ.get("DRIVE_LOG", "/tmp/drive.log"), "wb")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.execvp(cmd[0], cmd)
    buf = b""
    def pump(secs):
        nonlocal buf
        end = time.time() + secs
        while time.time() < end:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    return False
                if not data:
                    return False
                buf += data; log.write(data); log.flush()
                # answer terminal queries (cursor position) so TUIs do not wait
                if b"\x1b[6n" in data:
                    os.write(fd, b"\x1b[1;1R")
        return True
    def type_text(t):
        for ch in t:
            os.write(fd, ch.encode()); time.sleep(0.02)
    pump(8)
    type_text(prompt); time.sleep(0.5); os.write(fd, b"\r")
    start = time.time()
    while time.time() - start < 90:
        if not pump(1): break
        plain = re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]", b"", buf)
        if plain.count(b"done") >= 2: break
    pump(3)
    for step in [s for s in extra.split("|") if s]:
        type_text(step); time.sleep(0.5); os.write(fd, b"\r"); pump(8)
    type_text("/exit"); time.sleep(0.5); os.write(fd, b"\r"); pump(5)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    time.sleep(1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
