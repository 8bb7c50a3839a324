"""APReLU against a hand computation in numpy (the article's definition, written out)."""
import numpy as np
import pytest
import torch

from aprelu_exp.model.activations import APReLU, APReLUShared, DyReLUB
from aprelu_exp.model.resnet import make_batchnorm


def _set_linear(layer, w, b):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(b, dtype=torch.float32))


def _bn_train(v, eps):
    mu, var = v.mean(0), v.var(0)  # biased variance, as BN normalises in training
    return (v - mu) / np.sqrt(var + eps)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_aprelu_matches_hand_computation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    eps = 1e-3
    layer = APReLU(channels=2, reduction=2, bn=make_batchnorm(0.1, eps))
    w1, b1 = rng.normal(size=(1, 4)), rng.normal(size=1)
    w2, b2 = rng.normal(size=(2, 1)), rng.normal(size=2)
    _set_linear(layer.fc1, w1, b1)
    _set_linear(layer.fc2, w2, b2)
    layer.train()
    y = layer(torch.tensor(x)).detach().numpy()

    pos, neg = np.maximum(x, 0), np.minimum(x, 0)
    s = np.concatenate([neg.mean((2, 3)), pos.mean((2, 3))], 1)  # negative half FIRST
    h = np.maximum(_bn_train(s @ w1.T + b1, eps), 0)
    scale = _sigmoid(_bn_train(h @ w2.T + b2, eps))
    expected = pos + scale[:, :, None, None] * neg
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # A positive input passes unchanged; a negative one is scaled by a slope in (0, 1).
    assert np.all(y[x > 0] == x[x > 0])
    assert np.all((y[x < 0] < 0) & (y[x < 0] > x[x < 0]))


def test_aprelu_uses_running_statistics_in_eval():
    layer = APReLU(channels=4, reduction=4, bn=make_batchnorm(0.1, 1e-3)).eval()
    x = torch.randn(3, 4, 5, 5)
    # With fresh running stats (mean 0, var 1) eval BN is affine-identity up to eps.
    with torch.no_grad():
        pos, neg = x.clamp(min=0), x.clamp(max=0)
        s = torch.cat([neg.mean((2, 3)), pos.mean((2, 3))], 1)
        h = torch.relu(layer.fc1(s) / np.sqrt(1 + 1e-3))
        scale = torch.sigmoid(layer.fc2(h) / np.sqrt(1 + 1e-3))
        torch.testing.assert_close(layer(x), pos + scale[:, :, None, None] * neg)


def test_channel_shared_variant_has_one_slope_per_sample():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3, 4, 4)).astype(np.float32)
    layer = APReLUShared(channels=3, reduction=16, bn=make_batchnorm(0.1, 1e-3)).train()
    w1, b1, w2, b2 = rng.normal(size=(2, 2)), rng.normal(size=2), rng.normal(size=(1, 2)), rng.normal(size=1)
    _set_linear(layer.fc1, w1, b1)
    _set_linear(layer.fc2, w2, b2)
    y = layer(torch.tensor(x)).detach().numpy()
    pos, neg = np.maximum(x, 0), np.minimum(x, 0)
    s = np.stack([neg.mean((1, 2, 3)), pos.mean((1, 2, 3))], 1)
    h = np.maximum(_bn_train(s @ w1.T + b1, 1e-3), 0)
    scale = _sigmoid(_bn_train(h @ w2.T + b2, 1e-3))  # (N, 1)
    np.testing.assert_allclose(y, pos + scale[:, :, None, None] * neg, rtol=1e-5, atol=1e-5)


def test_dyrelu_b_starts_close_to_relu_and_is_piecewise_linear_max():
    layer = DyReLUB(channels=4, reduction=4, bn=make_batchnorm(0.1, 1e-3))
    with torch.no_grad():
        layer.fc2.weight.zero_()
        layer.fc2.bias.zero_()  # sigmoid(0) = 0.5 -> residual coefficients 0: exactly max(x, 0)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(layer(x), torch.relu(x))


def test_dyrelu_b_with_trained_weights_against_a_numpy_hand_computation():
    # Chen et al.'s DyReLU-B, written out: per channel, y = max_k(a_k * x + b_k) with
    # a = (1, 0) + 1.0 * d[:2], b = 0.5 * d[2:], d = 2 * sigmoid(fc2(relu(fc1(mean_hw(x))))) - 1.
    torch.manual_seed(3)
    layer = DyReLUB(channels=4, reduction=2, bn=make_batchnorm(0.1, 1e-3))
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.8)
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        y = layer(x).numpy()
    xn = x.numpy().astype(np.float64)
    w1, b1 = layer.fc1.weight.detach().double().numpy(), layer.fc1.bias.detach().double().numpy()
    w2, b2 = layer.fc2.weight.detach().double().numpy(), layer.fc2.bias.detach().double().numpy()
    h = np.maximum(xn.mean(axis=(2, 3)) @ w1.T + b1, 0)
    d = (2 * _sigmoid(h @ w2.T + b2) - 1).reshape(3, 4, 4)
    a = d[..., :2] * 1.0 + np.array([1.0, 0.0])
    b = d[..., 2:] * 0.5
    lines = xn[..., None] * a[:, :, None, None, :] + b[:, :, None, None, :]
    expected = lines.max(axis=-1)
    assert not np.allclose(expected, np.maximum(xn, 0), atol=1e-2)  # far from ReLU: the test can fail
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_reduction_larger_than_channels_is_refused():
    with pytest.raises(ValueError, match="reduction"):
        APReLU(channels=8, reduction=16, bn=make_batchnorm(0.1, 1e-3))
