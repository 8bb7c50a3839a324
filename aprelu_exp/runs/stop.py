"""A user's stop, honoured at any moment of the process: Ctrl-C (SIGINT to the terminal's process
group), `kill`, a container stop, SLURM preemption (SIGTERM).

The handlers are installed as the command starts, before the heavy libraries load. The first signal
raises `RunInterrupted` where the main thread is (loading, composing, checking the data, compiling,
a batch, validation), at once: a batch boundary can be a minute away while torch.compile works. A
write that must finish whole (a checkpoint, a metrics row, status.json: `deferred()`) finishes
first; the exception comes as it ends. The second signal ends the process at once (`os._exit`),
after marking a taken run directory interrupted.

`RunInterrupted` is a BaseException, as KeyboardInterrupt is, so that library code catching
`Exception` (Hydra's job runner, torch.compile's error wrapping) passes it on unchanged. Whatever
else is raised once a stop was asked for (a compiler child that died of the same Ctrl-C) is the stop
too: `requested()` says so.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    return {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}.get(signum, signal.Signals(signum).name)


class RunInterrupted(BaseException):
    """The user's stop, raised where the main thread was when it came."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum
        self.exit_code = 128 + signum
        self.reported = False  # its line is printed


class StopRequests:
    """The process's stop signals: which came, where a write holds the stop back, what a second
    signal does before the process ends."""

    def __init__(self):
        self.received: int | None = None
        self.on_hard_stop: Callable[[int], None] | None = None
        self._holding = 0
        self._pending = False
        self._previous: dict = {}
        self._while_loading = False

    def install(self, while_loading: bool = False) -> None:
        """Handle SIGINT and SIGTERM from now on, a command's start (main thread only). A signal the
        process was started with ignored (`nohup`, a shell's background job) stays ignored.
        `while_loading`: the command's modules are still being imported, where an exception would
        end in a traceback and nothing is written yet: a stop ends the process there and then."""
        if threading.current_thread() is not threading.main_thread():
            return
        self.received, self.on_hard_stop, self._holding, self._pending = None, None, 0, False
        self._while_loading = while_loading
        for signum in HANDLED:
            current = signal.getsignal(signum)
            if current == self._handle or current == signal.SIG_IGN:
                continue
            self._previous.setdefault(signum, current)
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Give the signals back as they were (the command ran inside a longer-lived process). After
        a stop they stay: a further signal while the process winds down ends it at once."""
        if self.received is not None:
            return
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def handling(self) -> bool:
        return signal.getsignal(signal.SIGTERM) == self._handle  # bound methods: equal, never identical

    def requested(self) -> bool:
        return self.received is not None

    def check(self) -> None:
        """Raise the stop here if one came and was not raised yet (it was held back, or swallowed by
        code that caught it)."""
        if self.received is not None and not self._holding:
            self._pending = False
            raise RunInterrupted(self.received)

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            if self._while_loading:
                sys.stderr.write(f"\nstopped by {signal_name(signum)} while starting; nothing was written.\n")
                sys.stderr.flush()
                os._exit(128 + signum)
            if self._holding:
                self._pending = True
                return
            raise RunInterrupted(signum)
        try:
            if self.on_hard_stop is not None:
                self.on_hard_stop(signum)
            sys.stderr.write(f"\nstopped at once by a second {signal_name(signum)}.\n")
            sys.stderr.flush()
        finally:
            os._exit(128 + signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that a first stop signal does not cut short; the stop is raised as it ends."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding and self._pending:
                self._pending = False
                raise RunInterrupted(self.received)


stop_requests = StopRequests()
