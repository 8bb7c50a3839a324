"""Activation layers compared in the tuning log: APReLU (both variants), ReLU, PReLU, Dynamic ReLU-B.

All layers take NCHW feature maps. The BatchNorm layers inside the hyper-networks use the
Keras settings handed in by the network builder (``bn``), so the whole network shares one
momentum/epsilon convention.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

BatchNormFactory = Callable[[int], nn.Module]


def _gap_halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    pos = F.relu(x)
    neg = x - pos  # == min(x, 0) without a second pass over a zeros tensor
    # The gate sees fp32 averages also when the map is bf16 (autocast; a no-op in fp32).
    return pos, neg, neg.mean(dim=(2, 3), dtype=torch.float32), pos.mean(dim=(2, 3), dtype=torch.float32)


def _apply_slopes(pos: torch.Tensor, neg: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    # fp32 slopes times a bf16 map is computed in fp32 and handed on in the map's dtype (the next
    # convolution takes bf16 under autocast anyway); in fp32 training the cast is a no-op.
    return torch.addcmul(pos, slopes, neg).to(pos.dtype)


class APReLU(nn.Module):
    """Adaptively Parametric ReLU, per sample and per channel (Zhao et al., IEEE TIE 2020).

    The hyper-network sees the GAP of the negative half first, then of the positive half, as
    the article's Keras code concatenates them; its first Dense layer has ``channels // reduction``
    units (the article's record 16 uses reduction 16; the paper uses 1).
    """

    def __init__(self, channels: int, reduction: int, bn: BatchNormFactory):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(
                f"APReLU reduction {reduction} leaves no hidden unit for {channels} channels"
            )
        self.channels = channels
        self.fc1 = nn.Linear(2 * channels, hidden)
        self.bn1 = bn(hidden, dims=1)
        self.fc2 = nn.Linear(hidden, channels)
        self.bn2 = bn(channels, dims=1)

    def slopes(self, neg_gap: torch.Tensor, pos_gap: torch.Tensor) -> torch.Tensor:
        s = torch.cat([neg_gap, pos_gap], dim=1)
        s = F.relu(self.bn1(self.fc1(s)))
        return torch.sigmoid(self.bn2(self.fc2(s)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos, neg, neg_gap, pos_gap = _gap_halves(x)
        s = self.slopes(neg_gap, pos_gap)
        return _apply_slopes(pos, neg, s[:, :, None, None])


class APReLUShared(nn.Module):
    """Channel-shared APReLU of the author's later github script: one slope per sample.

    Each GAP vector is averaged over channels first, so the hyper-network is
    Dense(2) -> BN -> ReLU -> Dense(1) -> BN -> sigmoid.
    """

    def __init__(self, channels: int, reduction: int, bn: BatchNormFactory):
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(2, 2)
        self.bn1 = bn(2, dims=1)
        self.fc2 = nn.Linear(2, 1)
        self.bn2 = bn(1, dims=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos, neg, neg_gap, pos_gap = _gap_halves(x)
        s = torch.stack([neg_gap.mean(dim=1), pos_gap.mean(dim=1)], dim=1)
        s = F.relu(self.bn1(self.fc1(s)))
        s = torch.sigmoid(self.bn2(self.fc2(s)))
        return _apply_slopes(pos, neg, s[:, :, None, None])


class ReLU(nn.ReLU):
    def __init__(self, channels: int, reduction: int, bn: BatchNormFactory):
        super().__init__()


class PReLU(nn.PReLU):
    """Per-channel PReLU, as in the paper's ResNet-PReLU baseline (Keras PReLU shares nothing
    across channels after the spatial axes are shared); initial slope 0.25."""

    def __init__(self, channels: int, reduction: int, bn: BatchNormFactory):
        super().__init__(num_parameters=channels, init=0.25)


class DyReLUB(nn.Module):
    """Dynamic ReLU-B (Chen et al., ECCV 2020): per-channel piecewise-linear max of K=2 lines
    whose slopes and intercepts come from a squeeze-excitation hyper-network.

    y = max_k (a_k(x) * x + b_k(x)); coefficients a = alpha_init + lambda_a * d_a,
    b = lambda_b * d_b with d = 2*sigmoid(.) - 1 as in the paper (lambda_a=1, lambda_b=0.5,
    alpha_init = (1, 0) so the layer starts as ReLU).
    """

    K = 2

    def __init__(self, channels: int, reduction: int, bn: BatchNormFactory):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channels = channels
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, 2 * self.K * channels)
        self.register_buffer("alpha_init", torch.tensor([1.0, 0.0]), persistent=False)
        self.register_buffer("lambdas", torch.tensor([1.0, 1.0, 0.5, 0.5]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        theta = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3)))))
        theta = 2 * torch.sigmoid(theta) - 1
        theta = theta.view(n, c, 2 * self.K) * self.lambdas
        a = theta[..., : self.K] + self.alpha_init
        b = theta[..., self.K :]
        lines = x.unsqueeze(-1) * a[:, :, None, None, :] + b[:, :, None, None, :]
        return lines.max(dim=-1).values


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "aprelu": APReLU,
    "aprelu_shared": APReLUShared,
    "relu": ReLU,
    "prelu": PReLU,
    "dyrelu_b": DyReLUB,
}
