"""Continuing a whole sweep: `-m resume=<sweep dir>` launches the same sweep again, with the same
overrides and job numbering, into the same directory. What a job's directory holds decides what it
does: finished jobs are not launched again, a job with a checkpoint goes on from it, the rest start.

The sweep's own record is Hydra's: `multirun.yaml` (the command's task and hydra overrides, its
config sources) in the sweep directory, `.hydra/overrides.yaml` in each job's directory (how a job
is found again, whatever the subdirectory pattern). A resumed sweep trains what the sweep was
launched with: an override that changes a trained setting is refused, naming the difference; only
the launcher may change (`hydra/launcher=...`, `hydra.launcher.*`), since it decides where jobs
run, not what they train."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from aprelu_exp.errors import UserError
from aprelu_exp.runs.lock import LOCK_FILE, holder_gone, holder_named, read_holder, stop_hint
from aprelu_exp.runs.slurm_job import arrays, queued
from aprelu_exp.runs.rundir import CONFIG_FILE, read_status
from aprelu_exp.sweep.slurm import submitit_root, submitted_jobs

SWEEP_FILE = "multirun.yaml"
MULTIRUN_FLAGS = ("-m", "--multirun")
LAUNCHER_KEYS = ("hydra/launcher", "hydra.launcher.")
# Set again by the resume itself, never taken from the saved command.
REPLACED_HYDRA_KEYS = ("hydra.mode", "hydra.sweep.dir")
RESUMING_SWEEPER = "aprelu_replicates_sweeper.ReplicatesSweeper"  # the one that skips finished jobs
KEPT = ("finished", "pruned")  # a pruned job trained until its pruner stopped it: its result stands


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _sweep_dir_checked(given: str) -> Path:
    """The sweep directory of `resume=`, or a refusal that names what the folder is instead."""
    path = Path(given)
    how = ("give the directory of a sweep, runs/multirun/<sweep> (it holds multirun.yaml): "
           "python -m aprelu_exp -m resume=runs/multirun/<sweep>")
    if not path.is_dir():
        raise UserError(f"-m resume={given}: no such directory; {how}.")
    if (path / SWEEP_FILE).is_file():
        return path
    if (path / CONFIG_FILE).is_file() or (path / ".hydra").is_dir():
        if (path.parent / SWEEP_FILE).is_file():
            raise UserError(f"-m resume={given} is one job of the sweep {path.parent}: continue the whole "
                            f"sweep with `python -m aprelu_exp -m resume={path.parent}`, or this job alone "
                            f"without -m: `python -m aprelu_exp resume={given}`.")
        raise UserError(f"-m resume={given} is a single run, not a sweep: continue it without -m: "
                        f"`python -m aprelu_exp resume={given}`.")
    raise UserError(f"-m resume={given}: {path} holds no {SWEEP_FILE}, so it is no sweep (nothing "
                    f"records what it launched); {how}.")


def _saved_command(sweep_dir: Path) -> tuple[list[str], list[str], OmegaConf]:
    try:
        saved = OmegaConf.load(sweep_dir / SWEEP_FILE)
        task = [str(o) for o in saved.hydra.overrides.task]
        hydra_overrides = [str(o) for o in saved.hydra.overrides.hydra]
    except Exception as exc:  # unreadable YAML or a file of another tool: no sweep to go on with
        raise UserError(f"-m resume={sweep_dir}: its {SWEEP_FILE} cannot be read as a Hydra sweep's "
                        f"record ({type(exc).__name__}: {exc}); it is no sweep this command can continue.") from None
    sweeper = str(OmegaConf.select(saved, "hydra.sweeper._target_", default="") or "")
    if "optuna" in sweeper:
        raise UserError(f"-m resume={sweep_dir} is a search (hydra/sweeper=optuna): a search goes on through "
                        f"its study, not its directory. Run the search's command again: the same command "
                        f"continues its study, keeping its trials (see docs/search.md).")
    if sweeper and not sweeper.endswith(RESUMING_SWEEPER):
        raise UserError(f"-m resume={sweep_dir}: the sweep ran under the sweeper {sweeper}, which would launch "
                        f"its finished jobs again; only the project's own sweeper (hydra/sweeper=replicates, the "
                        f"default) resumes a sweep. Continue its interrupted jobs one by one (`python -m aprelu_exp "
                        f"resume=<job dir>`), or start the sweep again.")
    return task, hydra_overrides, saved


def _parsed(overrides: list[str]) -> dict[str, object]:
    """key -> parsed value, so that `false` and `False`, `a,b` and `a, b` compare equal."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # Hydra's parse error: said in one paragraph like every refusal
        said = str(exc).replace("\n", " ")
        raise UserError(f"-m resume=: an override does not parse ({said}); a resumed sweep needs none but "
                        f"the launcher's (hydra/launcher=..., hydra.launcher.*).") from None
    return {o.get_key_element().lstrip("+~"): (o.type, o.value()) for o in parsed}


