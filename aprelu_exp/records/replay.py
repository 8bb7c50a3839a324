"""`records replay [RECORD ...] --seeds N [overrides]`: the tuning log trained again, every record with
the same seeds and settings, as one Hydra multirun (records x seeds) through the main command, so
that every launcher runs it (basic, joblib, submitit/SLURM); then one table of the steps
(report/replay.py).

A replay lives in one folder under run_root, `replay-<time>-<id>/`: the sweep's jobs, the replay's
own account of itself (`replay.json`), and its tables. The same command again finds that folder by
what it trains and goes on with it (the sweep's own resume: finished runs are kept, a run with a
checkpoint continues, the rest start); so does `python -m aprelu_exp -m resume=<folder>`.
"""
from __future__ import annotations

import datetime as dt
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from aprelu_exp.compose import compose_config, compose_record, config_dir_args, user_config_dir
from aprelu_exp.console.child import run_child
from aprelu_exp.console.stop_command import invoked_as
from aprelu_exp.errors import UserError
from aprelu_exp.parts import closest
from aprelu_exp.records.lineage import lineage, lineage_order
from aprelu_exp.report.evidence import METRIC_NAMES, MIN_RUNS_FOR_VERDICT
from aprelu_exp.report.replay import SPEC_FILE, read_spec, write_replay_tables
from aprelu_exp.runs.rundir import cpu_model_name, read_metrics_rows, read_status, unique_suffix, write_json_atomic
from aprelu_exp.runs.stop import signal_name
from aprelu_exp.settings import config_diff, is_setting_override
from aprelu_exp.sweep.resume import KEPT, SWEEP_FILE, job_dirs
from aprelu_exp.training.measured_rates import network_multiply_adds, read_bench

DEFAULT_METRIC = "final_val_acc_article"
LAUNCHER_KEYS = ("hydra/launcher", "hydra.launcher.")
# Overrides a replay sets itself: each with what to give instead.
OWN_KEYS = {
    "experiment": "the replay trains the records it is given: name them (records replay record_15 record_16), "
                  "or give none for the whole lineage",
    "seed": "give the number of seeds with --seeds N (seeds 0..N-1; --seed S starts them at S)",
    "replicates": "give the number of seeds with --seeds N",
    "resume": "continue a replay with the same command again, or records replay --resume <replay folder>",
    "hydra.sweep.dir": "a replay writes into its own folder under run_root (run_root=DIR moves it)",
    "hydra.sweep.subdir": "a replay names its jobs itself",
    "hydra/sweeper": "a replay is a grid of records x seeds, run by the project's own sweeper",
}


@dataclass
class Replay:
    """What a replay trains and where: its records in lineage order, each with its step (parent and
    stated change), the seeds, the settings on every run, the metric it ranks by."""

    records: list[str]
    steps: dict[str, dict]
    seeds: list[int]
    overrides: list[str]
    metric: str
    run_root: Path
    configs: dict[str, DictConfig] = field(default_factory=dict)
    launcher: list[str] = field(default_factory=list)
    folder: Path | None = None

    def identity(self) -> dict:
        """What makes two replays the same replay (the launcher is not part of it: it changes where
        the runs train, not what they train)."""
        return {"records": self.records, "seeds": self.seeds,
                "overrides": [o for o in self.overrides if is_setting_override(o)], "metric": self.metric,
                "config_dir": str(user_config_dir()) if user_config_dir() else None}

    def jobs(self) -> list[list[str]]:
        """Each job's overrides as the sweep records them (its .hydra/overrides.yaml), in job order."""
        return [[f"experiment={r}", f"seed={s}", *self.overrides] for r in self.records for s in self.seeds]

    def sweep_command(self) -> list[str]:
        """The main command that trains the replay into its folder (or goes on with it)."""
        head = [sys.executable, "-m", "aprelu_exp", *config_dir_args(), "-m"]
        if (self.folder / SWEEP_FILE).is_file():
            return [*head, f"resume={self.folder}", *self.launcher]
        return [*head, f"experiment={','.join(self.records)}", f"seed={','.join(map(str, self.seeds))}",
                *self.overrides, *self.launcher, f"hydra.sweep.dir={self.folder}"]


