"""Opening or continuing a study: the search's settings, its space checked before any trial runs
(every point composed and preflighted), the sampler (re-seeded for a continued study, a grid where
asked) and the pruner, both stored so that every job rebuilds the same ones."""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, IntDistribution

from aprelu_exp.errors import UserError
from aprelu_exp.runs.callbacks import COLUMNS
from aprelu_exp.settings import is_setting_override
from aprelu_exp.search.heartbeat import heartbeat_settings
from aprelu_exp.search.space import SearchSpace, as_overrides, corner_points, parse_space
from aprelu_exp.search.storage import normalise, open_storage
from aprelu_exp.search.trial_link import PRUNER_ATTR, build_pruner
from aprelu_exp.sweep.app import is_project_app
from aprelu_exp.training.build import preflight

log = logging.getLogger("aprelu_exp.search")
DIRECTIONS = ("maximize", "minimize")
_ABSENT = object()
REDUCE = ("last", "best")


@dataclass
class Objective:
    metric: str
    direction: str
    reduce: str

    def value(self, rows: list[dict]) -> float | None:
        vals = [float(r[self.metric]) for r in rows if r.get(self.metric) not in (None, "")]
        if not vals or not all(math.isfinite(v) for v in vals):
            return None
        if self.reduce == "last":
            return vals[-1]
        return max(vals) if self.direction == "maximize" else min(vals)


def objective_from(conf, project: bool = True) -> Objective:
    """The objective's settings, checked. Another app's objective is its task's return value
    (sweep/app.py): only the direction applies to it."""
    metric, direction, reduce = str(conf.metric), str(conf.direction), str(conf.reduce)
    metrics = [c for c in COLUMNS if c != "epoch"]
    if project and metric not in metrics:
        raise UserError(f"hydra.sweeper.objective.metric={metric!r} is not a metrics.csv column; "
                        f"use one of {', '.join(metrics)} (the article's metric is val_acc_article).")
    if direction not in DIRECTIONS:
        raise UserError(f"hydra.sweeper.objective.direction={direction!r}: use maximize or minimize.")
    if reduce not in REDUCE:
        raise UserError(f"hydra.sweeper.objective.reduce={reduce!r}: use last (the last epoch's value, "
                        f"the default) or best (the best epoch's).")
    return Objective(metric, direction, reduce)


def _study_name(record: str, space: SearchSpace, objective: Objective) -> str:
    """The default name: the record plus a digest of what defines the search, so the same command
    continues its study and a different space starts its own."""
    fixed = sorted(o for o in space.fixed if is_setting_override(o))
    spec = json.dumps([sorted(space.describe().items()), fixed, objective.__dict__], sort_keys=True)
    return f"{record}-search-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


