"""The training semantics: Keras L2 on exactly the tensors Keras regularises, the two validation
modes, the lr schedules (step and cosine) against hand-computed values."""
import copy
import functools
import math

import pytest
import torch

from aprelu_exp.model import APReLUResNet, Stage
from aprelu_exp.training.module import APReLUClassifier, batchnorm_batch_statistics
from aprelu_exp.training.schedule import KerasStepLR, WarmupCosineLR, scale_milestones, step_factor, step_milestones

SGD = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True)

# Written out by hand from the Keras model (kernel_regularizer on every Conv2D and Dense kernel,
# gamma_regularizer on every BatchNormalization, APReLU's inner layers included), for one APReLU
# block of 8 channels: the tensors l2(1e-4) penalises. Biases and betas are not penalised.
KERAS_REGULARISED = {
    "stem.weight", "blocks.0.bn1.weight", "blocks.0.conv1.weight", "blocks.0.bn2.weight", "blocks.0.conv2.weight",
    "blocks.0.act1.fc1.weight", "blocks.0.act1.bn1.weight", "blocks.0.act1.fc2.weight", "blocks.0.act1.bn2.weight",
    "blocks.0.act2.fc1.weight", "blocks.0.act2.bn1.weight", "blocks.0.act2.fc2.weight", "blocks.0.act2.bn2.weight",
    "head_bn.weight", "head_act.fc1.weight", "head_act.bn1.weight", "head_act.fc2.weight", "head_act.bn2.weight",
    "fc.weight",
}


def _net(l2=1e-4):
    torch.manual_seed(0)
    return APReLUResNet([Stage(1, 8, False)], stem_channels=8, reduction=2, l2=l2)


def test_l2_gradient_reaches_exactly_the_tensors_keras_regularises():
    net = _net()
    module = APReLUClassifier(net, SGD)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    module.on_before_optimizer_step(None)
    for name, p in net.named_parameters():
        expected = 2e-4 * p.detach() if name in KERAS_REGULARISED else torch.zeros_like(p)
        torch.testing.assert_close(p.grad, expected, msg=name)
    assert len(KERAS_REGULARISED) == 19 and set(dict(net.named_parameters())) >= KERAS_REGULARISED


def test_l2_penalty_is_the_keras_loss_term():
    net = _net()
    named = dict(net.named_parameters())
    expected = sum((named[n].detach().double() ** 2).sum().item() for n in KERAS_REGULARISED)
    assert APReLUClassifier(net, SGD).l2_penalty().item() == pytest.approx(1e-4 * expected, rel=1e-5)
    assert APReLUClassifier(_net(l2=0.0), SGD).l2_penalty().item() == 0.0


def test_one_sgd_step_with_no_data_gradient_is_the_keras_penalty_step():
    module = APReLUClassifier(_net(), SGD)
    opt = module.configure_optimizers()
    w = module.net.fc.weight
    before = w.detach().clone()
    opt.zero_grad()
    (0 * module.net(torch.randn(4, 3, 32, 32)).sum()).backward()
    module.on_before_optimizer_step(opt)
    opt.step()
    # nesterov: p -= lr * (g + m * buf), buf = g at the first step -> lr * (1 + m) * 2e-4 * w
    torch.testing.assert_close(w.detach(), before - 0.1 * 1.9 * 2e-4 * before)
    assert all(g["weight_decay"] == 0 for g in opt.param_groups)  # the penalty is not counted twice


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


def _lrs(scheduler_cls, n, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = scheduler_cls(opt, **kw)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_class_on_a_budget_drops_at_the_scaled_milestones():
    # 5000 epochs with drops at 1500/3000/4500, compressed into 10: drops at 3, 6, 9.
    assert _lrs(KerasStepLR, 10, epochs=5000, every=1500, gamma=0.1, budget=10) == pytest.approx(
        [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.0001])


def test_cosine_schedule_with_warmup_by_hand():
    # 2 warm-up epochs (lr/2, lr), then a cosine over the 4 remaining epochs down to 0.1 * lr:
    # factor = 0.1 + 0.9 * (1 + cos(pi * k / 4)) / 2 for k = 0..3.
    by_hand = [0.05, 0.1] + [0.1 * (0.1 + 0.9 * (1 + math.cos(math.pi * k / 4)) / 2) for k in range(4)]
    assert _lrs(WarmupCosineLR, 6, epochs=6, warmup_epochs=2, min_factor=0.1) == pytest.approx(by_hand)
    # On a budget of 3 of a 6-epoch schedule the warm-up keeps its share: 1 epoch, then a cosine over 2.
    assert _lrs(WarmupCosineLR, 3, epochs=6, warmup_epochs=2, min_factor=0.0, budget=3) == pytest.approx(
        [0.1, 0.1, 0.05])


def test_scaled_milestones_keep_their_fractions():
    assert scale_milestones([1500, 3000, 4500], 5000, 50) == [15, 30, 45]


def _fit(module, epochs, root, ckpt_path=None):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))), batch_size=4)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=root, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("optim", [
    {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9},
    {"_target_": "torch.optim.AdamW", "lr": 0.001, "betas": [0.9, 0.999], "weight_decay": 0.0},
])
def test_a_resumed_run_trains_with_the_optimizer_settings_its_config_now_holds(optim, tmp_path):
    """Lightning restores the optimizer's settings from the checkpoint; `resume=RUN optim.lr=...`
    must still train at the new values, or config.yaml would record an lr that never trained."""
    from omegaconf import OmegaConf

    from aprelu_exp import parts

    def module(**changes):
        node = OmegaConf.create({**optim, "_partial_": True, **changes})
        step = parts.build("schedule", OmegaConf.create({"_target_": "aprelu_exp.training.schedule.KerasStepLR",
                                                         "_partial_": True, "epochs": 4, "every": 2, "gamma": 0.1}))
        return APReLUClassifier(_net(), parts.build("optim", node), step)

    first = _fit(module(), 2, tmp_path)
    first.save_checkpoint(tmp_path / "last.ckpt")
    assert first.optimizers[0].param_groups[0]["lr"] == pytest.approx(optim["lr"] * 0.1)  # after epoch 2's drop
    changed = {"lr": 0.5, "momentum": 0.5} if "momentum" in optim else {"lr": 0.5, "betas": [0.5, 0.6]}
    resumed = _fit(module(**changed), 3, tmp_path, ckpt_path=tmp_path / "last.ckpt")
    for group in resumed.optimizers[0].param_groups:
        assert group["lr"] == pytest.approx(0.5 * 0.1) and group["initial_lr"] == 0.5  # epoch 3: one drop
        for key, value in changed.items():
            if key != "lr":
                assert tuple(group[key]) == tuple(value) if isinstance(value, list) else group[key] == value
