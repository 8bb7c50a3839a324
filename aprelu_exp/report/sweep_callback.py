"""Hydra callback: when a multirun ends, write the report for the whole sweep into its directory."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from aprelu_exp.report.build import build_report
from aprelu_exp.report.replay import read_spec, write_replay_tables
from aprelu_exp.loggers.mlflow import attach_sweep_report

log = logging.getLogger(__name__)
SUCCEEDED = ("finished", "pruned")  # a pruned job trained until its pruner stopped it


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        result = build_report([sweep_dir], sweep_dir, title=f"Sweep {sweep_dir.name}")
        statuses = [r["status"] for r in result["rows"]]
        log.info("sweep report: %d job(s) (%s) -> %s/report.md", result["runs"],
                 ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses))), sweep_dir)
        spec = read_spec(sweep_dir)
        if spec is not None:  # a replay's folder (records replay), also when resumed by -m resume=
            write_replay_tables(sweep_dir, spec)
            log.info("replay tables -> %s/replay.md", sweep_dir)
        if "mlflow" in (config.get("logger") or {}):
            try:
                attach_sweep_report(config, sweep_dir, result["files"])
            except Exception as exc:  # the sweep's own report stays on disk either way
                log.warning("could not attach the sweep report to MLflow: %s", exc)
        if statuses and not any(s in SUCCEEDED for s in statuses):
            # A sweep that trained nothing is a failed command (a script or CI must see it).
            print(f"error: every job of the sweep failed ({len(statuses)} of {len(statuses)}); "
                  f"why, job by job: {sweep_dir}/report.md", file=sys.stderr, flush=True)
            sys.exit(1)
