"""The objects one run trains with, built from its config: the network, the data, the Lightning
module. Bad input becomes a UserError naming the key and the fix, before any run directory exists;
`preflight` runs every such check without the data (the search probes its space with it)."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from aprelu_exp.data.augment import KerasAugmentConfig
from aprelu_exp.data.datamodule import CIFAR10DataModule
from aprelu_exp.errors import UserError
from aprelu_exp.model import NetworkConfigError, build_network, check_network_config
from aprelu_exp.training.module import APReLUClassifier
from aprelu_exp.training.precision import check_accelerator, eval_batch_size, perf_switches
from aprelu_exp.training.schedule import SchedulePlan, plan_schedule


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


def build_module(cfg: DictConfig, net: torch.nn.Module, plan: SchedulePlan,
                 switches: dict | None = None) -> APReLUClassifier:
    o = cfg.optim
    switches = switches or perf_switches(cfg)
    return APReLUClassifier(net, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, l2=o.l2,
                            milestones=plan.milestones, gamma=cfg.schedule.gamma,
                            compile_net=switches["compile"], channels_last=switches["channels_last"])


def preflight(cfg: DictConfig) -> SchedulePlan:
    """Every check of a config that needs neither the data nor a run directory. Raises UserError
    naming the key and the fix."""
    if cfg.seed is None:
        raise UserError("seed is null; give an integer (seed=0 is a valid seed).")
    plan = plan_schedule(cfg)
    check_accelerator(cfg)
    perf_switches(cfg)
    build_net(cfg, check_only=True)
    build_datamodule(cfg)
    return plan
