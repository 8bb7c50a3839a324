"""A command that trains through the main command in a child process (`records confirm`, `records
replay`), and the user's stop while it runs.

The child stays in the parent's process group, so the terminal's Ctrl-C, a signal to the group and
a SIGKILL of the group reach both. The child then stops cleanly by itself (its run keeps its last
checkpoint and says so), and the parent waits for it instead of dying first: Python's default
SIGINT handling would raise KeyboardInterrupt in the parent, and `subprocess.run` would then kill the
child a quarter of a second later, in the middle of its clean stop. A SIGTERM sent to the parent
alone (`kill PID`, a scheduler stopping the command it started) is handed on to the child.
"""
from __future__ import annotations

import signal
import subprocess
import threading
from dataclasses import dataclass


@dataclass
class ChildResult:
    returncode: int
    signum: int | None  # the first stop signal the parent received while the child ran


def run_child(cmd: list[str]) -> ChildResult:
    """Run `cmd` to its end, however it is stopped; the parent's signal handlers are restored after."""
    received: list[int] = []
    proc: subprocess.Popen | None = None

    def on_signal(signum, frame) -> None:
        received.append(signum)
        if signum == signal.SIGTERM and proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    saved = {}
    if threading.current_thread() is threading.main_thread():
        # Before the child starts (a Ctrl-C in between must not kill the parent); a signal the
        # command was started with ignored (nohup, a shell's `&`) stays ignored, as in the child.
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) != signal.SIG_IGN:
                saved[signum] = signal.signal(signum, on_signal)
    try:
        proc = subprocess.Popen(cmd)
        code = proc.wait()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    return ChildResult(code, received[0] if received else None)
