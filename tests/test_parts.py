"""Every part is a `_target_` node whose constructor declares its settings: each option of each
group agrees with its constructor, a key no constructor takes is refused, an optimizer or a schedule
is one YAML file (in the package or in a user's folder), and a run's config.yaml rebuilds exactly
what trained (checked against the checkpoint that torch and Lightning wrote from the live objects)."""
import csv
import functools
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from aprelu_exp import parts
from aprelu_exp.compose import CONF_DIR
from aprelu_exp.errors import UserError
from aprelu_exp.training.build import build_augment, build_net, build_optimization
from inprocess import run_cli

PART_GROUPS = ("model", "data", "augment", "optim", "schedule", "trainer", "logger", "callbacks")
GIVEN = {"data": ("seed", "augment", "eval_batch_size", "arrays"), "logger": ("save_dir",),
         "trainer": ("callbacks", "logger", "plugins", "default_root_dir")}
TINY = ["data.train_subset=200", "data.test_subset=100", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "logger=none"]


def _nodes(cfg, group):
    node = OmegaConf.select(cfg, group.replace("/", "."))
    if group in ("logger", "callbacks"):
        return [(f"{group}.{k}", v) for k, v in (node or {}).items() if "_target_" in v]
    return [(group, node)] if "_target_" in node else []


def test_every_option_of_every_part_group_agrees_with_its_constructor():
    checked = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for group in PART_GROUPS:
            for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
                cfg = compose("config", overrides=[f"{group}={option}", "trial.study=s", "trial.storage=x",
                                                   "trial.number=0", "trial.metric=val_acc"])
                for where, node in _nodes(cfg, group):
                    parts.check_node(where, node, GIVEN.get(group, ()) + ("optimizer", "budget", "params"))
                    checked.append(f"{group}={option}")
    assert {"optim=sgd", "optim=adamw", "schedule=step", "schedule=cosine", "model=resnet", "augment=keras",
            "logger=mlflow", "callbacks=trial_reporter", "trainer=ddp_cpu"} <= set(checked)


def test_the_check_refuses_what_its_constructor_does_not_take():
    node = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentun": 0.9})
    with pytest.raises(UserError, match=r"optim.momentun is not a setting of torch.optim.SGD .*Did you mean optim.momentum"):
        parts.check_node("optim", node)
    node = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "nesterov": "yes"})
    with pytest.raises(UserError, match=r"optim.nesterov='yes' is a str; torch.optim.SGD expects bool"):
        parts.check_node("optim", node)
    with pytest.raises(UserError, match="names no importable class"):
        parts.check_node("optim", OmegaConf.create({"_target_": "torch.optim.NoSuchOptimizer"}))
    # A constructor argument without a default must come from the config.
    with pytest.raises(UserError, match=r"model \(.*APReLUResNet\) needs model.stages"):
        parts.check_node("model", OmegaConf.create({"_target_": "aprelu_exp.model.resnet.APReLUResNet"}))


def test_budget_needs_a_schedule_that_scales(make_cfg):
    cfg = make_cfg("budget=3", "schedule._target_=torch.optim.lr_scheduler.ConstantLR", "~schedule.epochs",
                   "~schedule.every", "~schedule.gamma", "~trainer.max_epochs")
    with pytest.raises(UserError, match=r"schedule \(torch.optim.lr_scheduler.ConstantLR\) takes no budget"):
        build_optimization(cfg)


def test_a_misspelled_key_names_the_keys_that_exist():
    assert parts.closest("model.reducton", ["model.reduction", "model.activation", "seed"])[0] == "model.reduction"
    assert parts.closest("logger.tracking_uri", ["logger.mlflow.tracking_uri", "logger.csv.name"]) == [
        "logger.mlflow.tracking_uri"]


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _run_dir(root: Path) -> Path:
    (run,) = [p.parent for p in root.rglob("config.yaml") if (p.parent / "checkpoints").is_dir()]
    return run


