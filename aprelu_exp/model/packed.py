"""N networks of one shape as one wider network (horizontal fusion, as HFTA fuses models: Wang et
al., MLSys 2021), so that a GPU runs N small runs in the kernels of one.

Feature maps carry the N runs side by side along the channels, (B, N*C, H, W): run i's channels are
[i*C, (i+1)*C). Then a convolution is one grouped convolution (groups=N), a BatchNorm is one
BatchNorm over N*C channels (each channel's statistics are its own run's, over that run's batch), a
dense layer is one batched matrix product, and APReLU's gate is the same per run. Nothing mixes
the runs: each run's outputs, gradients and BatchNorm statistics are the ones its own network
computes alone, in the same order of operations (tests/test_packed_network.py checks this against
the solo networks). Each packed tensor holds the runs' tensors as contiguous slices along its first
dimension, so run i's parameters and statistics are views into it (`run_views`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aprelu_exp.model.activations import APReLU, APReLUShared, DyReLUB, PReLU, ReLU
from aprelu_exp.model.resnet import APReLUResNet, BatchNorm1d, BatchNorm2d, Conv3x3, PreActBlock


class PackError(ValueError):
    """Networks that cannot be packed together (a shape differs, or a part has no packed form)."""


def _same(nets, attr: str):
    values = {repr(getattr(n, attr)) for n in nets}
    if len(values) > 1:
        raise PackError(f"the networks differ in {attr} ({', '.join(sorted(values))})")
    return getattr(nets[0], attr)


def _cat(tensors, dim: int = 0) -> torch.Tensor:
    return torch.cat([t.detach() for t in tensors], dim)


class PackedConv2d(nn.Module):
    """N convolutions of one shape as one grouped convolution; Conv3x3's TensorFlow 'same' padding kept."""

    def __init__(self, convs):
        super().__init__()
        first = convs[0]
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "groups", "dilation"):
            _same(convs, attr)
        self.n, self.per_run = len(convs), first.out_channels
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.groups = first.groups * self.n
        self.tf_same = bool(getattr(first, "tf_same", False))
        self.weight = nn.Parameter(_cat([c.weight for c in convs]))
        self.bias = nn.Parameter(_cat([c.bias for c in convs])) if first.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            h, w = x.shape[-2:]
            s = self.stride[0]
            ph = max((math.ceil(h / s) - 1) * s + 3 - h, 0)
            pw = max((math.ceil(w / s) - 1) * s + 3 - w, 0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        per_group = self.weight.shape[1]
        if x.device.type == "cpu" and per_group % 4:
            # oneDNN's CPU convolutions take another path for a group width that is no multiple of
            # 4 (the stem's 3 channels), whose sums round differently from the solo convolution's;
            # run by run, the arithmetic stays each run's own.
            k, c = self.per_run, x.shape[1] // self.n
            return torch.cat([F.conv2d(x[:, i * c:(i + 1) * c], self.weight[i * k:(i + 1) * k],
                                       None if self.bias is None else self.bias[i * k:(i + 1) * k],
                                       self.stride, self.padding, self.dilation, self.groups // self.n)
                              for i in range(self.n)], dim=1)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def run_views(self, i: int, of=lambda t: t) -> dict:
        k = self.per_run
        out = {"weight": of(self.weight)[i * k:(i + 1) * k]}
        if self.bias is not None:
            out["bias"] = of(self.bias)[i * k:(i + 1) * k]
        return out


class PackedLinear(nn.Module):
    """N dense layers of one shape as one batched matrix product over (B, N*in) -> (B, N*out)."""

    def __init__(self, linears):
        super().__init__()
        _same(linears, "in_features"), _same(linears, "out_features")
        self.n, self.inp, self.out = len(linears), linears[0].in_features, linears[0].out_features
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))  # (N, out, in)
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in linears]))      # (N, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        xs = x.view(b, self.n, self.inp).transpose(0, 1)                       # (N, B, in)
        if self.out == 1:
            # A solo layer of one unit is a matrix-vector product (BLAS gemv), whose sum runs in
            # another order than a batched matrix product's: computed as W @ x^T it is the same.
            y = torch.bmm(self.weight, xs.transpose(1, 2)).transpose(1, 2) + self.bias.unsqueeze(1)
        else:
            y = torch.baddbmm(self.bias.unsqueeze(1), xs, self.weight.transpose(1, 2))  # (N, B, out)
        # contiguous: a BatchNorm after it reduces a strided (B, N) tensor in another order
        return y.transpose(0, 1).contiguous().view(b, self.n * self.out)

    def run_views(self, i: int, of=lambda t: t) -> dict:
        return {"weight": of(self.weight)[i], "bias": of(self.bias)[i]}