def choose_records(names: list[str], records: dict[str, dict]) -> list[str]:
    """The records a replay trains, in lineage order: the whole lineage without names; with names,
    those, each with its parent where the parent is needed to judge its step. A list whose first
    record is an ancestor of all the others starts there: that first record is the point the steps
    are measured from, and its own parent is not trained."""
    order = lineage_order(records)
    if not names:
        return order
    for name in names:
        if name not in records:
            near = closest(name, order)
            raise UserError(f"no record named {name!r}" + (f"; did you mean {' or '.join(near)}?" if near else "")
                            + f" The records are: {', '.join(order)} (`records list` draws the lineage).")
    wanted = [n for n in order if n in set(names)]

    def ancestors(name: str) -> set[str]:
        out, parent = set(), records[name].get("parent")
        while parent in records and parent not in out:
            out.add(parent)
            parent = records[parent].get("parent")
        return out

    start = wanted[0] if len(wanted) > 1 and all(wanted[0] in ancestors(n) for n in wanted[1:]) else None
    chosen = set(wanted)
    for name in wanted:
        parent = records[name].get("parent")
        if name != start and parent in records:
            chosen.add(parent)
    return [n for n in order if n in chosen]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def check_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(the settings for every run, the launcher's overrides); a key the replay sets itself, or
    something that is no override, is refused."""
    settings, launcher = [], []
    for o in overrides:
        if "=" not in o or o.startswith("-"):
            raise UserError(f"{o!r} is not an override; a replay takes key=value overrides for every run "
                            f"(budget=50 data.val_split=5000 perf=fast ...), after its records and options.")
        key = _key(o)
        if key.startswith(LAUNCHER_KEYS):
            launcher.append(o)
        elif key in OWN_KEYS or key.startswith("hydra/sweeper"):
            raise UserError(f"{o}: {OWN_KEYS.get(key, OWN_KEYS['hydra/sweeper'])}.")
        else:
            settings.append(o)
    return settings, launcher


def own_keys(name: str, parent: str | None, base: dict[str, DictConfig]) -> dict[str, tuple]:
    """The settings a record's step changed against its parent: key -> (parent's value, record's)."""
    if not parent or parent not in base:
        return {}
    return {k: (a, b) for k, a, b in config_diff(base[parent], base[name])}


def refuse_erasing_overrides(names: list[str], steps: dict, base: dict, configs: dict, overrides: list[str]) -> None:
    """An override that sets a key some replayed step changes would replay every record with one
    value there: the step would no longer be the log's step."""
    for name in names:
        keys = own_keys(name, steps[name]["parent"], base)
        for key, before, after in config_diff(base[name], configs[name]):
            if key in keys:
                # Which override it is: each one alone, composed (only on the way to the refusal).
                given = [o for o in overrides if any(k == key for k, _, _ in
                                                     config_diff(base[name], compose_record(name, [o])))]
                said = " ".join(given) if given else f"the overrides ({' '.join(overrides)})"
                parent_value, own_value = keys[key]
                raise UserError(
                    f"{said} would set {key} (to {after!r}) on every run, but "
                    f"{key} is what {name}'s step changed ({parent_value!r} in {steps[name]['parent']} -> "
                    f"{own_value!r}): replayed with it, the step would not be the one the log made. Leave it "
                    f"out, or replay records whose steps do not set {key}.")


def plan_replay(names: list[str], seeds: int, first_seed: int, overrides: list[str], metric: str) -> Replay:
    """Everything a replay needs, checked before anything trains (UserError, exit 2, otherwise)."""
    if seeds < 2:
        raise UserError(f"--seeds {seeds}: a replay compares each record with its parent over seeds; with one "
                        f"seed per record there is no interval of a mean and no paired comparison (a seed's "
                        f"spread is as large as most steps of the log). Give --seeds 3 (2 at the least; "
                        f"{MIN_RUNS_FOR_VERDICT} or more for a verdict).")
    if metric not in METRIC_NAMES:
        raise UserError(f"--metric {metric}: a replay ranks by one of {', '.join(METRIC_NAMES)}.")
    settings, launcher = check_overrides(overrides)
    records = lineage()
    trained = choose_records(names, records)
    steps = {n: {"parent": records[n].get("parent") if records[n].get("parent") in records else None,
                 "change": records[n].get("change"), "provenance": records[n].get("provenance")} for n in trained}
    needed = set(trained) | {s["parent"] for s in steps.values() if s["parent"]}
    base = {n: compose_record(n) for n in sorted(needed)}
    configs = {n: compose_record(n, settings) for n in trained}
    refuse_erasing_overrides(trained, steps, base, configs, settings)
    run_root = Path(str(compose_config(settings).run_root))
    return Replay(trained, steps, [first_seed + i for i in range(seeds)], settings, metric, run_root, configs,
                  launcher)


def validated_on(cfg: DictConfig) -> str:
    split = cfg.data.get("val_split")
    if split:
        return f"{split} held-out training images (data.val_split)"
    return "the test set, the article's protocol"


def budget_text(cfg: DictConfig) -> str:
    data = cfg.data
    images = "all 50,000 training images" if data.get("train_subset") is None else \
        f"{data.train_subset} training images"
    if cfg.get("budget") is not None:
        return f"a budget of {cfg.budget} epoch{'s' if int(cfg.budget) != 1 else ''} on {images}"
    if cfg.trainer.get("max_epochs") not in (None, -1):
        return f"{cfg.trainer.max_epochs} epochs (the records' schedules truncated) on {images}"
    return f"each record's own schedule on {images}"


def find_folder(replay: Replay) -> Path | None:
    """The latest replay folder under run_root that trains exactly what this command trains."""
    if not replay.run_root.is_dir():
        return None
    for folder in sorted(replay.run_root.glob("replay-*"), reverse=True):
        spec = read_spec(folder)
        if spec and spec.get("identity") == replay.identity():
            return folder
    return None


def spec_of(replay: Replay, command: str) -> dict:
    first = replay.configs[replay.records[0]]
    return {"kind": "replay", "identity": replay.identity(), "records": replay.records, "steps": replay.steps,
            "seeds": replay.seeds, "overrides": replay.overrides, "metric": replay.metric,
            "validated_on": validated_on(first), "budget_text": budget_text(first), "command": command,
            "created": dt.datetime.now().isoformat(timespec="seconds")}


def job_progress(replay: Replay) -> list[dict]:
    """Each job of the replay: its record, seed, epochs done of its length, and its state."""
    found = {}
    if replay.folder and replay.folder.is_dir():
        # A replay's jobs differ in their record and seed alone (Hydra writes the other overrides
        # back in its own spelling: false as False).
        for overrides, run_dir in job_dirs(replay.folder).items():
            given = dict(o.split("=", 1) for o in overrides if o.startswith(("experiment=", "seed=")))
            found[(given.get("experiment"), given.get("seed"))] = run_dir
    out = []
    for job in replay.jobs():
        record, seed = job[0].split("=", 1)[1], int(job[1].split("=", 1)[1])
        run_dir = found.get((record, str(seed)))
        status = read_status(run_dir).get("status") if run_dir else None
        epochs = len(read_metrics_rows(run_dir)) if run_dir else 0
        out.append({"record": record, "seed": seed, "dir": run_dir, "epochs_done": epochs,
                    "done": status in KEPT, "status": status or "not started"})
    return out


def describe_plan(replay: Replay) -> str:
    """What --plan prints: the runs, how many are done, and how long the rest would take here."""
    jobs = job_progress(replay)
    done = sum(j["done"] for j in jobs)
    lines = [f"replay of {len(replay.records)} records x {len(replay.seeds)} seeds = {len(jobs)} runs "
             f"({', '.join(replay.records)}; seeds {', '.join(map(str, replay.seeds))}); "
             f"{done} of {len(jobs)} already done" + (f" in {replay.folder}" if replay.folder else
                                                      f"; it would write into {replay.run_root}/replay-<time>-<id>/"),
             f"settings on every run: {' '.join(replay.overrides) or 'none'}"]
    times = estimate_times(replay)
    for j in jobs:
        length = times["epochs"][j["record"]]
        state = "done" if j["done"] else (f"{j['status']}, {j['epochs_done']} of {length} epochs kept"
                                          if j["epochs_done"] else "to train")
        lines.append(f"  {j['record']:<14} seed {j['seed']}: {state}" +
                     (f"; about {_duration(times['per_run'][j['record']] * (1 - j['epochs_done'] / length))}"
                      if not j["done"] and times["per_run"].get(j["record"]) is not None else ""))
    lines.append(times["summary"])
    return "\n".join(lines)


def run_length(cfg: DictConfig) -> int:
    """The epochs one run of this config trains (budget, else max_epochs, else the schedule's own)."""
    if cfg.get("budget") is not None:
        return int(cfg.budget)
    if cfg.trainer.get("max_epochs") not in (None, -1):
        return int(cfg.trainer.max_epochs)
    return int(cfg.schedule.epochs)


def images(cfg: DictConfig) -> tuple[int, int, int]:
    """(training images, validation images evaluated each epoch, test images evaluated at the end)."""
    data = cfg.data
    train = 50_000 if data.get("train_subset") is None else min(int(data.train_subset), 50_000)
    test = 10_000 if data.get("test_subset") is None else min(int(data.test_subset), 10_000)
    split = int(data.get("val_split") or 0)
    return train - split, split or test, test if split else 0


def run_device_of(cfg: DictConfig) -> tuple[str, str | None]:
    """(device type, model name) a run of cfg trains on here, as the bench names them."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda", "auto"):
        # deferred: only an estimate for a run that may use a GPU asks torch about one
        import torch

        if torch.cuda.is_available():
            return "cuda", torch.cuda.get_device_name()
    return "cpu", cpu_model_name()


def precision_rates(bench: dict, cfg: DictConfig) -> tuple[str, dict]:
    """The bench's rates in the arithmetic the runs train in (perf=fast: the faster one measured)."""
    measured = bench["by_precision"]
    wanted = {"bf16": "bf16-mixed", "32": "32-true"}.get(str(cfg.perf.precision))
    if str(cfg.perf.precision) == "trainer":
        wanted = str(cfg.trainer.precision)
    if str(cfg.perf.precision) == "fast" or wanted not in measured:
        wanted = min(measured, key=lambda p: measured[p]["train_s_per_image"])
    return wanted, measured[wanted]


def estimate_times(replay: Replay) -> dict:
    """Each record's run length and time here, from the bench's epoch rates on this device scaled by
    the record's multiply-adds against the benched network's; a summary line for the whole replay."""
    first = replay.configs[replay.records[0]]
    device_type, name = run_device_of(first)
    bench = read_bench(device_type, name or "") if name else None
    epochs = {r: run_length(replay.configs[r]) for r in replay.records}
    per_run: dict[str, float | None] = {r: None for r in replay.records}
    if bench is None:
        return {"epochs": epochs, "per_run": per_run, "summary":
                f"no estimate: the bench has not measured this machine ({device_type}: {name or 'unknown'}); "
                f"`python -m aprelu_exp.bench --windows 2 --steps 1 --epoch-subset 200 --eval-images 200` "
                f"(about a minute) measures it for the next --plan."}
    precision, _ = precision_rates(bench, first)
    unscaled = []
    for r in replay.records:
        cfg = replay.configs[r]
        macs = network_multiply_adds(cfg.model)
        if macs is None:
            unscaled.append(r)
            continue
        _, rate = precision_rates(bench, cfg)
        scale = macs / bench["macs_per_image"]
        train, val, test = images(cfg)
        epoch_s = scale * (train * rate["train_s_per_image"] + 2 * val * rate["eval_s_per_image"])
        per_run[r] = epochs[r] * epoch_s + scale * 2 * test * rate["eval_s_per_image"]
    left = sum(per_run[j["record"]] * (1 - j["epochs_done"] / epochs[j["record"]])
               for j in job_progress(replay) if not j["done"] and per_run[j["record"]] is not None)
    summary = (f"estimate: about {_duration(left)} of training left here ({device_type}: {name}; the bench of "
               f"{bench['date']} measured {bench['record']} in {precision}, the other records are scaled by their "
               f"multiply-adds; the runs' start-up and any compilation come on top)")
    if unscaled:
        summary += f"; no estimate for {', '.join(unscaled)} (a network the estimate cannot count)"
    return {"epochs": epochs, "per_run": per_run, "summary": summary}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def resume_folder(given: str) -> Path:
    """The folder of `--resume DIR`, refused unless it is a replay's."""
    path = Path(given)
    if not path.is_dir():
        raise UserError(f"--resume {given}: no such folder; give a replay folder (<run_root>/replay-<time>-<id>/, "
                        f"it holds {SPEC_FILE}).")
    if read_spec(path) is None:
        what = ("a sweep (continue it with python -m aprelu_exp -m resume=" + given + ")"
                if (path / SWEEP_FILE).is_file() else "no replay")
        raise UserError(f"--resume {given} is {what}: it holds no {SPEC_FILE}, so no replay wrote it. Give the folder "
                        f"a `records replay` made (<run_root>/replay-<time>-<id>/), or start a replay without "
                        f"--resume.")
    return path


def replay_from_folder(folder: Path, launcher: list[str]) -> Replay:
    spec = read_spec(folder)
    ident = spec["identity"]
    replay = plan_replay(ident["records"], len(ident["seeds"]), ident["seeds"][0], spec["overrides"], ident["metric"])
    replay.records, replay.launcher, replay.folder = ident["records"], launcher, folder
    return replay


def run_replay(replay: Replay, command: str) -> int:
    """Train what the replay still lacks, then write its tables; the exit status of the command."""
    fresh = replay.folder is None
    if fresh:
        stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        replay.folder = replay.run_root / f"replay-{stamp}-{unique_suffix()}"
        replay.folder.mkdir(parents=True)
        write_json_atomic(replay.folder / SPEC_FILE, spec_of(replay, command))
    print(describe_plan(replay), flush=True)
    if fresh:
        print(f"replay: a new folder, {replay.folder}", flush=True)
    else:
        print(f"replay: going on with {replay.folder} (finished runs are kept)", flush=True)
    done = run_child(replay.sweep_command())
    again = f"{command} (or: python -m aprelu_exp -m resume={replay.folder})"
    if done.signum is not None or done.returncode in (130, 143):
        signum = done.signum or done.returncode - 128
        print(f"replay stopped by {signal_name(signum)}: {replay.folder} keeps every finished run and each "
              f"stopped run's last checkpoint. Continue with: {again}", file=sys.stderr, flush=True)
        return 128 + signum
    if done.returncode not in (0, 1):
        print(f"error: the replay's sweep ended with exit status {done.returncode}; see its output above and "
              f"{replay.folder}. Continue with: {again}", file=sys.stderr, flush=True)
        return done.returncode
    result = write_replay_tables(replay.folder)
    print_table(result["rows"])
    print(f"replay: {replay.folder}/replay.md, replay.csv, replay.png", flush=True)
    return done.returncode


def print_table(rows: list[dict]) -> None:
    for r in rows:
        mean = "" if r["mean"] != r["mean"] else f"{r['mean']:.4f}"
        diff = "" if r["diff_vs_parent"] != r["diff_vs_parent"] else f"{r['diff_vs_parent']:+.4f} vs {r['parent']}"
        article = f"; article {r['article']:.4f}" if r["article"] != "" else ""
        print(f"  {r['record']:<14} n={r['n']} {r['metric']} {mean}  {diff}  {r['verdict']}{article}")


def replay_command(records: list[str], seeds: int, first_seed: int, overrides: list[str], metric: str,
                   plan_only: bool, resume: str | None, new: bool, argv: list[str]) -> int:
    """The `records replay` command."""
    command = " ".join([invoked_as("aprelu_exp.records"), *map(shlex.quote, argv)])
    if resume:
        folder = resume_folder(resume)
        if records or overrides and any(not _key(o).startswith(LAUNCHER_KEYS) for o in overrides):
            raise UserError(f"--resume {resume} goes on with that replay as it was started "
                            f"({read_spec(folder)['command']}); give no records or settings beside it "
                            f"(only the launcher: hydra/launcher=..., hydra.launcher.*).")
        replay = replay_from_folder(folder, [o for o in overrides if _key(o).startswith(LAUNCHER_KEYS)])
        command = read_spec(folder)["command"]
    else:
        replay = plan_replay(records, seeds, first_seed, overrides, metric)
        replay.folder = None if new else find_folder(replay)
        if replay.folder is not None:
            command = read_spec(replay.folder)["command"]
    if plan_only:
        print(describe_plan(replay))
        return 0
    return run_replay(replay, command)

