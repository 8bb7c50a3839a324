"""The packed network (model/packed.py) against the N solo networks it was built from: the same
outputs, the same gradients and the same BatchNorm statistics, run by run, in training mode, in
evaluation mode and in the article's mode (batch statistics, running ones untouched); for every
activation and both shortcuts. In fp32 on the CPU record 16's forward arithmetic is the solo
network's, operation for operation (bitwise); elsewhere some sums run in another order (a gate's
channel mean, a bias's gradient over the batch), so the results agree to float32 rounding: a few
1e-6 at most, also for the biases in front of a BatchNorm, whose true gradient is zero and whose
computed one is rounding noise of that size. The channel-shared gate (one slope per sample) takes a
sigmoid of B values alone and of B x N values packed, which the CPU computes partly in its vector
and partly in its scalar path (different roundings of exp); its gradients agree to 2e-5. A wiring mistake (a run's channels mixed with another's,
a slice off by one) differs by orders of magnitude more."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from aprelu_exp.compose import compose_record
from aprelu_exp.model.packed import PackError, PackedResNet, pack_inputs, shared_inputs
from aprelu_exp.training.build import build_net
from aprelu_exp.training.module import batchnorm_batch_statistics

N = 3
TOL = dict(rtol=1e-5, atol=5e-6)
GRAD_TOL = dict(rtol=1e-4, atol=5e-6)


def _nets(*overrides, record="record_16"):
    cfg = compose_record(record, list(overrides))
    nets = []
    for seed in range(N):
        torch.manual_seed(seed)
        nets.append(build_net(cfg))
    return nets


def _batches(seed=0, b=20):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, b, 3, 32, 32, generator=g), torch.randint(0, 10, (N, b), generator=g)


@pytest.mark.parametrize("overrides, record", [
    ([], "record_16"), ([], "record_15"), ([], "record_01"), (["model/activation=aprelu_shared"], "record_16"),
    (["model/activation=relu"], "record_16"), (["model/activation=prelu"], "record_16"),
    (["model/activation=dyrelu_b"], "record_16"), (["model.shortcut=projection"], "record_16"),
    (["model.tf_same_padding=false"], "record_16"),
], ids=["record_16", "record_15", "record_01", "aprelu_shared", "relu", "prelu", "dyrelu_b", "projection",
        "symmetric-padding"])
def test_a_packed_step_is_each_runs_own_step(overrides, record):
    grad_tol = dict(GRAD_TOL, atol=2e-5) if "model/activation=aprelu_shared" in overrides else GRAD_TOL
    nets = _nets(*overrides, record=record)
    solo = [copy.deepcopy(n) for n in nets]
    packed = PackedResNet(nets)
    x, y = _batches()
    # two training steps' forward and backward (statistics move between them)
    for step in range(2):
        packed.zero_grad()
        out = packed(pack_inputs(x))
        loss = torch.stack([F.cross_entropy(out[:, i], y[i]) for i in range(N)])
        loss.sum().backward()
        for i, net in enumerate(solo):
            net.zero_grad()
            mine = net(x[i])
            F.cross_entropy(mine, y[i]).backward()
            torch.testing.assert_close(out[:, i], mine, **TOL)
            grads = packed.run_grads(i)
            for name, p in net.named_parameters():
                torch.testing.assert_close(grads[name], p.grad, **grad_tol, msg=f"run {i} {name} (step {step})")
            views = packed.run_views(i)
            for name, t in net.state_dict().items():
                torch.testing.assert_close(views[name], t, **TOL, msg=f"run {i} {name}")
    # evaluation: running statistics, and the article's mode (batch statistics, nothing updated)
    packed.eval()
    for net in solo:
        net.eval()
    with torch.no_grad():
        v = x[0]
        out = packed(shared_inputs(v, N))
        with batchnorm_batch_statistics(packed):
            article = packed(shared_inputs(v, N))
        for i, net in enumerate(solo):
            torch.testing.assert_close(out[:, i], net(v), **TOL)
            with batchnorm_batch_statistics(net):
                torch.testing.assert_close(article[:, i], net(v), **TOL)
            views = packed.run_views(i)
            for name, t in net.state_dict().items():
                torch.testing.assert_close(views[name], t, **TOL)


def test_views_are_the_packed_tensors_and_write_through():
    nets = _nets()
    packed = PackedResNet(nets)
    views = packed.run_views(1)
    assert set(views) == set(nets[1].state_dict())
    for name, t in nets[1].state_dict().items():
        assert views[name].shape == t.shape and torch.equal(views[name], t)
    with torch.no_grad():
        views["stem.weight"].fill_(0.5)
    assert torch.all(packed.stem.weight[16:32] == 0.5) and not torch.any(packed.stem.weight[:16] == 0.5)


def test_networks_of_different_shapes_do_not_pack():
    a = _nets()[0]
    b = _nets("model.reduction=4")[0]
    with pytest.raises(PackError, match="shape"):
        PackedResNet([a, b])
    c = _nets("model/activation=relu")[0]
    with pytest.raises(PackError):
        PackedResNet([a, c])
    with pytest.raises(PackError, match="APReLUResNet"):
        PackedResNet([torch.nn.Linear(2, 2)])
