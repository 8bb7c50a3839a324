"""Third-party messages a user of this tool cannot act on, filtered at start-up. Warnings that
call for an action (a data subset smaller than the logging interval, say) stay."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

# (logger name, message fragment)
QUIET_LOGS = (
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),   # CPU machines, on torch.compile
    ("pytorch_lightning.utilities.rank_zero", "litlogger"),      # an advertisement
    ("lightning.pytorch.utilities.rank_zero", "litlogger"),
)
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",       # Lightning vs torch's pytree, not ours
)
# Lightning's hint wherever an `srun` executable exists (a cluster's login node, a workstation with
# SLURM's tools): it concerns a process inside a SLURM job that was not started by srun, and only
# there is it kept.
SRUN_HINT = r"The `srun` command is available on your system but is not used"
SLURM_JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_STEP_ID", "SLURM_NTASKS")


def in_a_slurm_job(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return any(name in environ for name in SLURM_JOB_VARIABLES)


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_third_party() -> None:
    """Filter the messages above in this process. Each process that trains calls it: a command's
    start-up does, and a job in a joblib worker (started without this package's __main__) too."""
    for name, fragment in QUIET_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(_DropMessages(fragment))
    for message in QUIET_WARNINGS + (() if in_a_slurm_job() else (SRUN_HINT,)):
        warnings.filterwarnings("ignore", message=message)


# Lines the profiler's native library (Kineto) writes straight to the process's stdout/stderr at
# every profile() start and stop; its log level does not reach them.
NATIVE_NOISE = (r"^(USDT|STAGE):\S+ \S+ \S+ \S+\] ", r"^ERROR:.*gpuGetDeviceCount failed")


@contextlib.contextmanager
def native_output_filtered():
    """Capture what native code writes to file descriptors 1 and 2 inside the block, and pass on
    every line but NATIVE_NOISE when it ends (Python's own prints go the same way, in order)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    captured = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    try:
        for fd in (1, 2):
            os.dup2(captured[fd].fileno(), fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            captured[fd].seek(0)
            text = captured[fd].read().decode(errors="replace")
            captured[fd].close()
            kept = [ln for ln in text.splitlines(keepends=True)
                    if not any(re.match(p, ln) for p in NATIVE_NOISE)]
            if kept:
                os.write(fd, "".join(kept).encode())
