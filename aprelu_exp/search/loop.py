"""The search loop behind `hydra/sweeper=optuna`: once the study is open (search/study.py), ask a
batch of trials, launch them through Hydra's launcher, and tell each one's outcome.

Each job gets its trial's study, storage and number as `trial.*` overrides and the trial reporter
as a configured callback (`callbacks=trial_reporter`, search/trial_link.py); it reports to the
storage itself, so pruning works under any launcher. A batch is `n_jobs` trials launched together;
the next batch is asked when the whole batch has returned (Hydra's launcher interface returns
batches), so a slow trial holds its batch's slots. A trial's value comes from its job's metrics.csv.

Under another Hydra app (sweep/app.py) it is an Optuna search as Hydra's own sweeper runs one: the
jobs get the point's overrides alone, a trial's value is its task's return value, and the project's
probes, report and search.json are left out. A grid (and a space without a dimension: one point)
runs in Hydra's order, so the sweeper passes Hydra's sweeper suites (tests/test_sweeper_suites.py)."""
from __future__ import annotations

import itertools
import logging
import math
import sys
from pathlib import Path
from typing import Any, Callable

import optuna
from omegaconf import OmegaConf

from aprelu_exp.errors import UserError
from aprelu_exp.sweep.replicates import replicate_seeds
from aprelu_exp.runs.rundir import read_metrics_rows, read_status
from aprelu_exp.search.heartbeat import Heartbeats, fail_stale
from aprelu_exp.search.report import last_epoch_values
from aprelu_exp.search.space import as_overrides, format_value
from aprelu_exp.search.storage import check_server, recorded_storage, write_search_ref
from aprelu_exp.search.study import SearchStudy

log = logging.getLogger("aprelu_exp.search")


