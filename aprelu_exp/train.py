"""The train function the CLI and the tests call: config -> built objects -> trainer.fit -> run dir."""
from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from aprelu_exp.data.augment import KerasAugmentConfig
from aprelu_exp.data.cifar10 import DataError
from aprelu_exp.data.datamodule import CIFAR10DataModule
from aprelu_exp.errors import UserError
from aprelu_exp.model import NetworkConfigError, build_network, check_network_config
from aprelu_exp.runs.callbacks import EpochRecorder
from aprelu_exp.runs.checkpoint import AtomicCheckpointIO, DamagedCheckpoint, check_compatible, network_signature
from aprelu_exp.runs.interrupts import RunInterrupted, StopOnSignal, signal_name
from aprelu_exp.runs.lock import RunLock
from aprelu_exp.runs.progress import run_progress
from aprelu_exp.runs.rundir import (CONFIG_FILE, SUMMARY_FILE, Stopwatch, environment, git_commit,
                                    launched_as_global_zero, write_json_atomic, write_status)
from aprelu_exp.runs.summary import metrics_summary
from aprelu_exp.search.trial_link import TrialReporter, trial_link
from aprelu_exp.training.module import APReLUClassifier
from aprelu_exp.training.precision import resolve_precision, warn_once
from aprelu_exp.training.schedule import scale_milestones, step_milestones

log = logging.getLogger(__name__)


@dataclass
class SchedulePlan:
    full_epochs: int  # the record's schedule length
    max_epochs: int  # what this run trains
    milestones: list[int]
    budget: int | None

    def as_dict(self) -> dict:
        return {
            "full_epochs": self.full_epochs,
            "max_epochs": self.max_epochs,
            "budget": self.budget,
            "milestones": self.milestones,
            "kind": "budget" if self.budget else (
                "full" if self.max_epochs >= self.full_epochs else "truncated"),
        }


def plan_schedule(cfg: DictConfig) -> SchedulePlan:
    s = cfg.schedule
    full = int(s.epochs)
    milestones = step_milestones(full, int(s.every))
    budget = cfg.get("budget")
    if budget is not None:
        if int(budget) < 1:
            raise UserError(f"budget={budget} is below one epoch; give budget=N with N >= 1 "
                            f"(the record's full schedule is {full} epochs).")
        return SchedulePlan(full, int(budget), scale_milestones(milestones, full, int(budget)), int(budget))
    max_epochs = int(cfg.trainer.max_epochs)
    if max_epochs < 1:
        raise UserError(f"trainer.max_epochs={max_epochs}; train at least one epoch.")
    return SchedulePlan(full, max_epochs, milestones, None)


def build_net(cfg: DictConfig, check_only: bool = False) -> torch.nn.Module | None:
    """The network (or, with check_only, just the checks it would fail), bad input as UserError."""
    try:
        if check_only:
            return check_network_config(cfg.model)
        return build_network(cfg.model)
    except NetworkConfigError as exc:
        raise UserError(str(exc)) from None


def augment_config(cfg: DictConfig) -> KerasAugmentConfig | None:
    """The `augment` group as the augmentation's own config (None for augment=none)."""
    if cfg.augment.name == "none":
        return None
    if cfg.augment.name != "keras":
        raise UserError(f"augment={cfg.augment.name!r} is not known; use augment=keras or augment=none.")
    fields = KerasAugmentConfig.__dataclass_fields__
    try:
        return KerasAugmentConfig(**{k: v for k, v in cfg.augment.items() if k in fields})
    except ValueError as exc:
        raise UserError(str(exc)) from None


def build_datamodule(cfg: DictConfig, arrays=None) -> CIFAR10DataModule:
    d = cfg.data
    aug = augment_config(cfg)
    for key in ("train_subset", "test_subset"):
        if d.get(key) is not None and int(d[key]) < 1:
            raise UserError(f"data.{key}={d[key]} must be a positive number of images, or null for all.")
    try:
        return CIFAR10DataModule(
            root=d.root, download=d.download, verify_digests=d.verify_digests,
            train_subset=d.train_subset, test_subset=d.test_subset, batch_size=d.batch_size,
            eval_batch_size=eval_batch_size(cfg), article_eval_batch_size=d.article_eval_batch_size,
            centring=d.centring, device_resident=d.device_resident, seed=int(cfg.seed),
            augment=aug, arrays=arrays)
    except ValueError as exc:
        raise UserError(str(exc)) from None


# Standard validation at batch 1000 keeps a GPU busy; on a CPU the same images go through ~1.5x
# faster at batch 100, whose activations fit in the caches (bench: 1,580 vs 1,016 images/s compiled).
EVAL_BATCH_AUTO = {"cuda": 1000, "cpu": 100}


def eval_batch_size(cfg: DictConfig) -> int:
    """`data.eval_batch_size`, with auto resolved for the accelerator this run trains on."""
    value = cfg.data.eval_batch_size
    if str(value).lower() == "auto":
        return EVAL_BATCH_AUTO["cuda" if _on_cuda(cfg) else "cpu"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"data.eval_batch_size={value!r}: use auto or a positive number of images.")
    return value


