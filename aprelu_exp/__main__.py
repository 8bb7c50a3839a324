"""`aprelu-exp [overrides]` (also `python -m aprelu_exp`): compose the Hydra config and train one run
(or a sweep). The command answers `--help`, `--cfg`, `--info` and tab completion without loading
torch or Lightning: those load with the job (aprelu_exp.job), once there is something to train."""
from __future__ import annotations

from aprelu_exp.runs.stop import stop_requests

stop_requests.install(while_loading=True)  # first: a Ctrl-C while the libraries load ends in one line too

import os  # noqa: E402
import sys  # noqa: E402

import hydra  # noqa: E402
from hydra.errors import HydraException  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from aprelu_exp import cli_help  # noqa: E402
from aprelu_exp.compose import check_conf_dir, explain, register_resolvers  # noqa: E402
from aprelu_exp.errors import UserError, completion_fails_quietly  # noqa: E402
from aprelu_exp.console.stop_command import command_stops_cleanly  # noqa: E402
from aprelu_exp.runs.stop import RunInterrupted  # noqa: E402
from aprelu_exp.sweep.slurm import cancel_stopped_sweep  # noqa: E402
from aprelu_exp.sweep.resume import resume_argv  # noqa: E402

register_resolvers()
cli_help.register()


def _conf_dir() -> str:
    try:
        return str(check_conf_dir())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(UserError.exit_code)


@hydra.main(version_base="1.3", config_path=_conf_dir(), config_name="config")
def task(cfg: DictConfig) -> float | None:
    # Deferred on purpose: everything Hydra answers without a job (help, completion, --cfg) stays
    # free of torch's and Lightning's import time (seconds).
    from aprelu_exp.job import run_job

    return run_job(cfg)


def _overrides(argv: list[str]) -> list[str]:
    return [a for a in argv if "=" in a and not a.startswith("-")]


def _config_dirs(argv: list[str]) -> list[str]:
    dirs = [a.split("=", 1)[1] for a in argv if a.startswith("--config-dir=")]
    return dirs + [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-cd", "--config-dir")]


@completion_fails_quietly
@command_stops_cleanly("aprelu_exp")
def main() -> None:
    argv = sys.argv[1:]
    if any(a in ("--help", "-h") for a in argv) and "--hydra-help" not in argv:
        try:
            print(cli_help.render(_overrides(argv), _config_dirs(argv)), end="")
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(UserError.exit_code)
        return
    completing = any(a in ("-sc", "--shell-completion") or a.startswith("--shell-completion=") for a in argv)
    # Hydra then raises its composition errors instead of printing them with exit 1: they are said
    # here in one paragraph naming the key, with exit 2 (bad input).
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        resumed = None if completing else resume_argv(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(UserError.exit_code)
    if resumed is not None:  # -m resume=<sweep dir>: the sweep's own command, into its directory
        sys.argv = [sys.argv[0], *resumed]
    try:
        task()
    except RunInterrupted as exc:
        cancel_stopped_sweep(exc)  # a sweep on SLURM: its jobs would train on without it
        raise
    except (HydraException, OmegaConfBaseException) as exc:
        if completing:
            sys.exit(0)  # a line that does not parse completes to nothing, quietly
        print(f"error: {explain(exc, _overrides(argv))}", file=sys.stderr)
        sys.exit(UserError.exit_code)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(UserError.exit_code)


if __name__ == "__main__":
    main()