class SearchLoop(SearchStudy):
    """Ask, launch, tell, for `n_trials` trials of the study."""

    def __init__(self, sweeper, arguments: list[str], report: Callable[..., Any]):
        super().__init__(sweeper, arguments)
        self.launcher = sweeper.launcher
        self.report = report

    def link_overrides(self, trial) -> list[str]:
        return [f"trial.study={format_value(self.study_name)}", f"trial.storage={format_value(self.storage)}",
                f"trial.number={trial.number}",
                f"trial.metric={self.objective.metric}", "callbacks=trial_reporter",
                f"hydra.sweep.subdir=trial_{trial.number:04d}_${{record.name}}"]

    def replicate_jobs(self, trial, overrides: list[str]) -> list[list[str]]:
        """One job per replicate seed (replicates=N); each reports to the trial, whose value is their
        mean. Another app's job runs with the point's overrides alone, as under Hydra's sweepers."""
        if not self.project:
            return [overrides]
        base = overrides + self.link_overrides(trial)
        if len(self.seeds) == 1:
            return [base]
        base = [o for o in base if o.split("=", 1)[0].lstrip("+~") != "seed"]
        return [[*base, f"seed={s}", f"hydra.sweep.subdir=trial_{trial.number:04d}_seed{s}_${{record.name}}"]
                for s in self.seeds]

    def run(self) -> list:
        self.seeds = replicate_seeds(self.config)
        if "://" in self.storage and not self.storage.startswith("sqlite"):
            check_server(self.storage)  # a database that refuses: said first, not after the space's probes
        if self.project:
            self.check_space()
        study, existing, grid = self.open_study()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        if self.project:
            # run_root: what a promoted record states the storage relative to (records/promote.py).
            write_search_ref(self.sweep_dir, self.study_name, self.storage,
                             {"objective": self.objective.__dict__, "run_root": str(Path(self.config.run_root).resolve())})
        log.info("study %s in %s: %d earlier trial(s); %d new, %d at a time; space: %s", self.study_name,
                 recorded_storage(self.storage)[0], existing, self.n_trials, self.n_jobs,
                 ", ".join(f"{k} {v}" for k, v in self.space.describe().items()) or "one point")
        points = grid_points(grid) if grid is not None else ([{}] if not self.space.distributions else None)
        returns, job_idx, asked = [], 0, 0
        beats = Heartbeats(self.optuna_storage, study)
        done = False
        while asked < self.n_trials and not done:
            fail_stale(study, self.optuna_storage)  # a dead sweeper's trials: failed, queued again to be asked next
            batch = []
            while len(batch) < self.n_jobs and asked < self.n_trials:
                if not queue_next_point(study, points):
                    log.info("the grid's %d point(s) are all tried; the search ends.", len(points))
                    done = True
                    break
                trial = study.ask(fixed_distributions=self.space.distributions)
                beats.beat(trial)
                asked += 1
                params = {k: trial.params[k] for k in self.space.distributions}
                trial.set_user_attr("overrides", as_overrides(params))
                overrides = self.space.job_overrides(params)
                reason = self.probe(overrides) if self.project else None
                if reason:
                    trial.set_user_attr("error", reason)
                    _tell(study, trial, state=optuna.trial.TrialState.FAIL)
                    beats.done(trial)
                    log.warning("trial %d (%s) cannot run: %s", trial.number, " ".join(as_overrides(params)), reason)
                    continue
                batch.append((trial, overrides))
            if not batch:
                continue
            jobs = [job for t, ov in batch for job in self.replicate_jobs(t, ov)]
            try:
                results = self.launcher.launch(jobs, initial_job_idx=job_idx)
            except BaseException as exc:
                for trial, _ in batch:
                    self.tell_stopped(study, trial, exc)
                self.write_report(interrupted=True)
                raise
            job_idx += len(jobs)
            n = len(jobs) // len(batch)
            for i, (trial, _) in enumerate(batch):
                if self.project:
                    self.tell_outcome(study, trial, results[i * n:(i + 1) * n])
                else:
                    self.tell_return(study, trial, results[i])
                beats.done(trial)
            returns.append(results)
            if asked < self.n_trials and not done:  # mid-search; the sweep's own callback writes the final one
                self.write_report()
        self.summarise(study)
        return returns

    def tell_return(self, study, trial, ret) -> None:
        """Another app's trial: its value is what the task returned, as under Hydra's Optuna sweeper;
        a job that failed or returned no number fails its trial, and the search goes on."""
        try:
            value = float(ret.return_value)  # Hydra's JobReturn re-raises the job's exception here
            error = None if math.isfinite(value) else f"the task returned {value}"
        except Exception as exc:  # noqa: BLE001  (any job error, or a return float() cannot read)
            value, error = None, f"{type(exc).__name__}: {exc}"
        if error is None:
            _tell(study, trial, value)
            log.info("trial %d: %s", trial.number, value)
            return
        trial.set_user_attr("error", error)
        _tell(study, trial, state=optuna.trial.TrialState.FAIL)
        log.warning("trial %d (%s) failed: %s", trial.number, " ".join(ret.overrides or []), error)

    def tell_stopped(self, study, trial, exc: BaseException) -> None:
        stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if stored.state.is_finished():
            return
        trial.set_user_attr("error", f"the search stopped ({type(exc).__name__}) while this trial ran")
        _tell(study, trial, state=optuna.trial.TrialState.FAIL)

    def job_outcome(self, ret) -> tuple[str, float | None, str | None, Path, list[dict]]:
        """(state, objective value, error, run directory, metrics rows) of one job."""
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
        TS = optuna.trial.TrialState
        outcomes = [self.job_outcome(ret) for ret in rets]
        state, value, error, run_dir, rows = outcomes[0]
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("epochs", len(rows))
        if rows:  # both validation modes, whichever one the search optimises
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
        if not self.project:
            return  # the report reads the project's run directories; another app's jobs have none
        title = f"Search {self.study_name} ({self.sweep_dir.name})" + (" (interrupted)" if interrupted else "")
        try:
            self.report([self.sweep_dir], self.sweep_dir, title=title)
        except Exception as exc:  # the study itself is safe in its storage either way
            log.warning("could not write the search report: %s", exc)

    def summarise(self, study) -> None:
        TS = optuna.trial.TrialState
        counts = {s.name.lower(): sum(t.state == s for t in study.trials) for s in (TS.COMPLETE, TS.PRUNED, TS.FAIL)}
        try:
            best = study.best_trial
            best_text = (f"best: trial {best.number}, {self.objective.metric if self.project else 'value'} "
                         f"{best.value:.4f}, {' '.join(best.user_attrs.get('overrides', []))}")
        except ValueError:
            best, best_text = None, "no trial completed yet"
        if not self.project:
            # Where Hydra's own Optuna sweeper leaves its result, for an app that reads it from there.
            results = {"name": "optuna", "best_params": dict(best.params) if best else None,
                       "best_value": best.value if best else None}
            OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
            log.info("study %s: %s; %s.", self.study_name, ", ".join(f"{k} {v}" for k, v in counts.items()), best_text)
            return
        log.info("study %s: %s; %s. Promote it with: python -m aprelu_exp.records promote %s "
                 "--name NAME", self.study_name, ", ".join(f"{k} {v}" for k, v in counts.items()), best_text,
                 self.sweep_dir)


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """The grid's points in Hydra's order: the cartesian product of the keys in the order given, the
    first key changing slowest (as Hydra's basic sweeper runs a grid)."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _point_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def queue_next_point(study, points: list[dict[str, Any]] | None) -> bool:
    """Whether there is a trial to ask. For a grid (or the one point of a space without a
    dimension) the next point no trial has taken is enqueued, so that study.ask takes it: Optuna's
    GridSampler would draw the unvisited points in a seeded random order, and an enqueued trial's
    fixed params are what the sampler gives it. A trial already waiting (one queued again after its
    sweeper died) is asked first; failed points count as tried, as Optuna's grid counts them."""
    if points is None:
        return True
    TS = optuna.trial.TrialState
    if study.get_trials(deepcopy=False, states=(TS.WAITING,)):
        return True
    tried = {_point_key(t.params) for t in study.get_trials(deepcopy=False) if t.state != TS.WAITING}
    point = next((p for p in points if _point_key(p) not in tried), None)
    if point is None:
        return False
    study.enqueue_trial(point)
    return True


def _tell(study, trial, *args, **kwargs) -> None:
    """study.tell, where the grid sampler's end-of-grid `study.stop()` (allowed only inside
    study.optimize) is not an error: the trial's state is stored before it is raised, and the
    search loop ends at the grid's size on its own."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def run_search(sweeper, arguments: list[str], report: Callable[..., Any]) -> Any:
    """The search behind `hydra/sweeper=optuna`; `report(paths, out_dir, title=...)` writes the sweep's
    report between batches and when the search is stopped (the entry point passes report.build)."""
    try:
        return SearchLoop(sweeper, arguments, report).run()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(UserError.exit_code)