def packed_batchnorm(bns):
    """N BatchNorms as one over N*C channels (the project's BatchNorm, fp32 statistics under autocast)."""
    first = bns[0]
    _same(bns, "eps"), _same(bns, "momentum"), _same(bns, "num_features")
    cls = BatchNorm2d if isinstance(first, nn.BatchNorm2d) else BatchNorm1d
    packed = cls(first.num_features * len(bns), eps=first.eps, momentum=first.momentum,
                 affine=first.affine, track_running_stats=first.track_running_stats)
    with torch.no_grad():
        for name in ("weight", "bias"):
            getattr(packed, name).copy_(_cat([getattr(b, name) for b in bns]))
        for name in ("running_mean", "running_var"):
            getattr(packed, name).copy_(_cat([getattr(b, name) for b in bns]))
        packed.num_batches_tracked.copy_(first.num_batches_tracked)
    packed.per_run = first.num_features
    return packed


def batchnorm_views(bn, i: int, of=lambda t: t, buffers: bool = True) -> dict:
    k = bn.per_run
    names = ("weight", "bias", "running_mean", "running_var") if buffers else ("weight", "bias")
    return {name: of(getattr(bn, name))[i * k:(i + 1) * k] for name in names}


def _runs(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N*C, ...) -> (B, N, C, ...)."""
    return x.view(x.shape[0], n, x.shape[1] // n, *x.shape[2:])


class PackedAPReLU(nn.Module):
    def __init__(self, acts):
        super().__init__()
        self.n = len(acts)
        self.fc1, self.fc2 = PackedLinear([a.fc1 for a in acts]), PackedLinear([a.fc2 for a in acts])
        self.bn1, self.bn2 = packed_batchnorm([a.bn1 for a in acts]), packed_batchnorm([a.bn2 for a in acts])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = F.relu(x)
        neg = x - pos
        neg_gap, pos_gap = neg.mean(dim=(2, 3), dtype=torch.float32), pos.mean(dim=(2, 3), dtype=torch.float32)
        b = x.shape[0]
        s = torch.cat([_runs(neg_gap, self.n), _runs(pos_gap, self.n)], dim=2).reshape(b, -1)  # per run: neg, pos
        s = F.relu(self.bn1(self.fc1(s)))
        s = torch.sigmoid(self.bn2(self.fc2(s)))
        return torch.addcmul(pos, s[:, :, None, None], neg).to(pos.dtype)


class PackedAPReLUShared(nn.Module):
    def __init__(self, acts):
        super().__init__()
        self.n = len(acts)
        self.fc1, self.fc2 = PackedLinear([a.fc1 for a in acts]), PackedLinear([a.fc2 for a in acts])
        self.bn1, self.bn2 = packed_batchnorm([a.bn1 for a in acts]), packed_batchnorm([a.bn2 for a in acts])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = F.relu(x)
        neg = x - pos
        neg_gap, pos_gap = neg.mean(dim=(2, 3), dtype=torch.float32), pos.mean(dim=(2, 3), dtype=torch.float32)
        b, c = x.shape[0], x.shape[1] // self.n
        s = torch.stack([_runs(neg_gap, self.n).mean(dim=2), _runs(pos_gap, self.n).mean(dim=2)], dim=2)
        s = F.relu(self.bn1(self.fc1(s.reshape(b, -1))))
        s = torch.sigmoid(self.bn2(self.fc2(s)))                       # (B, N): one slope per run and sample
        # Broadcast over each run's (C, H, W) as the solo layer broadcasts its (B, 1, 1, 1) slope:
        # a slope spread over the channels first would take another (fused multiply-add) path.
        h, w = x.shape[-2:]
        y = torch.addcmul(_runs(pos, self.n), s[:, :, None, None, None], _runs(neg, self.n))
        return y.view(b, self.n * c, h, w).to(pos.dtype)


class PackedPReLU(nn.Module):
    def __init__(self, acts):
        super().__init__()
        self.per_run = acts[0].num_parameters
        self.weight = nn.Parameter(_cat([a.weight for a in acts]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.weight)

    def run_views(self, i: int, of=lambda t: t) -> dict:
        k = self.per_run
        return {"weight": of(self.weight)[i * k:(i + 1) * k]}


class PackedDyReLUB(nn.Module):
    def __init__(self, acts):
        super().__init__()
        self.n, self.K = len(acts), DyReLUB.K
        self.fc1, self.fc2 = PackedLinear([a.fc1 for a in acts]), PackedLinear([a.fc2 for a in acts])
        self.register_buffer("alpha_init", acts[0].alpha_init.detach().clone(), persistent=False)
        self.register_buffer("lambdas", acts[0].lambdas.detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, nc = x.shape[:2]
        theta = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3)))))
        theta = 2 * torch.sigmoid(theta) - 1
        theta = theta.view(b, nc, 2 * self.K) * self.lambdas  # run i's 4C values are its C channels x 2K
        a = theta[..., : self.K] + self.alpha_init
        bb = theta[..., self.K:]
        lines = x.unsqueeze(-1) * a[:, :, None, None, :] + bb[:, :, None, None, :]
        return lines.max(dim=-1).values


def packed_activation(acts):
    kind = {type(a) for a in acts}
    if len(kind) > 1:
        raise PackError(f"the networks differ in their activation ({', '.join(sorted(k.__name__ for k in kind))})")
    cls = kind.pop()
    if cls is ReLU:
        return nn.ReLU()
    table = {APReLU: PackedAPReLU, APReLUShared: PackedAPReLUShared, PReLU: PackedPReLU, DyReLUB: PackedDyReLUB}
    if cls not in table:
        raise PackError(f"the activation {cls.__name__} has no packed form")
    return table[cls](acts)


class PackedBlock(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        first = blocks[0]
        self.n = len(blocks)
        self.bn1 = packed_batchnorm([b.bn1 for b in blocks])
        self.act1 = packed_activation([b.act1 for b in blocks])
        self.conv1 = PackedConv2d([b.conv1 for b in blocks])
        self.bn2 = packed_batchnorm([b.bn2 for b in blocks])
        self.act2 = packed_activation([b.act2 for b in blocks])
        self.conv2 = PackedConv2d([b.conv2 for b in blocks])
        self.stride, self.pad_channels = first.stride, first.pad_channels
        self.projection = PackedConv2d([b.projection for b in blocks]) if first.projection is not None else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            return self.projection(x)
        if self.stride > 1:
            x = F.avg_pool2d(x, 1, self.stride)
        if self.pad_channels:
            b, _, h, w = x.shape
            x = F.pad(_runs(x, self.n), (0, 0, 0, 0, 0, self.pad_channels)).reshape(b, -1, h, w)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv1(self.act1(self.bn1(x)))
        r = self.conv2(self.act2(self.bn2(r)))
        return r + self.shortcut(x)


class PackedResNet(nn.Module):
    """N APReLUResNets of one shape as one network: input (B, N*3, H, W), output (B, N, classes).
    Built from the solo networks (their current weights and statistics are copied in)."""

    def __init__(self, nets):
        super().__init__()
        if not nets or not all(type(n) is APReLUResNet for n in nets):
            raise PackError("only the project's APReLUResNet has a packed form (model._target_: "
                            "aprelu_exp.model.resnet.APReLUResNet)")
        self.n = len(nets)
        shapes = {tuple((k, tuple(v.shape)) for k, v in n.state_dict().items()) for n in nets}
        if len(shapes) > 1:
            raise PackError("the networks' tensors differ in shape")
        for kind in (nn.Conv2d, PreActBlock):
            counts = {sum(isinstance(m, kind) for m in n.modules()) for n in nets}
            if len(counts) > 1:
                raise PackError(f"the networks differ in their number of {kind.__name__} layers")
        self.stem = PackedConv2d([n.stem for n in nets])
        self.blocks = nn.Sequential(*[PackedBlock([n.blocks[i] for n in nets]) for i in range(len(nets[0].blocks))])
        self.head_bn = packed_batchnorm([n.head_bn for n in nets])
        self.head_act = packed_activation([n.head_act for n in nets])
        self.fc = PackedLinear([n.fc for n in nets])
        self.num_classes = nets[0].fc.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = self.head_act(self.head_bn(x))
        y = self.fc(x.mean(dim=(2, 3), dtype=torch.float32))
        return y.view(y.shape[0], self.n, self.num_classes)

    def run_views(self, i: int) -> dict[str, torch.Tensor]:
        """Run i's parameters and BatchNorm statistics as views into the packed tensors, under the
        solo network's state_dict names (num_batches_tracked, one count for all runs, included)."""
        return self._views(i, lambda t: t, buffers=True)

    def run_grads(self, i: int) -> dict[str, torch.Tensor]:
        """Run i's gradients as views into the packed gradients (after a backward pass)."""
        return self._views(i, lambda t: t.grad, buffers=False)

    def _views(self, i: int, of, buffers: bool) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, module in self.named_modules():
            prefix = f"{name}." if name else ""
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                views = batchnorm_views(module, i, of, buffers)
                if buffers:
                    views["num_batches_tracked"] = module.num_batches_tracked
            elif hasattr(module, "run_views") and module is not self:
                views = module.run_views(i, of)
            else:
                continue
            out.update({prefix + k: v for k, v in views.items()})
        return out


def pack_inputs(xs: torch.Tensor) -> torch.Tensor:
    """(N, B, C, H, W), one batch per run -> (B, N*C, H, W)."""
    n, b = xs.shape[:2]
    return xs.transpose(0, 1).reshape(b, n * xs.shape[2], *xs.shape[3:])


def shared_inputs(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W), the same images for every run (validation) -> (B, N*C, H, W)."""
    return x.unsqueeze(1).expand(x.shape[0], n, *x.shape[1:]).reshape(x.shape[0], n * x.shape[1], *x.shape[2:])
