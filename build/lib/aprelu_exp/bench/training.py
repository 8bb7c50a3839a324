"""The training contenders: the configured network (compiled where the config compiles), the same
network eager, and the plain-ReLU network eager, each as a bare SGD step on one fixed batch."""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from aprelu_exp.bench.timing import sync
from aprelu_exp.training.build import build_module, build_net
from aprelu_exp.training.precision import perf_switches
from aprelu_exp.training.schedule import plan_schedule

FULL_TRAIN_IMAGES = 50_000


def full_run_switches(cfg, num_train: int = FULL_TRAIN_IMAGES) -> dict:
    """The perf switches (auto resolved) of a full-length run of this config on num_train images."""
    return perf_switches(cfg, num_train, plan_schedule(cfg).max_epochs)


def precision_context(device, precision: str):
    """What Lightning wraps the training and validation steps in for this precision."""
    if precision.startswith("bf16"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


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


def training_step_fn(module, batch, device, ctx) -> tuple:
    """A plain optimizer step of `module` on one fixed batch under `ctx`, after warm-up; returns
    (step, warm-up seconds). The loss is taken in fp32, as the training module does."""
    x, y = batch
    module.to(device).train()
    opt = module.configure_optimizers()["optimizer"]

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx():
            loss = F.cross_entropy(module(x).float(), y)
        loss.backward()
        module.on_before_optimizer_step(opt)  # the Keras L2 gradient
        opt.step()

    t = time.perf_counter()
    for _ in range(3):  # warm-up: compilation, allocator, oneDNN primitive caches
        step()
    sync(device)
    return step, time.perf_counter() - t
