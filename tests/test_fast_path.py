"""The speed switches must not change what is learned (CPU, same seed, a few real steps)."""
import pytest
import torch

from aprelu_exp.train import train

STEPS = ["experiment=record_16", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
         "data.train_subset=400", "data.test_subset=200", "trainer.deterministic=true"]


def _train(make_cfg, cifar, tmp_path, name, *switches):
    summary = train(make_cfg(*STEPS, *switches), tmp_path / name, arrays=cifar)
    ckpt = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return summary, ckpt["state_dict"]


def _initial_weights(make_cfg) -> dict:
    """The weights both runs start from (train() seeds, then builds the network)."""
    import pytorch_lightning as pl

    from aprelu_exp.training.build import build_net

    cfg = make_cfg(*STEPS)
    pl.seed_everything(int(cfg.seed), verbose=False)
    return {f"net.{k}": v for k, v in build_net(cfg).state_dict().items()}


def _compare(a, b, wa, wb, w0, loss_rtol, update_rtol):
    for key in ("train_loss", "train_loss_keras", "val_loss", "val_loss_article"):
        assert b["final"][key] == pytest.approx(a["final"][key], rel=loss_rtol), key
    assert wa.keys() == wb.keys()
    # Measured against how far training moved the weights (all floating tensors as one vector):
    # the two runs must have taken the same steps, up to float summation order.
    keys = [k for k, v in wa.items() if v.is_floating_point() and k in w0]
    assert len(keys) > 100
    moved = torch.cat([(wa[k].double() - w0[k].double()).flatten() for k in keys]).norm()
    apart = torch.cat([(wa[k].double() - wb[k].double()).flatten() for k in keys]).norm()
    assert moved > 0.1
    assert apart / moved <= update_rtol, (apart / moved).item()


def test_channels_last_learns_the_same(make_cfg, cifar, tmp_path):
    a, wa = _train(make_cfg, cifar, tmp_path, "plain", "perf.compile=false", "perf.channels_last=false")
    b, wb = _train(make_cfg, cifar, tmp_path, "cl", "perf.compile=false", "perf.channels_last=true")
    assert (b["perf"]["compile"], b["perf"]["channels_last"]) == (False, True)
    # Four SGD steps at lr 0.1 from the same seed: only float summation order differs.
    _compare(a, b, wa, wb, _initial_weights(make_cfg), loss_rtol=1e-3, update_rtol=0.01)


@pytest.mark.slow
def test_compiled_network_learns_the_same(make_cfg, cifar, tmp_path):
    a, wa = _train(make_cfg, cifar, tmp_path, "eager", "perf.compile=false")
    b, wb = _train(make_cfg, cifar, tmp_path, "compiled", "perf.compile=true")
    assert b["perf"]["compile"] is True and a["perf"]["compile"] is False
    _compare(a, b, wa, wb, _initial_weights(make_cfg), loss_rtol=1e-3, update_rtol=0.01)


def test_compile_is_automatic_only_where_it_pays(make_cfg):
    from aprelu_exp.training.precision import perf_switches

    cfg = make_cfg()
    assert perf_switches(cfg, num_train=500, max_epochs=1)["compile"] is False
    assert perf_switches(cfg, num_train=50_000, max_epochs=3)["compile"] is True
    assert perf_switches(make_cfg("perf.compile=false"), 50_000, 3)["compile"] is False


def test_eval_batch_size_is_automatic_by_device_and_checked(make_cfg):
    from aprelu_exp.errors import UserError
    from aprelu_exp.training.precision import perf_switches

    assert perf_switches(make_cfg())["eval_batch_size"] == 100  # CPU: the measured faster size
    assert perf_switches(make_cfg("data.eval_batch_size=1000"))["eval_batch_size"] == 1000
    for bad in ("0", "-5", "big", "2.5"):
        with pytest.raises(UserError, match="data.eval_batch_size"):
            perf_switches(make_cfg(f"data.eval_batch_size={bad}"))


def test_standard_validation_does_not_depend_on_its_batch_size(make_cfg, cifar):
    """Why eval_batch_size may follow the device: with running BN statistics every image is
    classified on its own, so 1000 images in one batch or in ten give the same logits."""
    from aprelu_exp.training.build import build_net

    net = build_net(make_cfg()).eval()
    with torch.no_grad():  # a few SGD-free forward passes in train mode give the BNs non-trivial statistics
        net.train()
        for i in range(3):
            net(torch.from_numpy(cifar.train_images[i * 100:(i + 1) * 100]).float() / 255 - 0.47)
        net.eval()
        x = torch.from_numpy(cifar.test_images[:1000]).float() / 255 - 0.47
        whole = net(x)
        parts = torch.cat([net(b) for b in torch.split(x, 100)])
    assert whole.abs().max() > 0.1
    torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-5)