def _on_cuda(cfg: DictConfig) -> bool:
    accel = str(cfg.trainer.get("accelerator", "auto"))
    return torch.cuda.is_available() and accel in ("auto", "gpu", "cuda")


def _switch(value: str, key: str, auto: bool) -> bool:
    value = str(value).lower()
    if value not in ("auto", "true", "false"):
        raise UserError(f"{key}={value!r}: use auto, true or false.")
    return auto if value == "auto" else value == "true"


# Compilation costs about a minute on a cold cache (seconds on a warm one) and speeds the
# APReLU network's CPU training up by about a third: it pays once a run trains a full epoch.
COMPILE_PAYS_AFTER_IMAGES = 50_000


def perf_switches(cfg: DictConfig, num_train: int | None = None, max_epochs: int | None = None) -> dict:
    """Resolve the `perf` group's auto values for the accelerator and size of this run, and the
    precision that will actually run (a bf16 request on hardware without bf16 runs fp32)."""
    cuda = _on_cuda(cfg)
    big = num_train is not None and max_epochs is not None and num_train * max_epochs >= COMPILE_PAYS_AFTER_IMAGES
    try:
        precision, note = resolve_precision(cfg.perf.precision, cfg.trainer.precision, "cuda" if cuda else "cpu")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if note:
        warn_once(note)
    return {
        "compile": _switch(cfg.perf.compile, "perf.compile", auto=cuda or big),
        "channels_last": _switch(cfg.perf.channels_last, "perf.channels_last", auto=cuda),
        "eval_batch_size": eval_batch_size(cfg),
        "precision": precision,
        "precision_requested": str(cfg.perf.precision),
    }


def build_module(cfg: DictConfig, net: torch.nn.Module, plan: SchedulePlan,
                 switches: dict | None = None) -> APReLUClassifier:
    o = cfg.optim
    switches = switches or perf_switches(cfg)
    return APReLUClassifier(net, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, l2=o.l2,
                            milestones=plan.milestones, gamma=cfg.schedule.gamma,
                            compile_net=switches["compile"], channels_last=switches["channels_last"])


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers = []
    for name in cfg.logger.backends:
        if name == "tensorboard":
            from pytorch_lightning.loggers import TensorBoardLogger
            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
        elif name == "csv":
            from pytorch_lightning.loggers import CSVLogger
            loggers.append(CSVLogger(save_dir=str(run_dir), name="lightning_csv", version=""))
        elif name == "mlflow":
            from aprelu_exp.runs.mlflow_logger import build_mlflow_logger
            loggers.append(build_mlflow_logger(cfg, run_dir))
        else:
            raise UserError(f"logger backend {name!r} is not known; use tensorboard, csv and/or mlflow.")
    return loggers


def preflight(cfg: DictConfig) -> SchedulePlan:
    """Every check of a config that needs neither the data nor a run directory (the search sweeper
    probes its space with it before any trial runs). Raises UserError naming the key and the fix."""
    if cfg.seed is None:
        raise UserError("seed is null; give an integer (seed=0 is a valid seed).")
    plan = plan_schedule(cfg)
    perf_switches(cfg)
    build_net(cfg, check_only=True)
    build_datamodule(cfg)
    trial_link(cfg)
    return plan


