"""The LightningModule: cross-entropy, the Keras L2 penalty, the configured optimizer and schedule, two
validation modes."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from aprelu_exp import metrics as m
from aprelu_exp.model import decayed_parameters
from aprelu_exp.runs.checkpoint import SIGNATURE_KEY

STANDARD, ARTICLE = 0, 1  # validation dataloader indices, see CIFAR10DataModule.val_dataloader


@contextmanager
def batchnorm_batch_statistics(model: nn.Module):
    """Evaluate as Keras does after ``K.set_learning_phase(1)``: every BatchNorm normalises with
    the statistics of the current batch, and its running averages are left untouched."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved.append((m, m.training, m.track_running_stats))
            m.training, m.track_running_stats = True, False
    try:
        yield
    finally:
        for m, training, track in saved:
            m.training, m.track_running_stats = training, track


class APReLUClassifier(pl.LightningModule):
    """Cross-entropy training of ``net`` with the optimizer and schedule the config built
    (``optimizer(params)``, ``scheduler(optimizer)``), the network's Keras L2 penalty, and the two
    validation modes."""

    def __init__(self, net: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 compile_net: bool = False, channels_last: bool = False, compile_mode: str = "default"):
        super().__init__()
        self.net = net
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        # Kept outside the module tree so checkpoints hold the plain network's keys.
        mode = None if compile_mode == "default" else compile_mode
        object.__setattr__(self, "_compiled", torch.compile(net, dynamic=False, mode=mode) if compile_net else None)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # Keras declares l2(...) on the layers; a network without the attribute has no penalty.
        self.l2 = float(getattr(net, "l2", 0.0))
        self._decay, self._no_decay = decayed_parameters(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self._compiled if self._compiled is not None else self.net
        return net(x)

    @torch.no_grad()
    def l2_penalty(self) -> torch.Tensor:
        """What Keras adds to the reported loss: l2 * sum(w^2) over the regularised tensors."""
        return self.l2 * sum(p.detach().float().pow(2).sum() for p in self._decay)

    def _log_epoch(self, name: str, value, n: int) -> None:
        self.log(name, value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True,
                 add_dataloader_idx=False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        # The loss and everything after it in fp32, also when the network ran under bf16 autocast.
        logits = self(x).float()
        loss = F.cross_entropy(logits, y)
        n = y.shape[0]
        acc = (logits.argmax(1) == y).float().mean()
        self._log_epoch(m.TRAIN_LOSS, loss.detach(), n)
        self._log_epoch(m.TRAIN_LOSS_KERAS, loss.detach() + self.l2_penalty(), n)
        self._log_epoch(m.TRAIN_ACC, acc, n)
        return loss

    def evaluate_logits(self, x: torch.Tensor, y: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one batch in one evaluation mode (STANDARD or ARTICLE)."""
        if mode == ARTICLE:
            with batchnorm_batch_statistics(self.net):
                logits = self(x).float()
            # The article's val_loss is Keras' total loss, L2 penalty included.
            return F.cross_entropy(logits, y) + self.l2_penalty(), logits
        logits = self(x).float()
        return F.cross_entropy(logits, y), logits

    def evaluate_batch(self, x: torch.Tensor, y: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy) of one batch in one evaluation mode (STANDARD or ARTICLE)."""
        loss, logits = self.evaluate_logits(x, y, mode)
        return loss, (logits.argmax(1) == y).float().mean()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        loss, acc = self.evaluate_batch(x, y, dataloader_idx)
        article = dataloader_idx == ARTICLE
        self._log_epoch(m.VAL_LOSS_ARTICLE if article else m.VAL_LOSS, loss, y.shape[0])
        self._log_epoch(m.VAL_ACC_ARTICLE if article else m.VAL_ACC, acc, y.shape[0])

    def on_before_optimizer_step(self, optimizer) -> None:
        # Keras adds l2 * sum(w^2) to the loss: a gradient of 2 * l2 * w on exactly the regularised
        # tensors, whatever the optimizer (for SGD the same arithmetic as its weight_decay=2*l2).
        if self.l2:
            for p in self._decay:
                if p.grad is not None:
                    p.grad.add_(p, alpha=2 * self.l2)

    def on_train_start(self) -> None:
        # A resumed run gets its optimizer back from the checkpoint, hyper-parameters included. The
        # config's values (which `resume=RUN optim.lr=...` may override) are the ones that hold from
        # here on, as timm's resume does; for a fresh run this changes nothing.
        # The config's values are read from an optimizer the factory builds afresh over the same
        # groups, so any optimizer's settings (lr, momentum, betas...) are taken as configured.
        opt = self.optimizers(use_pl_optimizer=False)
        fresh = self.optimizer_factory([{"params": group["params"]} for group in opt.param_groups])
        sched = self.lr_schedulers()
        for group, configured in zip(opt.param_groups, fresh.param_groups):
            group.update({k: v for k, v in configured.items() if k not in ("params", "initial_lr")})
        if isinstance(sched, LambdaLR):
            lrs = [group["lr"] for group in fresh.param_groups]
            for group, lr, factor in zip(opt.param_groups, lrs, sched.lr_lambdas):
                group.update(lr=lr * factor(self.current_epoch), initial_lr=lr)
            sched.base_lrs = lrs

    def on_train_epoch_start(self) -> None:
        opt = self.optimizers()
        self._log_epoch(m.LR, torch.tensor(opt.param_groups[0]["lr"]), 1)

    def configure_optimizers(self):
        # Two groups (the tensors Keras regularises, the rest) so that the L2 gradient and any
        # per-group setting can tell them apart; the optimizer's own settings apply to both.
        opt = self.optimizer_factory([{"params": self._decay}, {"params": self._no_decay}])
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(opt), "interval": "epoch"}}

    # -- checkpoint identity ---------------------------------------------------------------------
    network_signature: dict | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[SIGNATURE_KEY] = self.network_signature
