"""Run a command-line entry point inside the test process.

The command goes through the same `main` as `python -m MODULE ARGS` (Hydra's or argparse's parsing,
the same error handling, the same exit status), but without a new interpreter that imports torch,
Lightning and Hydra again (6 to 9 s a call on 2 cores). Tests about the process itself (signals,
a terminal, two processes at once) keep using subprocesses.
"""
from __future__ import annotations

import contextlib
import runpy
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Completed:
    """What subprocess.run would have returned, minus the process."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
    return 1


def run_module(module: str, args, env: dict | None = None, cwd: Path | None = None) -> Completed:
    """`python -m MODULE *args`, in process; env (a full environment, as subprocess takes it) and cwd
    are applied for the call and restored after it."""
    args = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    GlobalHydra.instance().clear()
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        os.chdir(cwd or REPO)
        sys.argv = [f"{module}/__main__.py", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                # As `python -m` does: the module's __main__ runs as __main__ (Hydra resolves its
                # config_path from that), its imports come from this process's cache.
                runpy.run_module(module, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exc:
                code = _exit_code(exc.code)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        GlobalHydra.instance().clear()
    return Completed([module, *args], int(code or 0), out.getvalue(), err.getvalue())


def run_cli(args, env=None, cwd: Path | None = None, timeout=None) -> Completed:
    """`python -m aprelu_exp *args` in process (timeout is accepted for the subprocess signature)."""
    return run_module("aprelu_exp", args, env, cwd)