def _refuse_changes(sweep_dir: Path, given: list[str], saved: list[str]) -> None:
    """Every override of the resume command must say what the sweep already says."""
    theirs, mine = _parsed(saved), _parsed(given)
    by_key = {_key(o): o for o in saved}
    for o in given:
        key = _key(o)
        if key not in theirs:
            raise UserError(
                f"-m resume={sweep_dir}: {o} is not among the sweep's own overrides "
                f"({' '.join(saved) or 'none'}, from its {SWEEP_FILE}). A resumed sweep trains what it was "
                f"launched with; only the launcher may change (hydra/launcher=..., hydra.launcher.*). "
                f"To train with {o}, start a new sweep.")
        if mine[key] != theirs[key]:
            raise UserError(
                f"-m resume={sweep_dir}: {o} contradicts the sweep's own {by_key[key]} (from its "
                f"{SWEEP_FILE}). A resumed sweep trains what it was launched with; drop {o}, or start a "
                f"new sweep to train with it.")


def _refuse_live_slurm_jobs(sweep_dir: Path, saved: OmegaConf) -> None:
    """A SLURM sweep's jobs outlive its sweeper (killed, or its login session closed): a job SLURM
    still holds, running or pending, will train; launching it again would train it twice."""
    root = submitit_root(OmegaConf.select(saved, "hydra.launcher.submitit_folder", default=None), sweep_dir)
    jobs = submitted_jobs(root)
    live = queued(jobs)
    if live is None:
        raise UserError(
            f"-m resume={sweep_dir}: the sweep ran jobs on SLURM ({root} holds them), and SLURM cannot be asked "
            f"here whether any of them is still queued or running (squeue does not answer); launching them "
            f"again could train them twice. Resume where squeue answers (a login node of that cluster); if "
            f"none of its jobs can run any more (the cluster is gone), delete {root}, then resume again.")
    if not live:
        return
    listed = ", ".join(f"{job} {state}" for job, state in sorted(live.items()))
    ids = arrays(live)
    raise UserError(
        f"-m resume={sweep_dir}: SLURM still holds jobs of this sweep ({listed}); they go on without the "
        f"sweeper that submitted them, and launching the sweep again now would train them twice. Wait "
        f"until `squeue -j {','.join(ids)}` lists none of them (the resume then trains only what they "
        f"left), or cancel them with `scancel {' '.join(ids)}` (a running job stops at its next step "
        f"and keeps its last checkpoint); then resume again.")


def resume_argv(argv: list[str]) -> list[str] | None:
    """The command line that continues the sweep `-m resume=DIR` names, or None when argv is no
    sweep resume. Refuses (UserError) before anything is written."""
    if not any(a in MULTIRUN_FLAGS for a in argv):
        return None
    resumes = [a for a in argv if a.startswith("resume=")]
    if not resumes:
        return None
    given_dir = resumes[-1].split("=", 1)[1]
    sweep_dir = _sweep_dir_checked(given_dir)
    task, hydra_overrides, saved = _saved_command(sweep_dir)
    given = [a for a in argv if _is_override(a) and not a.startswith("resume=")]
    launcher = [o for o in given if o.startswith(LAUNCHER_KEYS)]
    _refuse_changes(sweep_dir, [o for o in given if o not in launcher],
                    task + [o for o in hydra_overrides if not _key(o).startswith(REPLACED_HYDRA_KEYS)])
    _refuse_live_slurm_jobs(sweep_dir, saved)
    kept_hydra = [o for o in hydra_overrides if not _key(o).startswith(REPLACED_HYDRA_KEYS)
                  and not (launcher and _key(o).startswith(LAUNCHER_KEYS))]
    flags = [a for a in argv if not _is_override(a)]
    sources = OmegaConf.select(saved, "hydra.runtime.config_sources", default=None) or []
    config_dirs = [str(s.path) for s in sources if s.get("provider") == "command-line"]
    if config_dirs and not any(a in ("-cd", "--config-dir") or a.startswith("--config-dir=") for a in flags):
        flags += [f"--config-dir={d}" for d in config_dirs]
    return [*flags, *task, *kept_hydra, *launcher, f"hydra.sweep.dir={_hydra_string(str(sweep_dir))}"]


