"""The LightningModule: cross-entropy, Keras-style L2, SGD + step schedule, two validation modes."""
from __future__ import annotations

from contextlib import contextmanager

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from aprelu_exp.model import decayed_parameters
from aprelu_exp.runs.checkpoint import SIGNATURE_KEY
from aprelu_exp.training.schedule import step_factor

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
    def __init__(self, net: nn.Module, lr: float = 0.1, momentum: float = 0.9,
                 nesterov: bool = True, l2: float = 1e-4, milestones: tuple[int, ...] = (),
                 gamma: float = 0.1, compile_net: bool = False, channels_last: bool = False):
        super().__init__()
        self.net = net
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        # Kept outside the module tree so checkpoints hold the plain network's keys.
        object.__setattr__(self, "_compiled", torch.compile(net, dynamic=False) if compile_net else None)
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.l2, self.milestones, self.gamma = l2, tuple(milestones), gamma
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
        self._log_epoch("train_loss", loss.detach(), n)
        self._log_epoch("train_loss_keras", loss.detach() + self.l2_penalty(), n)
        self._log_epoch("train_acc", acc, n)
        return loss

    def evaluate_batch(self, x: torch.Tensor, y: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy) of one batch in one evaluation mode (STANDARD or ARTICLE)."""
        if mode == ARTICLE:
            with batchnorm_batch_statistics(self.net):
                logits = self(x).float()
            # The article's val_loss is Keras' total loss, L2 penalty included.
            loss = F.cross_entropy(logits, y) + self.l2_penalty()
        else:
            logits = self(x).float()
            loss = F.cross_entropy(logits, y)
        return loss, (logits.argmax(1) == y).float().mean()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        loss, acc = self.evaluate_batch(x, y, dataloader_idx)
        suffix = "_article" if dataloader_idx == ARTICLE else ""
        self._log_epoch(f"val_loss{suffix}", loss, y.shape[0])
        self._log_epoch(f"val_acc{suffix}", acc, y.shape[0])

    def on_train_start(self) -> None:
        # A resumed run gets its optimizer back from the checkpoint, hyper-parameters included. The
        # config's values (which `resume=RUN optim.lr=...` may override) are the ones that hold from
        # here on, as timm's resume does; for a fresh run this changes nothing.
        opt = self.optimizers(use_pl_optimizer=False)
        factor = step_factor(self.current_epoch, self.milestones, self.gamma)
        for group, decay in zip(opt.param_groups, (2 * self.l2, 0.0)):
            group.update(lr=self.lr * factor, initial_lr=self.lr, momentum=self.momentum,
                         nesterov=self.nesterov, weight_decay=decay)
        sched = self.lr_schedulers()
        if sched is not None:
            sched.base_lrs = [self.lr] * len(opt.param_groups)

    def on_train_epoch_start(self) -> None:
        opt = self.optimizers()
        self._log_epoch("lr", torch.tensor(opt.param_groups[0]["lr"]), 1)

    def configure_optimizers(self):
        # Keras' l2(1e-4) adds 1e-4*w^2 to the loss, i.e. a gradient of 2e-4*w: weight decay 2*l2,
        # and only on kernels and BN gammas.
        groups = [
            {"params": self._decay, "weight_decay": 2 * self.l2},
            {"params": self._no_decay, "weight_decay": 0.0},
        ]
        opt = torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda epoch: step_factor(epoch, self.milestones, self.gamma))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # -- checkpoint identity ---------------------------------------------------------------------
    network_signature: dict | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[SIGNATURE_KEY] = self.network_signature