def train(cfg: DictConfig, run_dir: Path, arrays=None) -> dict:
    """Validate, then train one run into ``run_dir``. Raises UserError for bad input, before
    anything but Hydra's own files exists in ``run_dir``."""
    run_dir = Path(run_dir)
    plan = preflight(cfg)
    link = trial_link(cfg)
    torch.set_float32_matmul_precision(str(cfg.perf.matmul_precision))
    # Seed before the network exists: its initial weights are part of what `seed` fixes.
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    net = build_net(cfg)
    dm = build_datamodule(cfg, arrays)
    resume_ckpt = resume_epoch = None
    if cfg.get("resume"):
        resume_ckpt, resume_epoch = _resume_checkpoint(Path(cfg.resume), network_signature(cfg.model),
                                                       str(cfg.get("resume_from") or "last"))
    try:
        dm.prepare()
    except DataError as exc:
        raise UserError(str(exc)) from None
    recorder = EpochRecorder(run_dir)
    # Opened before the run directory exists: a search's storage that cannot be reached is bad input.
    reporter = TrialReporter(link, recorder) if link else None

    clock = Stopwatch()
    lock = RunLock(run_dir)
    if launched_as_global_zero():
        lock.acquire()  # refuses (UserError) while another live process trains in this directory
        run_dir.mkdir(parents=True, exist_ok=True)
        write_status(run_dir, "running")
        (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    try:
        return _fit(cfg, run_dir, net, dm, plan, clock, resume_ckpt, resume_epoch, recorder, reporter)
    finally:
        lock.release()


def _fit(cfg, run_dir, net, dm, plan, clock, resume_ckpt, resume_epoch, recorder, reporter) -> dict:
    perf = perf_switches(cfg, dm.num_train, plan.max_epochs)
    module = build_module(cfg, net, plan, perf)
    module.network_signature = network_signature(cfg.model)

    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=cfg.checkpoint.monitor,
                           mode="max", save_top_k=1, save_last=True, enable_version_counter=False,
                           # After EpochRecorder's row (checkpoint callbacks run last): a
                           # checkpoint never covers an epoch whose metrics row is missing.
                           save_on_train_epoch_end=True)
    stopper = StopOnSignal(on_hard_stop=lambda signum: write_status(
        run_dir, "interrupted", f"{signal_name(signum)} twice: stopped at once") if launched_as_global_zero() else None)
    # The reporter reads the row the recorder has just written (callbacks run in this order).
    callbacks = [stopper, recorder, *([reporter] if reporter else []), ckpt]
    progress = None
    if cfg.trainer.get("enable_progress_bar", True):
        progress = run_progress(plan.max_epochs, recorder, cfg.get("progress_refresh_rate", 10))
        callbacks.append(progress)
    trainer = instantiate(cfg.trainer, max_epochs=plan.max_epochs, callbacks=callbacks,
                          logger=build_loggers(cfg, run_dir) or False,
                          default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()],
                          precision=perf["precision"],
                          # Off where stdout is no terminal: EpochLines prints one line per epoch.
                          enable_progress_bar=isinstance(progress, TQDMProgressBar),
                          use_distributed_sampler=False)
    if resume_ckpt is not None:
        recorder.load_existing(up_to_epoch=resume_epoch + 1)
    base = {"record": OmegaConf.to_container(cfg.record), "schedule": plan.as_dict(),
            "seed": int(cfg.seed), "run_dir": str(run_dir), "num_train": dm.num_train,
            "num_test": len(dm.test_y), "data_digests": dm.digests,
            "parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
            "perf": perf}
    if reporter is not None:
        base["trial"] = {"study": reporter.link.study, "storage": reporter.link.storage,
                         "number": reporter.link.number, "metric": reporter.link.metric}
    stopper.install()
    try:
        for lg in trainer.loggers:
            if hasattr(lg, "attach_run_files"):  # MLflow: params and the tags known only now
                from aprelu_exp.runs.mlflow_logger import start_run
                start_run(lg, cfg, run_dir, {**base, "git_commit": git_commit()})
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume_ckpt) if resume_ckpt else None)
    except (RunInterrupted, SIGTERMException) as exc:
        # Lightning turns SIGTERM into SIGTERMException at a batch boundary; Ctrl-C reaches it as
        # RunInterrupted (never KeyboardInterrupt, which Lightning would turn into exit status 1).
        signum = exc.signum if isinstance(exc, RunInterrupted) else (stopper.received or signal.SIGTERM)
        kept = recorder.rows[-1]["epoch"] if recorder.rows else None
        note = (f"{signal_name(signum)} during epoch {trainer.current_epoch}; checkpoints/last.ckpt holds "
                + (f"epoch {kept}, the last completed" if kept is not None else "no epoch yet"))
        _finish(run_dir, trainer, recorder, base, clock, "interrupted", note)
        raise RunInterrupted(signum) from None
    except KeyboardInterrupt:
        _finish(run_dir, trainer, recorder, base, clock, "interrupted", "KeyboardInterrupt")
        raise
    except BaseException as exc:
        _finish(run_dir, trainer, recorder, base, clock, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        stopper.restore()
    if reporter is not None and reporter.pruned_note:
        return _finish(run_dir, trainer, recorder, base, clock, "pruned", reporter.pruned_note)
    state = "interrupted" if trainer.interrupted else "finished"
    return _finish(run_dir, trainer, recorder, base, clock, state, None)


def _finish(run_dir, trainer, recorder, base, clock, state, error) -> dict:
    if not trainer.is_global_zero:
        return {}
    summary = {"status": state, "error": error, **base, **metrics_summary(recorder.rows),
               "wall_time_s": round(clock.elapsed(), 3),
               "environment": environment(trainer.strategy.root_device)}
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    write_status(run_dir, state, error)
    for lg in trainer.loggers:
        if hasattr(lg, "attach_run_files"):
            lg.set_status(state, error)
            lg.attach_run_files(run_dir, checkpoints=bool(getattr(lg, "log_checkpoint_files", False)))
    return summary


RESUME_FROM = ("last", "best")


def _resume_checkpoint(run_dir: Path, signature: dict, which: str = "last") -> tuple[Path, int]:
    if which not in RESUME_FROM:
        raise UserError(f"resume_from={which!r}: use last (the last completed epoch) or best (best.ckpt).")
    path = run_dir / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        raise UserError(f"resume={run_dir}: no checkpoints/{which}.ckpt there. Give the directory of "
                        f"a run that finished at least one epoch.")
    try:
        return path, check_compatible(path, signature)
    except DamagedCheckpoint as exc:
        best = run_dir / "checkpoints" / "best.ckpt"
        offer = (f" checkpoints/best.ckpt is there: resume from it with "
                 f"`python -m aprelu_exp resume={run_dir} resume_from=best` (later epochs are trained again),"
                 if which == "last" and best.is_file() else "")
        raise UserError(f"{exc}.{offer} or start a new run.") from None