def _hydra_string(value: str) -> str:
    """A path as an override value: quoted where Hydra's grammar would read its characters."""
    if all(c.isalnum() or c in "/._-" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- the plan: what each job of a sweep does when the sweep is launched into its directory again ----

@dataclass
class SweepPlan:
    sweep_dir: Path
    states: list[str] = field(default_factory=list)  # per job: kept, continue, again (failed), start

    @property
    def continuing(self) -> bool:
        return any(s != "start" for s in self.states)

    def blocks(self, size: int) -> list[tuple[int, int]]:
        """(first job, end) of each run of jobs to launch, at most `size` long: the launchers number
        the jobs of one launch consecutively, so a kept job splits the launches around it."""
        out, start = [], None
        for i, state in enumerate([*self.states, "kept"]):
            if state != "kept" and start is None:
                start = i
            if start is not None and (state == "kept" or i - start == size):
                out.append((start, i))
                start = None if state == "kept" else i
        return out

    def summary(self) -> str:
        n = len(self.states)
        if all(s == "kept" for s in self.states):
            return (f"sweep {self.sweep_dir}: all {n} jobs had finished; nothing to train "
                    f"(its report is written again).")
        said = {"kept": "finished, not trained again", "continue": "from the last checkpoint",
                "again": "failed, run again (from the last checkpoint where there is one)",
                "start": "from the start (never started, or stopped before a first checkpoint)"}
        parts = []
        for state, text in said.items():
            nums = [f"#{i}" for i, x in enumerate(self.states) if x == state]
            if nums:
                parts.append(f"{'job' if len(nums) == 1 else 'jobs'} {', '.join(nums)}: {text}")
        return f"resuming sweep {self.sweep_dir} ({n} jobs): " + "; ".join(parts)


def job_dirs(sweep_dir: Path) -> dict[tuple[str, ...], Path]:
    """Each job directory of a sweep by its overrides (Hydra's own .hydra/overrides.yaml)."""
    out = {}
    for overrides in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        try:
            out[tuple(str(o) for o in OmegaConf.load(overrides))] = overrides.parent.parent
        except Exception:
            continue  # a job directory cut short while Hydra wrote it: the job starts again
    return out


def _state(run_dir: Path | None, num: int) -> str:
    if run_dir is None:
        return "start"
    status = read_status(run_dir)
    if status.get("status") in KEPT:
        return "kept"
    if status.get("status") == "running" and (run_dir / LOCK_FILE).exists():
        holder = read_holder(run_dir / LOCK_FILE) or status
        if not holder_gone(holder):
            # A live process on this host, or one elsewhere that may still train there (a SLURM
            # job the queue still holds): launching the job again would train it twice.
            raise UserError(f"job #{num} of the sweep ({run_dir}) is still running: {holder_named(holder)} "
                            f"holds it. Wait for the sweep to end or {stop_hint(holder)}; if no process "
                            f"trains there any more (its machine failed), delete {run_dir / LOCK_FILE}, then "
                            f"resume again.")
    if status.get("status") == "failed":
        return "again"
    return "continue" if (run_dir / "checkpoints" / "last.ckpt").is_file() else "start"


def sweep_plan(sweep_dir: Path, jobs: list[list[str]]) -> SweepPlan:
    """What each of the sweep's jobs does (in the launch order, so in Hydra's job numbering)."""
    found = job_dirs(sweep_dir) if Path(sweep_dir).is_dir() else {}
    return SweepPlan(Path(sweep_dir), [_state(found.get(tuple(job)), i) for i, job in enumerate(jobs)])
