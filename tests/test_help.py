"""`--help` names every group, option and record, and every option it lists composes into a
config that passes the checks a run makes before it starts; tab completion offers nothing else."""
import os
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from inprocess import REPO, run_module
from omegaconf import OmegaConf

from aprelu_exp.train import build_loggers
from aprelu_exp.training.build import build_augment, build_datamodule, build_net, preflight
from aprelu_exp.training.precision import perf_switches
from aprelu_exp.training.schedule import plan_schedule

CONF = REPO / "conf"


def _help() -> str:
    out = run_module("aprelu_exp", ["--help"])
    assert out.returncode == 0, out.stderr
    return out.stdout


def _hydra_groups() -> dict[str, list[str]]:
    """The app's config groups and options as Hydra's own repository lists them."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()

        def walk(parent: str):
            for g in loader.list_groups(parent):
                name = f"{parent}/{g}" if parent else g
                if name.startswith("hydra"):
                    continue
                options = loader.get_group_options(name)
                if options:
                    yield name, sorted(options)
                yield from walk(name)

        return dict(walk(""))


def _listed_options(text: str) -> dict[str, list[str]]:
    """group -> options, parsed from the help's group section."""
    section = text.split("== Config groups (group=option) ==")[1].split("==")[0]
    lines = section.strip().splitlines()
    out = {}
    for head, opts in zip(lines[::2], lines[1::2]):
        if head.startswith("("):
            break
        out[head.split()[0]] = [o.strip().rstrip("*") for o in opts.split(",")]
    return out


@pytest.fixture(scope="module")
def help_text():
    return _help()


def test_help_names_every_group_option_and_record(help_text):
    assert "powered by Hydra" not in help_text
    assert _listed_options(help_text) == _hydra_groups()
    records = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
    section = help_text.split("== Records")[1].split("== First commands")[0]
    for name in records:
        change = OmegaConf.load(CONF / "experiment" / f"{name}.yaml").record.change
        # The record's own stated change, read from its config (not a copy).
        assert re.search(rf"^{name}\s+\[\w+\] " + re.escape(" ".join(change.split())), section, re.M), name
    for command in ("experiment=record_15", "-m ", "resume=", "budget=", "--cfg job",
                    "search=record_16_neighbourhood", "hydra/sweeper=optuna", "records promote",
                    "replicates=3", "--confirm 3", "records confirm", "--baseline"):
        assert command in help_text, command
    assert "$APRELU_DATA_ROOT" in help_text and "runs/" in help_text


def test_no_schema_is_offered_as_an_option():
    for group, options in _hydra_groups().items():
        assert not [o for o in options if "schema" in o], group
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(Exception, match="perf_schema"):
            compose("config", overrides=["perf=perf_schema"])


def _runnable(cfg, cifar, tmp_path):
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    net = build_net(cfg)
    assert sum(p.numel() for p in net.parameters()) > 0
    plan_schedule(cfg)
    preflight(cfg)  # every part's node against its constructor, optimizer and schedule built
    perf_switches(cfg)
    build_augment(cfg)
    build_loggers(cfg, tmp_path)
    build_datamodule(cfg, arrays=cifar)


def test_every_listed_option_composes_into_a_runnable_config(help_text, make_cfg, cifar, tmp_path):
    listed = _listed_options(help_text)
    assert sum(len(o) for o in listed.values()) >= 20
    for group, options in listed.items():
        for option in options:
            # A search holds out 5,000 of its training images: more than the 500 these configs keep.
            fit = ["data.val_split=100"] if group == "search" else []
            _runnable(make_cfg(f"{group}={option}", *fit), cifar, tmp_path)


def test_tab_completion_lists_only_real_options():
    expected = _hydra_groups()
    for group in ("augment", "model", "perf"):  # the groups that used to offer their schemas
        env = {**os.environ, "COMP_LINE": f"aprelu-exp {group}=", "COMP_POINT": str(len(group) + 12)}
        out = run_module("aprelu_exp", ["-sc", "query=bash"], env=env)
        assert out.returncode == 0, out.stderr
        offered = sorted(w.split("=", 1)[1] for w in out.stdout.split())
        assert offered == expected[group], group
