"""MLflow tracking for runs: Lightning's MLFlowLogger, extended with what a run directory knows.

Default store: an sqlite file beside the runs (`<run_root>/mlflow.db`, artifacts in
`<run_root>/mlartifacts/`), so no server is needed; `logger.tracking_uri=http://host:5000` sends
the runs to a team's server instead. Per run: the resolved config as dotted params, every
metrics.csv column per epoch with the epoch as the step, tags (record, lineage, schedule, precision,
commit, data digests, run directory, status kept current), and config.yaml, summary.json and
metrics.csv as artifacts (checkpoints when `logger.log_checkpoints=true`). A resumed run continues
the same MLflow run: its id is kept in the run directory.
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from aprelu_exp.errors import UserError

RUN_ID_FILE = "mlflow_run_id"
INSTALL_HINT = "pip install mlflow   (or, in this project: pip install -e '.[mlflow]')"


def tracking_store(cfg: DictConfig) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment). Default: an sqlite file beside the
    runs. An sqlite store keeps its artifacts beside its file (MLflow would put them in ./mlruns of
    whatever directory the run started in); a server decides for itself."""
    uri = cfg.logger.get("tracking_uri")
    if not uri:
        root = Path(cfg.run_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'mlflow.db'}"
    uri = str(uri)
    if uri.startswith("sqlite:///"):
        return uri, (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return uri, None


def stage_text(stages) -> str:
    """`1x32, 1x32/2, 1x64/2`: blocks x channels, /2 where the stage downsamples."""
    return ", ".join(f"{s['blocks']}x{s['channels']}{'/2' if s['downsample'] else ''}" for s in stages)


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted keys; a list is one readable value (MLflow keys allow no [])."""
    from aprelu_exp.records.lineage import flatten

    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    params = {}
    for key, value in flatten(data, index_lists=False).items():
        if key == "model.stages":
            params[key] = stage_text(value)
        elif isinstance(value, (list, dict)):
            params[key] = json.dumps(value)
        else:
            params[key] = "null" if value is None else str(value)
    return params


class RunMLFlowLogger(MLFlowLogger):
    """Lightning logs each epoch's metrics with the epoch among them: that epoch becomes the step,
    so every metric has one point per epoch, as in metrics.csv."""

    @rank_zero_only
    def log_metrics(self, metrics, step=None):
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        super().log_metrics(metrics, int(epoch) if epoch is not None else step)

    @rank_zero_only
    def log_epoch_row(self, row: dict, columns) -> None:
        """The metrics.csv columns Lightning does not log (timings, throughput)."""
        values = {c: row[c] for c in columns if row.get(c) is not None}
        if values:
            super().log_metrics(values, int(row["epoch"]))

    @rank_zero_only
    def set_status(self, status: str, error: str | None = None) -> None:
        self.experiment.set_tag(self.run_id, "status", status)
        if error:
            self.experiment.set_tag(self.run_id, "error", error[:5000])

    @rank_zero_only
    def attach_run_files(self, run_dir: Path, checkpoints: bool) -> None:
        for name in ("config.yaml", "summary.json", "metrics.csv", "status.json"):
            if (run_dir / name).is_file():
                self.experiment.log_artifact(self.run_id, str(run_dir / name))
        if checkpoints and (run_dir / "checkpoints").is_dir():
            self.experiment.log_artifacts(self.run_id, str(run_dir / "checkpoints"), "checkpoints")


def build_mlflow_logger(cfg: DictConfig, run_dir: Path) -> RunMLFlowLogger:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError(f"logger=mlflow needs MLflow, which is not installed here: {INSTALL_HINT}. "
                        f"Or log without it: logger=tensorboard (or csv, none).") from None
    lg = cfg.logger
    uri, artifacts = tracking_store(cfg)
    run_id_file = Path(run_dir) / RUN_ID_FILE
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    logger = RunMLFlowLogger(experiment_name=str(lg.get("experiment_name") or "aprelu-exp"),
                             run_name=Path(run_dir).name, tracking_uri=uri, run_id=run_id,
                             artifact_location=artifacts, log_model=False,
                             tags=None if run_id else run_tags(cfg, run_dir))
    logger.log_checkpoint_files = bool(lg.get("log_checkpoints", False))
    return logger


def run_tags(cfg: DictConfig, run_dir: Path) -> dict[str, str]:
    rec = cfg.get("record") or {}
    tags = {"record": rec.get("name"), "parent": rec.get("parent"), "provenance": rec.get("provenance"),
            "run_dir": str(Path(run_dir).resolve()), "status": "running"}
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            tags["sweep"] = Path(hc.sweep.dir).name
            tags["sweep_dir"] = str(Path(hc.sweep.dir).resolve())
    except ValueError:  # not inside a Hydra app (tests, the bench)
        pass
    return {k: str(v) for k, v in tags.items() if v is not None}


@rank_zero_only
def start_run(logger: RunMLFlowLogger, cfg: DictConfig, run_dir: Path, facts: dict) -> None:
    """Once the run's facts are known: keep the run id beside the run, log params and the tags
    that only exist once the data and the switches are resolved."""
    (Path(run_dir) / RUN_ID_FILE).write_text(logger.run_id + "\n")
    client, run_id = logger.experiment, logger.run_id
    existing = set(client.get_run(run_id).data.params)
    params = {k: v for k, v in config_params(cfg).items() if k not in existing}
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])
    tags = {"schedule": facts["schedule"]["kind"], "precision": facts["perf"]["precision"],
            "status": "running"}
    commit = facts.get("git_commit")
    if commit:
        tags["git_commit"] = commit
    for name, digest in (facts.get("data_digests") or {}).items():
        tags[f"data_digest.{name}"] = digest
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def attach_sweep_report(cfg: DictConfig, sweep_dir: Path, files: list[str]) -> None:
    """A run of its own for the sweep (tagged like its jobs) holding the sweep report's files."""
    from mlflow import MlflowClient

    lg = cfg.logger
    uri, artifacts = tracking_store(cfg)
    client = MlflowClient(uri)
    name = str(lg.get("experiment_name") or "aprelu-exp")
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifacts)
    run = client.create_run(exp_id, run_name=f"sweep {sweep_dir.name}",
                            tags={"sweep": sweep_dir.name, "sweep_dir": str(sweep_dir.resolve()),
                                  "kind": "sweep report"})
    for f in files:
        if (sweep_dir / f).is_file():
            client.log_artifact(run.info.run_id, str(sweep_dir / f))
    client.set_terminated(run.info.run_id)
