"""The record-16 network against figures from the article's Keras model, and the Keras details."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from aprelu_exp.model import APReLUResNet, NetworkConfigError, Stage
from aprelu_exp.model.resnet import Conv3x3, PreActBlock, make_batchnorm
from aprelu_exp.errors import UserError
from aprelu_exp.training.build import build_net

RECORD_16 = [Stage(1, 32, False), Stage(1, 32, True), Stage(1, 64, True)]


def test_record16_sizes_match_the_keras_model(make_cfg):
    net = build_net(make_cfg("experiment=record_16"))
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    running = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert trainable == 92_669  # Keras model.summary() of record 16
    assert running == 1_122


def test_batchnorm_uses_keras_momentum_and_epsilon():
    bns = [m for m in APReLUResNet(RECORD_16).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == pytest.approx(0.1) and m.eps == pytest.approx(1e-3) for m in bns)


def test_stride2_conv_pads_like_tensorflow():
    # TF 'same', stride 2, even input: 0 rows/cols before, 1 after. Output (0, 0) therefore sees
    # input rows/cols 0..2, and the last output sees the zero padding after row/col 31.
    conv = Conv3x3(1, 1, stride=2, tf_same=True)
    x = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32)
    w = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(w)[None, None])
        conv.bias.zero_()
        y = conv(x)[0, 0].numpy()
    xn = x[0, 0].numpy()
    assert y.shape == (16, 16)
    assert y[0, 0] == pytest.approx(float((xn[0:3, 0:3] * w).sum()), rel=1e-5)
    assert y[15, 15] == pytest.approx(float((xn[30:32, 30:32] * w[:2, :2]).sum()), rel=1e-5)
    assert y[3, 5] == pytest.approx(float((xn[6:9, 10:13] * w).sum()), rel=1e-5)


def test_shortcut_subsamples_and_concatenates_zeros():
    block = PreActBlock(4, 8, 2, "relu", 1, make_batchnorm(0.1, 1e-3), True, "zero_pad")
    x = torch.randn(2, 4, 6, 6)
    s = block.shortcut(x)
    assert s.shape == (2, 8, 3, 3)
    torch.testing.assert_close(s[:, :4], x[:, :, ::2, ::2])
    assert torch.count_nonzero(s[:, 4:]) == 0


def test_keras_quirk_every_block_of_a_downsampling_stage_strides():
    net = APReLUResNet([Stage(2, 16, True)], stem_channels=16, reduction=1)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert [b.stride for b in net.blocks] == [2, 2]


def test_he_normal_kernels_are_truncated_with_keras_std():
    torch.manual_seed(0)
    net = APReLUResNet([Stage(1, 64, False)], stem_channels=64, activation="relu")
    w = net.blocks[0].conv2.weight.detach()
    fan_in = 64 * 9
    assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    assert w.abs().max().item() <= 2 * math.sqrt(2 / fan_in) / 0.8796256610342398 + 1e-6
    assert torch.count_nonzero(net.blocks[0].conv2.bias) == 0


@pytest.mark.parametrize("stages, stem, match", [
    ([Stage(1, 48, False)], 16, "stages\\[0\\].channels=48"),
    ([Stage(1, 32, False), Stage(1, 96, True)], 16, "double"),
    ([Stage(1, 8, False)], 16, "cannot follow"),
])
def test_impossible_width_changes_are_refused(stages, stem, match):
    with pytest.raises(NetworkConfigError, match=match):
        APReLUResNet(stages, stem_channels=stem)


def test_projection_shortcut_allows_any_width():
    net = APReLUResNet([Stage(1, 48, True)], stem_channels=16, shortcut="projection", reduction=1)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_every_activation_builds_and_runs():
    for act in ("relu", "prelu", "aprelu", "aprelu_shared", "dyrelu_b"):
        net = APReLUResNet(RECORD_16, activation=act)
        assert net(torch.randn(4, 3, 32, 32)).shape == (4, 10)


def test_a_reduction_refusal_names_the_layer_that_limits_it(make_cfg):
    # Record 16: a 16-channel stem, then stages of 32, 32, 64. Its narrowest APReLU takes the stem's
    # 16 channels (the first block's first activation), not stages[0]'s 32.
    model = make_cfg("experiment=record_16").model
    assert model.stem_channels == 16 and [s.channels for s in model.stages] == [32, 32, 64]
    with pytest.raises(UserError) as refused:
        build_net(make_cfg("experiment=record_16", "model.reduction=20"))
    message = str(refused.value)
    assert "larger than the 16 channels of model.stem_channels" in message
    assert "model.stages[0].channels" not in message and "at most 16" in message
    # Where a stage is the narrow one, its own key is named.
    with pytest.raises(NetworkConfigError, match=r"the 8 channels of model\.stages\[1\]\.channels "):
        APReLUResNet([Stage(1, 64, False), Stage(1, 8, True)], stem_channels=64, reduction=12,
                     shortcut="projection")
