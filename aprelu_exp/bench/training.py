"""The training contenders: the configured network (compiled where the config compiles), the same
network eager, and the plain-ReLU network eager, each as a bare SGD step on one fixed batch."""
from __future__ import annotations

from omegaconf import OmegaConf

from aprelu_exp.training.build import build_module, build_net
from aprelu_exp.training.precision import perf_switches
from aprelu_exp.training.precision_probe import probe
from aprelu_exp.training.schedule import plan_schedule

FULL_TRAIN_IMAGES = 50_000


def full_run_switches(cfg, num_train: int = FULL_TRAIN_IMAGES, probe=None) -> dict:
    """The perf switches (auto resolved) of a full-length run of this config on num_train images."""
    return perf_switches(cfg, num_train, plan_schedule(cfg).max_epochs, probe=probe)


def fast_choice(cfg) -> dict:
    """What perf=fast picks for this config here (its cached answer, else a probe): the bench
    shows it beside its own measurement."""
    c = cfg.copy()
    OmegaConf.set_struct(c, False)
    c.perf.precision = "fast"
    return full_run_switches(c, probe=probe)["fast"]


def build(cfg, activation=None, compile_net=None, channels_last=None):
    """The LightningModule of `cfg`, optionally with another activation or fast-path switches."""
    c = cfg.copy()
    OmegaConf.set_struct(c, False)
    if activation:
        c.model.activation = activation
    if compile_net is not None:
        c.perf.compile = str(compile_net).lower()
    if channels_last is not None:
        c.perf.channels_last = str(channels_last).lower()
    switches = full_run_switches(c)
    return build_module(c, build_net(c), switches), switches
