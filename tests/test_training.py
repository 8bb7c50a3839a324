"""The training semantics: Keras L2, decay groups, the two validation modes, the lr schedule."""
import numpy as np
import pytest
import torch
from torch import nn

from aprelu_exp.model import APReLUResNet, Stage
from aprelu_exp.training.module import APReLUClassifier, batchnorm_batch_statistics
from aprelu_exp.training.schedule import scale_milestones, step_factor, step_milestones


def _net():
    torch.manual_seed(0)
    return APReLUResNet([Stage(1, 8, False)], stem_channels=8, reduction=2)


def test_l2_penalty_counts_kernels_and_gammas_only():
    net = _net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.fill_(2.0)
                m.bias.fill_(5.0)  # betas are not penalised
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.fill_(7.0)  # nor are biases
    module = APReLUClassifier(net, l2=1e-4)
    expected = 0.0
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            expected += (m.weight.detach().double() ** 2).sum().item()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            expected += 4.0 * m.num_features
    assert module.l2_penalty().item() == pytest.approx(1e-4 * expected, rel=1e-5)


def test_sgd_gets_weight_decay_twice_l2_on_the_penalised_group():
    module = APReLUClassifier(_net(), lr=0.1, l2=1e-4)
    opt = module.configure_optimizers()["optimizer"]
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, pytest.approx(2e-4)]
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    # One SGD step on a decayed tensor with zero data gradient equals the Keras penalty gradient.
    net = module.net
    w = net.fc.weight
    before = w.detach().clone()
    opt.zero_grad()
    (0 * net(torch.randn(4, 3, 32, 32)).sum()).backward()
    opt.step()
    # nesterov: p -= lr * (g + m * buf), buf = g at the first step -> lr * (1 + m) * 2e-4 * w
    torch.testing.assert_close(w.detach(), before - 0.1 * 1.9 * 2e-4 * before)


def test_article_mode_uses_batch_statistics_and_leaves_running_stats():
    net = _net().eval()
    x = torch.randn(20, 3, 32, 32) * 3 + 1
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad(), batchnorm_batch_statistics(net):
        y_article = net(x)
    after = net.state_dict()
    for k, v in state.items():
        assert torch.equal(v, after[k]), k  # running means/vars and counters unchanged
    assert not net.training and not any(m.training for m in net.modules())
    # Reference: a deep copy in plain train mode computes the same outputs (it would, however,
    # also update its running statistics).
    import copy
    ref = copy.deepcopy(net).train()
    with torch.no_grad():
        torch.testing.assert_close(y_article, ref(x))
        assert not torch.allclose(y_article, net(x))  # and differs from running-stat evaluation


def test_step_schedule_matches_keras_scheduler():
    ms = step_milestones(5000, 1500)
    assert ms == [1500, 3000, 4500]
    # Keras: lr changes at the start of 0-based epoch 1500, 3000, 4500.
    assert [step_factor(e, ms, 0.1) for e in (0, 1499, 1500, 2999, 3000, 4500, 4999)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.001, 0.001])
