"""MLflow tracking for runs: Lightning's MLFlowLogger, extended with what a run directory knows.

Default store: an sqlite file beside the runs (`<run_root>/mlflow.db`, artifacts in
`<run_root>/mlartifacts/`), so no server is needed; `logger.mlflow.tracking_uri=http://host:5000` sends
the runs to a team's server instead. Per run: the resolved config as dotted params, every
metrics.csv column per epoch with the epoch as the step, tags (record, lineage, schedule, precision,
commit, data digests, run directory, status kept current), and config.yaml, summary.json and
metrics.csv as artifacts (checkpoints when `logger.mlflow.log_checkpoints=true`). A resumed run continues
the same MLflow run: its id is kept in the run directory.
"""
from __future__ import annotations

import json
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import CONFIG_FILE, METRICS_FILE, STATUS_FILE, SUMMARY_FILE, read_status
from aprelu_exp.settings import flatten

RUN_ID_FILE = "mlflow_run_id"
INSTALL_HINT = "pip install mlflow   (or, in this project: pip install -e '.[mlflow]')"


def tracking_store(tracking_uri: str | None, run_root: str | Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment). Default: an sqlite file beside the
    runs. An sqlite store keeps its artifacts beside its file (MLflow would put them in ./mlruns of
    whatever directory the run started in); a server decides for itself."""
    uri = tracking_uri
    if not uri:
        root = Path(run_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'mlflow.db'}"
    uri = str(uri)
    if uri.startswith("sqlite:///"):
        return uri, (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return uri, None


def stage_text(stages) -> str:
    """`1x32, 1x32/2, 1x64/2`: blocks x channels, /2 where the stage downsamples."""
    return ", ".join(f"{s['blocks']}x{s['channels']}{'/2' if s['downsample'] else ''}" for s in stages)


def config_params(config: dict) -> dict[str, str]:
    """The resolved config as dotted keys; a list is one readable value (MLflow keys allow no [])."""
    params = {}
    for key, value in flatten(config, index_lists=False).items():
        if key == "model.stages":
            params[key] = stage_text(value)
        elif isinstance(value, (list, dict)):
            params[key] = json.dumps(value)
        else:
            params[key] = "null" if value is None else str(value)
    return params


class RunMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger for one run directory (`save_dir`, given to every logger). Its own
    overrides of Lightning's logger hooks do what a run needs:

    - log_hyperparams (the run's config and facts, at fit start): the run id kept beside the run,
      the config as params, tags for the record, schedule, precision, commit and data digests;
    - log_metrics: the epoch is the step, so every metric has one point per epoch, as in metrics.csv;
    - finalize (after the run's own files are written): its status tag and files as artifacts.
    """

    def __init__(self, save_dir: str, tracking_uri: str | None = None, experiment_name: str = "aprelu-exp",
                 log_checkpoints: bool = False, run_root: str = "runs"):
        try:
            import mlflow  # noqa: F401  (deferred: mlflow is an optional dependency)
        except ImportError:
            raise UserError(f"logger=mlflow needs MLflow, which is not installed here: {INSTALL_HINT}. "
                            f"Or log without it: logger=tensorboard (or csv, none).") from None
        self.run_dir = Path(save_dir)
        self.log_checkpoint_files = bool(log_checkpoints)
        uri, artifacts = tracking_store(tracking_uri, run_root)
        run_id_file = self.run_dir / RUN_ID_FILE
        run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
        super().__init__(experiment_name=str(experiment_name or "aprelu-exp"), run_name=self.run_dir.name,
                         tracking_uri=uri, run_id=run_id, artifact_location=artifacts, log_model=False)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        if not (isinstance(params, dict) and "config" in params and "run" in params):
            return super().log_hyperparams(params)  # Lightning's own call (the module has no hparams)
        config, facts = params["config"], params["run"]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / RUN_ID_FILE).write_text(self.run_id + "\n")
        client, run_id = self.experiment, self.run_id
        existing = set(client.get_run(run_id).data.params)
        # deferred: mlflow is an optional dependency
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in config_params(config).items() if k not in existing]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i:i + 100])
        tags = {**run_tags(config, self.run_dir), "schedule": facts["schedule"]["kind"],
                "precision": facts["perf"]["precision"]}
        if facts.get("git_commit"):
            tags["git_commit"] = facts["git_commit"]
        for name, digest in (facts.get("data_digests") or {}).items():
            tags[f"data_digest.{name}"] = digest
        for k, v in tags.items():
            client.set_tag(run_id, k, str(v))

    @rank_zero_only
    def log_metrics(self, metrics, step=None):
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        super().log_metrics(metrics, int(epoch) if epoch is not None else step)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self._initialized:
            state = read_status(self.run_dir)
            self.experiment.set_tag(self.run_id, "status", state.get("status", "unknown"))
            if state.get("error"):
                self.experiment.set_tag(self.run_id, "error", str(state["error"])[:5000])
            for name in (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE, STATUS_FILE):
                if (self.run_dir / name).is_file():
                    self.experiment.log_artifact(self.run_id, str(self.run_dir / name))
            if self.log_checkpoint_files and (self.run_dir / "checkpoints").is_dir():
                self.experiment.log_artifacts(self.run_id, str(self.run_dir / "checkpoints"), "checkpoints")
        super().finalize(status)


def run_tags(config: dict, run_dir: Path) -> dict[str, str]:
    rec = config.get("record") or {}
    tags = {"record": rec.get("name"), "parent": rec.get("parent"), "provenance": rec.get("provenance"),
            "run_dir": str(Path(run_dir).resolve()), "status": "running"}
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep_dir = Path(HydraConfig.get().sweep.dir)
        tags["sweep"] = sweep_dir.name
        tags["sweep_dir"] = str(sweep_dir.resolve())
    return {k: str(v) for k, v in tags.items() if v is not None}


def attach_sweep_report(cfg: DictConfig, sweep_dir: Path, files: list[str]) -> None:
    """A run of its own for the sweep (tagged like its jobs) holding the sweep report's files."""
    # deferred: mlflow is an optional dependency
    from mlflow import MlflowClient

    lg = cfg.logger.mlflow
    uri, artifacts = tracking_store(lg.get("tracking_uri"), cfg.run_root)
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