def test_a_runs_config_yaml_rebuilds_exactly_what_trained(cli_env, tmp_path):
    out = run_cli([f"run_root={tmp_path}", *TINY, "optim=adamw", "optim.lr=0.003", "optim.weight_decay=0.01",
                   "schedule=cosine", "schedule.warmup_epochs=1", "schedule.epochs=4", "trainer.max_epochs=3",
                   "model.reduction=4", "model.l2=0.0002", "augment.rotation_range=10"], cli_env)
    assert out.returncode == 0, out.stderr[-3000:]
    run = _run_dir(tmp_path)
    ckpt = _checkpoint(run)
    cfg = OmegaConf.load(run / "config.yaml")
    # The optimizer: its class (Adam's moments in the state) and every hyper-parameter of both groups.
    net = build_net(cfg)
    optimizer, scheduler = build_optimization(cfg)
    opt = optimizer([{"params": [p for p in net.parameters()][:1]}, {"params": [p for p in net.parameters()][1:]}])
    assert isinstance(opt, torch.optim.AdamW)
    trained_groups = ckpt["optimizer_states"][0]["param_groups"]
    for built, trained in zip(opt.param_groups, trained_groups):
        for key in ("betas", "eps", "weight_decay", "amsgrad", "initial_lr"):
            if key in built:
                assert built[key] == pytest.approx(trained[key]), key
        assert trained["initial_lr"] == pytest.approx(0.003)
    assert "exp_avg_sq" in next(iter(ckpt["optimizer_states"][0]["state"].values()))
    # The schedule: the lr each epoch trained with, by hand from the config's cosine (4 epochs, 1 of
    # warm-up): lr (warm-up's only epoch), lr (the cosine's start), lr * (1 + cos(pi / 3)) / 2.
    sched = scheduler(opt)
    trained_sched = ckpt["lr_schedulers"][0]
    assert (sched.warmup, sched.length, sched.min_factor) == (trained_sched["warmup"], trained_sched["length"],
                                                              trained_sched["min_factor"]) == (1, 4, 0.0)
    lrs = [float(r["lr"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert lrs == pytest.approx([0.003, 0.003, 0.003 * 0.75])
    # The network: the trained weights load strictly into the network the config builds.
    net.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}, strict=True)
    assert net.blocks[0].act2.fc1.out_features == 32 // 4 and net.l2 == pytest.approx(0.0002)
    # The augmentation, as the data module held it.
    assert ckpt["CIFAR10DataModule"]["augment"] == {**vars(build_augment(cfg))}
    assert ckpt["CIFAR10DataModule"]["augment"]["rotation_range"] == 10
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schedule"]["kind"] == "truncated" and summary["schedule"]["warmup_epochs"] == 1


def test_an_optimizer_of_the_users_own_trains_sweeps_and_shows_in_help(cli_env, tmp_path):
    user = tmp_path / "my_conf"
    (user / "optim").mkdir(parents=True)
    (user / "optim" / "my_adam.yaml").write_text("_target_: torch.optim.Adam\n_partial_: true\nlr: 0.002\n")
    help_out = run_cli(["--config-dir", str(user), "--help"], cli_env)
    assert help_out.returncode == 0 and "adamw, my_adam, sgd" in help_out.stdout, help_out.stdout
    out = run_cli(["-m", "--config-dir", str(user), f"run_root={tmp_path / 'runs'}", *TINY, "trainer.max_epochs=1",
                   "optim=my_adam,sgd"], cli_env)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.parent for p in (tmp_path / "runs").rglob("checkpoints/last.ckpt"))
    by_optim = {OmegaConf.load(r.parent / "config.yaml").optim._target_: _checkpoint(r.parent) for r in runs}
    assert set(by_optim) == {"torch.optim.Adam", "torch.optim.SGD"}
    adam = by_optim["torch.optim.Adam"]["optimizer_states"][0]
    assert adam["param_groups"][0]["initial_lr"] == pytest.approx(0.002)
    assert "exp_avg" in next(iter(adam["state"].values()))
    assert "momentum_buffer" in next(iter(by_optim["torch.optim.SGD"]["optimizer_states"][0]["state"].values()))


@pytest.mark.slow
def test_a_search_chooses_between_optimizers_and_schedules(cli_env, tmp_path):
    out = run_cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", f"run_root={tmp_path}", *TINY, "budget=1",
                   "optim=choice(sgd,adamw)", "schedule=choice(step,cosine)"], cli_env)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [p.parent for p in tmp_path.rglob("summary.json")]
    assert len(runs) == 3
    for run in runs:
        cfg = OmegaConf.load(run / "config.yaml")
        chosen = OmegaConf.load(run / ".hydra" / "overrides.yaml")
        optim = next(o.split("=", 1)[1] for o in chosen if o.startswith("optim="))
        schedule = next(o.split("=", 1)[1] for o in chosen if o.startswith("schedule="))
        assert cfg.optim._target_ == {"sgd": "torch.optim.SGD", "adamw": "torch.optim.AdamW"}[optim]
        assert cfg.schedule._target_.endswith({"step": "KerasStepLR", "cosine": "WarmupCosineLR"}[schedule])
        state = _checkpoint(run)["optimizer_states"][0]["state"]
        assert ("exp_avg" if optim == "adamw" else "momentum_buffer") in next(iter(state.values()))