class SearchStudy:
    """The search's settings (hydra.sweeper.*) and its study."""

    def __init__(self, sweeper, arguments: list[str]):
        self.config: DictConfig = sweeper.config
        self.project = is_project_app(self.config)
        self.loader = sweeper.hydra_context.config_loader
        self.settings = sweeper.settings
        self.space = parse_space(self.settings.get("params"), arguments, self.loader, allow_empty=not self.project)
        self.objective = objective_from(self.settings["objective"], self.project)
        self.n_trials = int(self.settings["n_trials"])
        self.n_jobs = int(self.settings["n_jobs"])
        if self.n_trials < 1 or self.n_jobs < 1:
            raise UserError(f"hydra.sweeper.n_trials={self.n_trials}, n_jobs={self.n_jobs}: both must be >= 1.")
        self.storage = normalise(self.settings.get("storage"), self.config.get("run_root"))
        # Another app has no record: its study is named after its job (hydra.job.name).
        self.record = str(OmegaConf.select(self.config, "record.name", default=None) or self.config.hydra.job.name)
        self.study_name = str(self.settings.get("study_name") or _study_name(self.record, self.space, self.objective))
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))

    # -- before any trial ----------------------------------------------------------------------
    def probe(self, overrides: list[str]) -> str | None:
        """Why a point cannot run (composition or the pre-run checks), or None when it can."""
        try:
            cfg = self.loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            preflight(cfg)
        except UserError as exc:
            return str(exc)
        except (HydraException, ValueError, KeyError, TypeError) as exc:
            return " ".join(str(exc).split())
        return None

    def check_keys(self) -> None:
        """A misspelt key fails every trial alike: name it before anything is probed."""
        for key in self.space.distributions:
            if "/" in key or key.startswith(("+", "~")) or self.loader.get_group_options(key):
                continue  # a config group, or a key the override adds: probed below
            if OmegaConf.select(self.config, key, default=_ABSENT, throw_on_missing=False) is _ABSENT:
                parent = key.rsplit(".", 1)[0] if "." in key else None
                node = OmegaConf.select(self.config, parent) if parent else self.config
                known = ", ".join(sorted(node.keys())) if OmegaConf.is_dict(node) else ""
                raise UserError(f"{key} is not a key of the config, so it cannot be searched; nothing was "
                                f"started. " + (f"{parent} has: {known}. " if known else "")
                                + "`python -m aprelu_exp --cfg job` prints every key.")

    def check_space(self) -> None:
        self.check_keys()
        limit = int(self.settings.get("probe_points") or 32)
        points = corner_points(self.space, limit)
        bad: dict[str, list[str]] = {}
        for point in points:
            reason = self.probe(self.space.job_overrides(point))
            if reason:
                bad.setdefault(reason, []).append(" ".join(as_overrides(point)))
        if len(bad) and sum(map(len, bad.values())) == len(points):
            reasons = "\n".join(f"  - {r}\n    (e.g. {pts[0]})" for r, pts in list(bad.items())[:4])
            raise UserError(f"no point of the search space can run; nothing was started. Checked "
                            f"{len(points)} point(s) (every choice, both ends of every interval):\n{reasons}\n"
                            f"Fix the key or narrow the space to values the network accepts.")
        for reason, pts in bad.items():
            log.warning("%d of %d probed point(s) cannot run (trials drawn there are recorded failed "
                        "without a job): %s (e.g. %s)", len(pts), len(points), reason, pts[0])

    # -- the study -------------------------------------------------------------------------------
    def sampler(self, existing: int, grid_space: dict | None):
        spec = OmegaConf.to_container(self.settings["sampler"], resolve=True)
        if spec.get("seed") is not None and existing:
            # A continued study must not replay the first invocation's random draws. Mixed, not
            # added: seed 0 after one trial must differ from another sweeper's seed 1 after none.
            spec["seed"] = int(np.random.SeedSequence([int(spec["seed"]), existing]).generate_state(1)[0])
        if grid_space is not None:
            spec["search_space"] = grid_space
        return instantiate(spec, _convert_="all")

    def grid_space(self) -> dict | None:
        if not str(self.settings["sampler"].get("_target_", "")).endswith("GridSampler"):
            return None
        grid = {}
        for key, dist in self.space.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                grid[key] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                grid[key] = list(range(dist.low, dist.high + 1, dist.step))
            else:
                raise UserError(f"the grid sampler needs discrete dimensions; {key} is an interval. "
                                f"Use choice(...) or an int range(...), or another sampler (tpe, random).")
        return grid

    def open_study(self):
        # Heartbeats are a database storage's (RDBStorage); building them elsewhere only warns.
        beats = heartbeat_settings(self.settings) if "://" in self.storage else None
        storage = open_storage(self.storage, heartbeat=beats)
        pruner_spec = OmegaConf.to_container(self.settings["pruner"], resolve=True)
        try:
            existing = len(optuna.load_study(study_name=self.study_name, storage=storage).trials)
        except KeyError:
            existing = 0
        grid = self.grid_space()
        self.optuna_storage = storage  # the heartbeats' (search/heartbeat.py), opened here, not dug out of the study
        study = optuna.create_study(study_name=self.study_name, storage=storage,
                                    sampler=self.sampler(existing, grid), pruner=build_pruner(pruner_spec),
                                    direction=self.objective.direction, load_if_exists=True)
        attrs = study.user_attrs
        space = self.space.describe()
        if existing and attrs.get("space") not in (None, space):
            raise UserError(
                f"study {self.study_name!r} in {self.storage} searched a different space "
                f"({attrs['space']}); this command's is {space}. Continue it with the same space, or "
                f"start a new study (hydra.sweeper.study_name=NAME).")
        if existing and attrs.get("objective") not in (None, self.objective.__dict__):
            raise UserError(f"study {self.study_name!r} optimised {attrs['objective']}; this command asks for "
                            f"{self.objective.__dict__}. Use another hydra.sweeper.study_name.")
        study.set_user_attr("space", space)
        study.set_user_attr("objective", self.objective.__dict__)
        study.set_user_attr("record", self.record)
        study.set_user_attr("fixed_overrides", self.space.fixed)
        if self.project:
            study.set_user_attr("trial_settings", self.trial_settings())
        study.set_user_attr(PRUNER_ATTR, pruner_spec)
        return study, existing, grid

    def trial_settings(self) -> dict:
        """What every trial shares and what its cost depends on, as resolved (a search config's
        budget or subset does not show in the command line's overrides)."""
        keys = ("budget", "trainer.max_epochs", "data.train_subset", "data.test_subset", "data.val_split",
                "data.split_seed", "perf.precision", "perf.compile", "seed")
        return {"record": self.record, **{k: OmegaConf.select(self.config, k) for k in keys}}
