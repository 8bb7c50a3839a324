"""The search loop behind `hydra/sweeper=optuna`: check the space, open (or continue) the study,
then ask a batch of trials, launch them through Hydra's launcher, and tell each one's outcome.

Each job gets its trial's study, storage and number as `trial.*` overrides and reports to the
storage itself (search/trial_link.py), so pruning works under any launcher. A batch is `n_jobs`
trials launched together; the next batch is asked when the whole batch has returned (Hydra's
launcher interface returns batches), so a slow trial holds its batch's slots."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aprelu_exp.errors import UserError
from aprelu_exp.runs.replicates import replicate_seeds
from aprelu_exp.search.space import SearchSpace, as_overrides, corner_points, format_value, parse_space
from aprelu_exp.search.storage import normalise, open_storage, write_search_ref
from aprelu_exp.search.trial_link import PRUNER_ATTR

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


def objective_from(conf) -> Objective:
    from aprelu_exp.runs.callbacks import COLUMNS

    metric, direction, reduce = str(conf.metric), str(conf.direction), str(conf.reduce)
    metrics = [c for c in COLUMNS if c != "epoch"]
    if metric not in metrics:
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
    from aprelu_exp.report.collect import LOCATION_OVERRIDES

    fixed = sorted(o for o in space.fixed if not o.lstrip("+~").startswith(LOCATION_OVERRIDES))
    spec = json.dumps([sorted(space.describe().items()), fixed, objective.__dict__], sort_keys=True)
    return f"{record}-search-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


class Search:
    def __init__(self, sweeper, arguments: list[str]):
        self.sw = sweeper
        self.config: DictConfig = sweeper.config
        self.loader = sweeper.hydra_context.config_loader
        self.settings = sweeper.settings
        self.space = parse_space(self.settings.get("params"), arguments, self.loader)
        self.objective = objective_from(self.settings["objective"])
        self.n_trials = int(self.settings["n_trials"])
        self.n_jobs = int(self.settings["n_jobs"])
        if self.n_trials < 1 or self.n_jobs < 1:
            raise UserError(f"hydra.sweeper.n_trials={self.n_trials}, n_jobs={self.n_jobs}: both must be >= 1.")
        self.storage = normalise(self.settings.get("storage"), self.config.run_root)
        self.record = str(OmegaConf.select(self.config, "record.name", default="custom"))
        self.study_name = str(self.settings.get("study_name") or _study_name(self.record, self.space, self.objective))
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))

    # -- before any trial ----------------------------------------------------------------------
    def probe(self, overrides: list[str]) -> str | None:
        """Why a point cannot run (composition or the pre-run checks), or None when it can."""
        from hydra.errors import HydraException

        from aprelu_exp.train import preflight

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
            reason = self.probe(self.space.fixed + as_overrides(point))
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
        from hydra.utils import instantiate

        spec = OmegaConf.to_container(self.settings["sampler"], resolve=True)
        if spec.get("seed") is not None and existing:
            # A continued study must not replay the first invocation's random draws. Mixed, not
            # added: seed 0 after one trial must differ from another sweeper's seed 1 after none.
            import numpy as np

            spec["seed"] = int(np.random.SeedSequence([int(spec["seed"]), existing]).generate_state(1)[0])
        if grid_space is not None:
            spec["search_space"] = grid_space
        return instantiate(spec, _convert_="all")

    def grid_space(self) -> dict | None:
        from optuna.distributions import CategoricalDistribution, IntDistribution

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
        import optuna

        storage = open_storage(self.storage)
        pruner_spec = OmegaConf.to_container(self.settings["pruner"], resolve=True)
        from aprelu_exp.search.trial_link import build_pruner

        try:
            existing = len(optuna.load_study(study_name=self.study_name, storage=storage).trials)
        except KeyError:
            existing = 0
        grid = self.grid_space()
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
        study.set_user_attr("trial_settings", self.trial_settings())
        study.set_user_attr(PRUNER_ATTR, pruner_spec)
        return study, existing, grid

    def trial_settings(self) -> dict:
        """What every trial shares and what its cost depends on, as resolved (a search config's
        budget or subset does not show in the command line's overrides)."""
        keys = ("budget", "trainer.max_epochs", "data.train_subset", "data.test_subset", "perf.precision",
                "perf.compile", "seed")
        return {"record": self.record, **{k: OmegaConf.select(self.config, k) for k in keys}}

    # -- the loop -------------------------------------------------------------------------------
    def link_overrides(self, trial) -> list[str]:
        return [f"trial.study={format_value(self.study_name)}", f"trial.storage={format_value(self.storage)}",
                f"trial.number={trial.number}",
                f"trial.metric={self.objective.metric}",
                f"hydra.sweep.subdir=trial_{trial.number:04d}_${{record.name}}"]

    def replicate_jobs(self, trial, overrides: list[str]) -> list[list[str]]:
        """One job per replicate seed (replicates=N); each reports to the trial, whose value is their mean."""
        base = self.space.fixed + overrides + self.link_overrides(trial)
        if len(self.seeds) == 1:
            return [base]
        base = [o for o in base if o.split("=", 1)[0].lstrip("+~") != "seed"]
        return [[*base, f"seed={s}", f"hydra.sweep.subdir=trial_{trial.number:04d}_seed{s}_${{record.name}}"]
                for s in self.seeds]

    def run(self) -> list:
        import optuna

        self.seeds = replicate_seeds(self.config)
        self.check_space()
        study, existing, grid = self.open_study()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        write_search_ref(self.sweep_dir, self.study_name, self.storage, {"objective": self.objective.__dict__})
        log.info("study %s in %s: %d earlier trial(s); %d new, %d at a time; space: %s", self.study_name,
                 self.storage, existing, self.n_trials, self.n_jobs,
                 ", ".join(f"{k} {v}" for k, v in self.space.describe().items()))
        grid_size = math.prod(len(v) for v in grid.values()) if grid else None
        returns, job_idx, asked = [], 0, 0
        while asked < self.n_trials:
            if grid_size is not None and len(study.trials) >= grid_size:
                log.info("the grid's %d point(s) are all tried; the search ends.", grid_size)
                break
            batch = []
            while len(batch) < self.n_jobs and asked < self.n_trials:
                trial = study.ask(fixed_distributions=self.space.distributions)
                asked += 1
                overrides = as_overrides({k: trial.params[k] for k in self.space.distributions})
                trial.set_user_attr("overrides", overrides)
                reason = self.probe(self.space.fixed + overrides)
                if reason:
                    trial.set_user_attr("error", reason)
                    _tell(study, trial, state=optuna.trial.TrialState.FAIL)
                    log.warning("trial %d (%s) cannot run: %s", trial.number, " ".join(overrides), reason)
                    continue
                batch.append((trial, overrides))
            if not batch:
                continue
            jobs = [job for t, ov in batch for job in self.replicate_jobs(t, ov)]
            try:
                results = self.sw.launcher.launch(jobs, initial_job_idx=job_idx)
            except BaseException as exc:
                for trial, _ in batch:
                    self.tell_stopped(study, trial, exc)
                self.write_report(interrupted=True)
                raise
            job_idx += len(jobs)
            n = len(self.seeds)
            for i, (trial, _) in enumerate(batch):
                self.tell_outcome(study, trial, results[i * n:(i + 1) * n])
            returns.append(results)
            if asked < self.n_trials:  # mid-search; the sweep's own callback writes the final one
                self.write_report()
        self.summarise(study)
        return returns

    def tell_stopped(self, study, trial, exc: BaseException) -> None:
        import optuna

        stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if stored.state.is_finished():
            return
        trial.set_user_attr("error", f"the search stopped ({type(exc).__name__}) while this trial ran")
        _tell(study, trial, state=optuna.trial.TrialState.FAIL)

    def job_outcome(self, ret) -> tuple[str, float | None, str | None, Path, list[dict]]:
        """(state, objective value, error, run directory, metrics rows) of one job."""
        from aprelu_exp.runs.rundir import read_metrics_rows
        from aprelu_exp.runs.rundir import read_status

        run_dir = Path(str(OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")))
        status = read_status(run_dir)
        state, error = status.get("status", "unknown"), status.get("error")
        rows = read_metrics_rows(run_dir)
        value = self.objective.value(rows)
        if state == "finished" and value is None:
            error = f"no finite {self.objective.metric} in metrics.csv"
        if error is None and state != "finished" and getattr(ret, "status", None) is not None \
                and ret.status.name == "FAILED":
            try:
                ret.return_value  # Hydra's JobReturn re-raises the job's exception here
            except Exception as exc:  # noqa: BLE001  (any job error becomes the trial's note)
                error = f"{type(exc).__name__}: {exc}"
        return state, value, error, run_dir, rows

    def tell_outcome(self, study, trial, rets) -> None:
        """Tell the trial its outcome: its job's, or with replicates the mean over its seeds (pruned
        when any replicate was pruned, failed when any failed)."""
        import optuna

        TS = optuna.trial.TrialState
        outcomes = [self.job_outcome(ret) for ret in rets]
        state, value, error, run_dir, rows = outcomes[0]
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("epochs", len(rows))
        if rows:  # both validation modes, whichever one the search optimises
            from aprelu_exp.search.report import last_epoch_values

            trial.set_user_attr("last_epoch", last_epoch_values(rows))
        if len(outcomes) > 1:
            trial.set_user_attr("replicates", [{"seed": s, "status": o[0], "value": o[1], "run_dir": str(o[3])}
                                               for s, o in zip(self.seeds, outcomes)])
            states = [o[0] for o in outcomes]
            bad = next((o for o in outcomes if o[0] != "finished" or o[1] is None), None)
            state = "pruned" if "pruned" in states else ("finished" if bad is None else bad[0])
            error = None if bad is None else f"seed {self.seeds[outcomes.index(bad)]}: {bad[2]}"
            value = sum(o[1] for o in outcomes) / len(outcomes) if bad is None else None
        trial.set_user_attr("status", state)
        if state == "pruned":
            _tell(study, trial, state=TS.PRUNED)
        elif state == "finished" and value is not None:
            _tell(study, trial, value)
        else:
            trial.set_user_attr("error", error or f"run ended {state}")
            _tell(study, trial, state=TS.FAIL)
        log.info("trial %d: %s%s", trial.number, state,
                 f", {self.objective.metric} {value:.4f}" if value is not None and state != "failed" else "")

    def write_report(self, interrupted: bool = False) -> None:
        from aprelu_exp.report.build import build_report

        title = f"Search {self.study_name} ({self.sweep_dir.name})" + (" (interrupted)" if interrupted else "")
        try:
            build_report([self.sweep_dir], self.sweep_dir, title=title)
        except Exception as exc:  # the study itself is safe in its storage either way
            log.warning("could not write the search report: %s", exc)

    def summarise(self, study) -> None:
        import optuna

        TS = optuna.trial.TrialState
        counts = {s.name.lower(): sum(t.state == s for t in study.trials) for s in (TS.COMPLETE, TS.PRUNED, TS.FAIL)}
        try:
            best = study.best_trial
            best_text = (f"best: trial {best.number}, {self.objective.metric} {best.value:.4f}, "
                         f"{' '.join(best.user_attrs.get('overrides', []))}")
        except ValueError:
            best_text = "no trial completed yet"
        log.info("study %s: %s; %s. Promote it with: python -m aprelu_exp.records promote %s "
                 "--name NAME", self.study_name, ", ".join(f"{k} {v}" for k, v in counts.items()), best_text,
                 self.sweep_dir)


def _tell(study, trial, *args, **kwargs) -> None:
    """study.tell, where the grid sampler's end-of-grid `study.stop()` (allowed only inside
    study.optimize) is not an error: the trial's state is stored before it is raised, and the
    search loop ends at the grid's size on its own."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def run_search(sweeper, arguments: list[str]) -> Any:
    try:
        search = Search(sweeper, arguments)
        return search.run()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(UserError.exit_code)
