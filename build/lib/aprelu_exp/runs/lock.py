"""One process per run directory: a lock file naming the host and PID that train in it."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import pid_alive

log = logging.getLogger(__name__)
LOCK_FILE = "run.lock"


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> "RunLock":
        """Take the lock, or refuse (UserError) while another live process holds it. A lock left by
        a process that is gone (same host) is taken over with a note."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(mine + "\n")
            self.held = True
            return self
        raise UserError(f"could not take the lock {self.path}; another process keeps taking it.")

    def _take_over_if_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            holder = {}
        host, pid = holder.get("host"), holder.get("pid")
        if host == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
            log.warning("run lock %s was left by process %s, which has ended; taking it over.", self.path, pid)
            self.path.unlink(missing_ok=True)
            return
        if not host or pid is None:
            raise UserError(f"{self.path} exists but cannot be read; if no process trains in "
                            f"{self.path.parent}, delete it and try again.")
        where = "this host" if host == socket.gethostname() else f"host {host}"
        raise UserError(f"{self.path.parent} is in use: process {pid} on {where} is training in it "
                        f"(lock {self.path}, since {holder.get('since')}). Wait for it to finish or stop "
                        f"it (Ctrl-C, or kill {pid}), then resume; if that process is gone, delete the "
                        f"lock file.")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
