"""The objects one run trains with, each built from its config node's `_target_` (aprelu_exp.parts):
the network, the augmentation, the data module, the optimizer and schedule inside the Lightning
module. Bad input becomes a UserError naming the key and the fix, before any run directory exists;
`preflight` runs every such check without the data (the search probes its space with it)."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from aprelu_exp import parts
from aprelu_exp.data.datamodule import CIFAR10DataModule
from aprelu_exp.errors import UserError
from aprelu_exp.model import NetworkConfigError
from aprelu_exp.training.module import APReLUClassifier
from aprelu_exp.training.precision import check_accelerator, eval_batch_size, perf_switches
from aprelu_exp.training.schedule import SchedulePlan, plan_schedule, scales_to_budget


def _settings(node: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in parts.INSTANTIATE_KEYS}


def build_net(cfg: DictConfig, check_only: bool = False) -> torch.nn.Module | None:
    """The network (or, with check_only, just the checks it would fail: the target's own `check`
    where it has one), bad input as UserError."""
    try:
        if check_only:
            target = parts.check_node("model", cfg.model)
            if hasattr(target, "check"):
                target.check(**_settings(cfg.model))
            return None
        return parts.build("model", cfg.model)
    except NetworkConfigError as exc:
        raise UserError(str(exc)) from None


def build_augment(cfg: DictConfig):
    """The `augment` part, or None where the option builds nothing (augment=none)."""
    return parts.build("augment", cfg.augment) if "_target_" in cfg.augment else None


def build_datamodule(cfg: DictConfig, arrays=None) -> CIFAR10DataModule:
    return parts.build("data", cfg.data, seed=int(cfg.seed), augment=build_augment(cfg),
                       eval_batch_size=eval_batch_size(cfg), arrays=arrays)


def _schedule_given(cfg: DictConfig) -> dict:
    if cfg.get("budget") is None:
        return {}
    target = parts.check_node("schedule", cfg.schedule, ("optimizer", "budget"))
    if not scales_to_budget(target):
        raise UserError(f"budget={cfg.budget} compresses a schedule into N epochs, and schedule "
                        f"({cfg.schedule._target_}) takes no budget; use trainer.max_epochs=N, or a "
                        f"schedule that scales (schedule=step, schedule=cosine).")
    return {"budget": int(cfg.budget)}


def build_optimization(cfg: DictConfig) -> tuple:
    """(optimizer factory, schedule factory) from the `optim` and `schedule` nodes (`_partial_`)."""
    optimizer = parts.build("optim", cfg.optim)
    scheduler = parts.build("schedule", cfg.schedule, **_schedule_given(cfg)) if "_target_" in cfg.schedule else None
    return optimizer, scheduler


def check_optimization(cfg: DictConfig) -> SchedulePlan:
    """Build the optimizer and schedule on one throw-away parameter: every key and value they would
    refuse is refused now, and the schedule's shape (its milestones) is known."""
    optimizer, scheduler = build_optimization(cfg)
    try:
        opt = optimizer([torch.nn.Parameter(torch.zeros(1))])
        sched = scheduler(opt) if scheduler is not None else None
    except (TypeError, ValueError) as exc:
        raise UserError(f"optim/schedule: {exc}") from None
    return plan_schedule(cfg, sched)


def build_module(cfg: DictConfig, net: torch.nn.Module, switches: dict | None = None) -> APReLUClassifier:
    switches = switches or perf_switches(cfg)
    optimizer, scheduler = build_optimization(cfg)
    return APReLUClassifier(net, optimizer, scheduler, compile_net=switches["compile"],
                            channels_last=switches["channels_last"],
                            compile_mode=switches.get("compile_mode", "default"))


def preflight(cfg: DictConfig) -> SchedulePlan:
    """Every check of a config that needs neither the data nor a run directory. Raises UserError
    naming the key and the fix."""
    if cfg.seed is None:
        raise UserError("seed is null; give an integer (seed=0 is a valid seed).")
    check_accelerator(cfg)
    plan = check_optimization(cfg)
    perf_switches(cfg)
    build_net(cfg, check_only=True)
    build_datamodule(cfg)
    parts.check_node("trainer", cfg.trainer, ("callbacks", "logger", "plugins", "default_root_dir"))
    for group in ("logger", "callbacks"):
        for name, spec in (cfg.get(group) or {}).items():
            if isinstance(spec, DictConfig) and "_target_" in spec:
                parts.check_node(f"{group}.{name}", spec, ("save_dir",) if group == "logger" else ())
    return plan
