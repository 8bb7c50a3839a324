"""`python -m aprelu_exp --help`: the app's help, written for a researcher.

Hydra renders `hydra.help.template` (conf/hydra/help/aprelu.yaml); the parts that must follow the
configs (the groups and their options, the records and their stated change) come from the
`aprelu_help` resolver below, which reads conf/ at the moment help is asked for."""
from __future__ import annotations


import string
from pathlib import Path

from omegaconf import OmegaConf

from aprelu_exp.compose import CONF_DIR, compose_config


# What each config group selects, in the order a user meets them.
GROUPS = {
    "experiment": "the tuning record to run (a config diff against its parent record)",
    "layout": "a named stage layout on top of the record (searchable: layout=choice(narrow,record16))",
    "sweep": "how -m sweeps: replicates (Hydra's basic sweeper plus replicates=N seeds per point)",
    "search": "a reusable search around a record: its space, objective, budget and pruner (runs a sweep)",
    "model": "the network: stem width, stages (blocks, channels, downsample), APReLU reduction, Keras L2, details",
    "model/activation": "the activation in every block and the head",
    "data": "CIFAR-10: data root, subsets, batch sizes, centring",
    "augment": "the article's ImageDataGenerator transforms, or none",
    "optim": "the optimizer (a _target_ with _partial_): sgd (the article's), adamw, or your own",
    "schedule": "the lr schedule: step (the article's: full length, every, gamma) or cosine with warm-up",
    "trainer": "the Lightning Trainer: accelerator, devices, precision, DDP",
    "perf": "speed switches: compile, channels_last, precision (perf=fast: fp32 or bf16, the one measured faster here)",
    "logger": "TensorBoard, CSV and/or MLflow (an sqlite store beside the runs, or a server) beside metrics.csv",
    "callbacks": "further Lightning callbacks (a search selects trial_reporter for its jobs)",
}


def group_options(group: str, conf_dirs=None) -> list[str]:
    """The options of a group in the package's conf/ and in every config folder on the search path
    (a user's own, added with --config-dir or hydra.searchpath)."""
    return sorted({p.stem for conf in (conf_dirs or [CONF_DIR]) for p in (Path(conf) / group).glob("*.yaml")})


def conf_dirs(root) -> list[Path]:
    sources = OmegaConf.select(root, "hydra.runtime.config_sources", default=None) if root is not None else None
    dirs = [Path(s.path) for s in sources or [] if s.get("schema") == "file" and s.get("path")]
    return dirs or [CONF_DIR]


def _groups(choices, dirs=None) -> str:
    width = max(len(g) for g in GROUPS) + 2
    lines = []
    for group, what in GROUPS.items():
        chosen = choices.get(group) if choices is not None else None
        options = ", ".join(f"{o}*" if o == chosen else o for o in group_options(group, dirs))
        lines.append(f"{group:<{width}}{what}\n{'':<{width}}  {options}")
    return "\n".join(lines) + "\n(* = the option this command line composes)"


def _records() -> str:
    lines = []
    for name in group_options("experiment"):
        rec = OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml").get("record", {})
        change = " ".join(str(rec.get("change") or "").split())
        lines.append(f"{name:<14}[{rec.get('provenance') or '?'}] {change}")
    return "\n".join(lines)


def aprelu_help(part: str, _root_=None) -> str:
    choices = None
    if _root_ is not None:
        choices = OmegaConf.select(_root_, "hydra.runtime.choices", default=None)
    text = {"groups": lambda: _groups(choices, conf_dirs(_root_)), "records": _records}[part]()
    # Hydra substitutes $NAMES in the template after this resolver ran: keep any $ literal.
    return text.replace("$", "$$")


def render(overrides: list[str], config_dirs: list[str]) -> str:
    """The text of `aprelu-exp --help [overrides]`, from one composition. Hydra's own --help would
    list every group's options twice more for placeholders this template does not use (seconds)."""
    extra = [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in config_dirs)}]"] \
        if config_dirs else []
    cfg = compose_config([*overrides, *extra], hydra_config=True)
    return string.Template(str(cfg.hydra.help.template)).safe_substitute()


def register() -> None:
    OmegaConf.register_new_resolver("aprelu_help", aprelu_help, replace=True)
