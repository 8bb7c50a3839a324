"""The pre-activation ResNet of the article's Keras scripts, built from a list of stages.

Each stage is ``{blocks, channels, downsample}``. The Keras script applies the stride to every
block of a downsampling call (a quirk kept here: ``downsample: true`` with ``blocks: 2`` halves the
resolution twice); records that want one downsampling block write it as a stage of its own.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from aprelu_exp.model.activations import ACTIVATIONS

# scipy.stats.truncnorm.std(a=-2, b=2): Keras divides by it so that the truncated normal keeps
# the he_normal variance 2 / fan_in.
_TRUNCNORM_STD = 0.87962566103423978


@dataclass(frozen=True)
class Stage:
    blocks: int
    channels: int
    downsample: bool


class NetworkConfigError(ValueError):
    """A network description that cannot be built (raised before any run is created)."""


class _FP32Statistics:
    """BatchNorm that normalises in fp32 under autocast (bf16 training): batch statistics, running
    averages and both validation modes keep the article's arithmetic, which bf16's 8-bit mantissa
    would not (a variance next to a mean). Outside autocast it is plain BatchNorm."""

    # A trunk BatchNorm hands its result on in its input's dtype (bf16 after a convolution): the
    # next convolution takes bf16 under autocast either way, and half the bytes make the compiled
    # bf16 step ~5% faster. The APReLU gate's BatchNorms hand on fp32, so its sigmoid is fp32.
    keeps_input_dtype = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            y = super().forward(x.float())
        return y.to(x.dtype) if self.keeps_input_dtype else y


class BatchNorm2d(_FP32Statistics, nn.BatchNorm2d):
    pass


class BatchNorm1d(_FP32Statistics, nn.BatchNorm1d):
    keeps_input_dtype = False


def make_batchnorm(momentum: float, eps: float):
    def factory(num_features: int, dims: int = 2) -> nn.Module:
        cls = BatchNorm2d if dims == 2 else BatchNorm1d
        return cls(num_features, eps=eps, momentum=momentum)

    return factory


class Conv3x3(nn.Conv2d):
    """3x3 convolution with TensorFlow's ``padding='same'``.

    TensorFlow pads ``total = max((out-1)*stride + k - in, 0)`` with the smaller half before: a
    stride-2 conv on an even input pads 0 before and 1 after, so its sampling grid is shifted by
    one pixel against a symmetric padding of 1. ``tf_same=False`` gives PyTorch's usual padding=1.
    """

    def __init__(self, cin: int, cout: int, stride: int, tf_same: bool):
        super().__init__(cin, cout, 3, stride=stride, padding=0 if tf_same and stride > 1 else 1)
        self.tf_same = tf_same and stride > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            h, w = x.shape[-2:]
            s = self.stride[0]
            ph = max((math.ceil(h / s) - 1) * s + 3 - h, 0)
            pw = max((math.ceil(w / s) - 1) * s + 3 - w, 0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


class PreActBlock(nn.Module):
    """BN -> act -> Conv3x3(stride) -> BN -> act -> Conv3x3, plus the shortcut."""

    def __init__(self, cin, cout, stride, act, reduction, bn, tf_same, shortcut):
        super().__init__()
        self.bn1 = bn(cin)
        self.act1 = ACTIVATIONS[act](cin, reduction, bn)
        self.conv1 = Conv3x3(cin, cout, stride, tf_same)
        self.bn2 = bn(cout)
        self.act2 = ACTIVATIONS[act](cout, reduction, bn)
        self.conv2 = Conv3x3(cout, cout, 1, tf_same)
        self.stride = stride
        self.pad_channels = cout - cin
        self.projection = None
        if shortcut == "projection" and (cin != cout or stride > 1):
            self.projection = nn.Conv2d(cin, cout, 1, stride=stride)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            return self.projection(x)
        if self.stride > 1:
            # Keras AveragePooling2D(pool_size=1, strides=2): plain subsampling. Written as the
            # pooling rather than a strided slice: torch.compile's CPU backward of the slice (a
            # strided scatter fused into the BatchNorm backward) took 9 ms of an 80 ms bf16 step.
            x = F.avg_pool2d(x, 1, self.stride)
        if self.pad_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv1(self.act1(self.bn1(x)))
        r = self.conv2(self.act2(self.bn2(r)))
        return r + self.shortcut(x)


class APReLUResNet(nn.Module):
    """The network; its constructor's signature is the one declaration of the `model` settings
    (conf/model/resnet.yaml gives the defaults the records start from)."""

    def __init__(
        self,
        stages: Sequence[Stage],
        stem_channels: int = 16,
        activation: str = "aprelu",
        reduction: int = 16,
        num_classes: int = 10,
        shortcut: str = "zero_pad",
        tf_same_padding: bool = True,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-3,
        init: str = "keras",
        l2: float = 1e-4,
        in_channels: int = 3,
    ):
        super().__init__()
        stages = as_stages(stages)
        check_network(stages, stem_channels, activation, reduction, shortcut, init, l2)
        # Keras declares its regulariser on the layers (kernel_regularizer=l2(...)): the network says
        # which tensors it penalises (decayed_parameters) and how much; the training module adds it.
        self.l2 = float(l2)
        bn = make_batchnorm(bn_momentum, bn_eps)
        self.stem = nn.Conv2d(in_channels, stem_channels, 3, padding=1)
        blocks, cin = [], stem_channels
        for stage in stages:
            for _ in range(stage.blocks):
                stride = 2 if stage.downsample else 1
                blocks.append(
                    PreActBlock(cin, stage.channels, stride, activation, reduction, bn,
                                tf_same_padding, shortcut)
                )
                cin = stage.channels
        self.blocks = nn.Sequential(*blocks)
        self.head_bn = bn(cin)
        self.head_act = ACTIVATIONS[activation](cin, reduction, bn)
        self.fc = nn.Linear(cin, num_classes)
        if init == "keras":
            keras_init_(self)

    @classmethod
    def check(cls, **settings) -> None:
        """The constructor's checks without building (a large network takes a second or more): what
        a search needs for every point it probes."""
        a = inspect.signature(cls).bind(**settings)
        a.apply_defaults()
        a = a.arguments
        check_network(as_stages(a["stages"]), a["stem_channels"], a["activation"], a["reduction"], a["shortcut"],
                      a["init"], a["l2"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = self.head_act(self.head_bn(x))
        return self.fc(x.mean(dim=(2, 3), dtype=torch.float32))


def as_stages(stages) -> list[Stage]:
    """Stages from the config's mappings ({blocks, channels, downsample}) or Stage objects."""
    out = []
    for i, s in enumerate(stages):
        if not isinstance(s, Stage):
            keys = set(s)
            if keys != set(Stage.__dataclass_fields__):
                raise NetworkConfigError(
                    f"model.stages[{i}] has the keys {sorted(keys)}; a stage is exactly "
                    f"{{blocks, channels, downsample}}, e.g. {{blocks: 1, channels: 32, downsample: true}}.")
            s = Stage(int(s["blocks"]), int(s["channels"]), bool(s["downsample"]))
        out.append(s)
    return out


