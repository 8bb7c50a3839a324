"""The composition root: config -> network, data, module, loggers, callbacks, trainer -> fit, inside
the run directory that `runs.lifecycle` keeps. The CLI and the tests call `train`."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

from aprelu_exp import parts
from aprelu_exp.data.cifar10 import DataError
from aprelu_exp.errors import UserError
from aprelu_exp.runs import lifecycle
from aprelu_exp.runs.callbacks import EpochRecorder
from aprelu_exp.runs.checkpoint import AtomicCheckpointIO, SplitStamp, network_signature
from aprelu_exp.console.noise import quiet_third_party
from aprelu_exp.console.progress import run_progress
from aprelu_exp.console.first_screen import FirstScreen, quiet_lightning_start
from aprelu_exp.runs.resume import resume_checkpoint
from aprelu_exp.training.build import build_datamodule, build_module, build_net, preflight
from aprelu_exp.training.compile_cache import repair_compile_cache
from aprelu_exp.training.evaluation import TestSetEvaluation
from aprelu_exp.training.precision import perf_switches
from aprelu_exp.training.precision_probe import probe


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    """The `logger` group's Lightning loggers, each writing into the run directory."""
    return parts.build_entries("logger", cfg.get("logger"), save_dir=str(run_dir))


def train(cfg: DictConfig, run_dir: Path, arrays=None) -> dict:
    """Validate, then train one run into ``run_dir``. Raises UserError for bad input, before
    anything but Hydra's own files exists in ``run_dir``."""
    run_dir = Path(run_dir)
    quiet_third_party()  # again here: a joblib worker's job never ran the command's start-up
    plan = preflight(cfg)
    torch.set_float32_matmul_precision(str(cfg.perf.matmul_precision))
    # Seed before the network exists: its initial weights are part of what `seed` fixes.
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    net = build_net(cfg)
    dm = build_datamodule(cfg, arrays)
    signature = network_signature(cfg.model)
    resume_ckpt = resume_epoch = None
    if cfg.get("resume"):
        resume_ckpt, resume_epoch = resume_checkpoint(Path(cfg.resume), signature, net.state_dict(),
                                                      str(cfg.get("resume_from") or "last"), dm.split())
    try:
        dm.prepare()
    except DataError as exc:
        raise UserError(str(exc)) from None
    recorder = EpochRecorder(run_dir)
    # Built before the run directory is taken: a callback that cannot start (a search's storage
    # out of reach) is bad input.
    configured = parts.build_entries("callbacks", cfg.get("callbacks"))

    with lifecycle.run_directory(cfg, run_dir) as clock:
        perf = perf_switches(cfg, dm.num_train, plan.max_epochs, probe=probe)
        module = build_module(cfg, net, perf)
        module.network_signature = signature
        facts = {"record": OmegaConf.to_container(cfg.record), "schedule": plan.as_dict(),
                 "seed": int(cfg.seed), "run_dir": str(run_dir), "num_train": dm.num_train,
                 "num_test": len(dm.test_y), "split": dm.split(), "num_val": len(dm.val_y),
                 "data_digests": dm.digests,
                 "parameters": sum(p.numel() for p in net.parameters() if p.requires_grad), "perf": perf}
        if cfg.trial.get("number") is not None:
            facts["trial"] = {k: cfg.trial[k] for k in ("study", "storage", "number", "metric")}
        record = lifecycle.RunRecord(cfg, run_dir, facts, recorder, clock)
        checkpoints = ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="best", monitor=cfg.checkpoint.monitor, mode="max",
            save_top_k=1, save_last=True, enable_version_counter=False,
            # After EpochRecorder's row (checkpoint callbacks run last): a checkpoint never covers an
            # epoch whose metrics row is missing.
            save_on_train_epoch_end=True)
        # The configured callbacks (a search's trial reporter) read the row the recorder has just written.
        # The test set's metrics land in `facts` before RunRecord writes them into summary.json.
        callbacks = [lifecycle.stop_on_signal(run_dir), FirstScreen(facts, plan.as_dict().get("gamma", 1.0)), recorder,
                     *configured, TestSetEvaluation(dm, facts, recorder), record, SplitStamp(dm.split()), checkpoints]
        progress = None
        if cfg.trainer.get("enable_progress_bar", True):
            progress = run_progress(plan.max_epochs, recorder, cfg.get("progress_refresh_rate", 10))
            callbacks.append(progress)
        quiet_lightning_start()
        trainer = parts.build("trainer", cfg.trainer, max_epochs=plan.max_epochs, callbacks=callbacks,
                              logger=build_loggers(cfg, run_dir) or False, default_root_dir=str(run_dir),
                              plugins=[AtomicCheckpointIO()], precision=perf["precision"],
                              # Off where stdout is no terminal: EpochLines prints one line per epoch.
                              enable_progress_bar=isinstance(progress, TQDMProgressBar),
                              use_distributed_sampler=False)
        # A fresh start keeps no row: a requeued SLURM job whose first attempt was stopped between
        # its first metrics row and that epoch's checkpoint trains epoch 1 again.
        recorder.load_existing(up_to_epoch=0 if resume_ckpt is None else resume_epoch + 1)  # ckpt epochs count from 0
        if perf["compile"]:
            repair_compile_cache()
        lifecycle.fit(trainer, module, dm, resume_ckpt)
        return record.summary