def check_network(stages, stem_channels, activation, reduction, shortcut, init, l2) -> None:
    """Reject descriptions Keras could not build, with the key and the fix in the message."""
    if l2 < 0:
        raise NetworkConfigError(f"model.l2={l2} must be >= 0 (0 turns the Keras L2 penalty off).")
    if init not in ("keras", "torch"):
        raise NetworkConfigError(f"model.init must be 'keras' or 'torch', got {init!r}")
    if activation not in ACTIVATIONS:
        raise NetworkConfigError(
            f"model.activation={activation!r} is not known; choose one of {sorted(ACTIVATIONS)}."
        )
    if shortcut not in ("zero_pad", "projection"):
        raise NetworkConfigError(
            f"model.shortcut={shortcut!r} is not known; use 'zero_pad' (the article's Keras "
            "shortcut) or 'projection' (a 1x1 convolution)."
        )
    if reduction < 1:
        raise NetworkConfigError(f"model.reduction must be a positive integer, got {reduction}.")
    if not stages:
        raise NetworkConfigError("model.stages is empty; give at least one {blocks, channels, downsample}.")
    if stem_channels < 1:
        raise NetworkConfigError(f"model.stem_channels must be positive, got {stem_channels}.")
    cin = stem_channels
    for i, st in enumerate(stages):
        if st.blocks < 1 or st.channels < 1:
            raise NetworkConfigError(
                f"model.stages[{i}] needs blocks >= 1 and channels >= 1, got blocks={st.blocks}, "
                f"channels={st.channels}."
            )
        if shortcut == "zero_pad" and st.channels not in (cin, 2 * cin):
            raise NetworkConfigError(
                f"model.stages[{i}].channels={st.channels} cannot follow {cin} channels: the "
                f"article's shortcut concatenates zeros, so a width may only stay the same or "
                f"double (use {cin} or {2 * cin}), or set model.shortcut=projection."
            )
        if activation in ("aprelu",) and min(cin, st.channels) // reduction < 1:
            # The stage's first APReLU takes its input's width; an earlier stage narrower than this
            # one would have failed here already, so a narrower input can only be the stem's.
            narrowest = f"model.stages[{i}].channels" if st.channels <= cin else "model.stem_channels"
            raise NetworkConfigError(
                f"model.reduction={reduction} is larger than the {min(cin, st.channels)} channels of "
                f"{narrowest} (the width an APReLU of model.stages[{i}] takes); its first Dense layer "
                f"would have no unit. "
                f"Use a reduction of at most {min(cin, st.channels)}, or widen {narrowest}."
            )
        cin = st.channels


def keras_init_(model: nn.Module) -> None:
    """Keras defaults: truncated he_normal kernels (std sqrt(2/fan_in), cut at 2 std), zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(2.0 / fan_in) / _TRUNCNORM_STD
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def decayed_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters as Keras' ``l2(1e-4)`` regularisers do: conv/dense kernels and BN gammas
    are penalised; biases, BN betas and PReLU slopes are not."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_kernel = isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight"
            is_gamma = isinstance(module, nn.modules.batchnorm._BatchNorm) and name == "weight"
            (decay if is_kernel or is_gamma else no_decay).append(p)
    return decay, no_decay
