"""The Optuna search (hydra/sweeper=optuna) through the CLI on real CIFAR-10 subsets, checked against
Optuna's own view of the study and the jobs' run directories, and the promotion of a trial."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from omegaconf import OmegaConf

from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import unique_suffix
from aprelu_exp.search.space import format_value, parse_space
from inprocess import run_module

REPO = Path(__file__).resolve().parents[1]
SMALL = ["data.train_subset=500", "data.test_subset=200", "logger=none", "trainer.enable_model_summary=false"]
SPACE = ["model.reduction=choice(4,8,16)", "optim.lr=tag(log, interval(0.02, 0.3))"]


def _cli(args, env, timeout=600, module="aprelu_exp"):
    return run_module(module, args, env=env)


def _search(root: Path, env, *extra: str):
    return _cli(["-m", "hydra/sweeper=optuna", f"run_root={root}", *SMALL, *extra], env)


def _study(root: Path, name: str | None = None) -> optuna.Study:
    storage = f"sqlite:///{root / 'optuna.db'}"
    if name is None:
        (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return optuna.load_study(study_name=name, storage=storage)


def _metrics(run_dir: Path) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _sweeps(root: Path) -> list[Path]:
    return sorted((root / "multirun").iterdir()) if (root / "multirun").is_dir() else []


# -- the space, against Optuna's distributions -----------------------------------------------------

def test_space_maps_hydra_grammar_to_optuna_distributions():
    space = parse_space({"model.reduction": "choice(4, 8, 16)", "optim.momentum": "interval(0.8, 0.99)"},
                        ["optim.lr=tag(log, interval(0.02, 0.3))", "model.stem_channels=range(16, 65, 16)",
                         "model/activation=choice(aprelu,relu)", "optim.momentum=0.95", "budget=4"])
    assert space.distributions == {
        "model.reduction": CategoricalDistribution([4, 8, 16]),
        "optim.lr": FloatDistribution(0.02, 0.3, log=True),
        "model.stem_channels": IntDistribution(16, 64, step=16),
        "model/activation": CategoricalDistribution(["aprelu", "relu"]),
    }
    # A plain value on the command line fixes a key the search config would have searched.
    assert space.fixed == ["optim.momentum=0.95", "budget=4"]
    with pytest.raises(UserError, match="layout=choice"):
        parse_space(None, ["model.stages=choice([1],[2])"])
    with pytest.raises(UserError, match="empty"):
        parse_space(None, ["optim.lr=interval(0.3, 0.02)"])
    with pytest.raises(UserError, match="no dimension"):
        parse_space(None, ["model.reduction=8"])


@pytest.mark.parametrize("value", [0.08376424680586954, 1e-30, 16, True, None, "relu", "has space", "12"])
def test_trial_values_survive_the_override_grammar(value):
    parsed = OverridesParser.create().parse_override(f"k={format_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_storage_strings(tmp_path, monkeypatch):
    from aprelu_exp.search.storage import normalise

    monkeypatch.chdir(tmp_path)
    assert normalise(None, "runs") == f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    assert normalise("sqlite:///rel/s.db", "runs") == f"sqlite:///{tmp_path / 'rel' / 's.db'}"
    assert normalise("journal:j/s.log", "runs") == f"journal:{tmp_path / 'j' / 's.log'}"
    assert normalise("postgresql://u@db.lab/optuna", "runs") == "postgresql://u@db.lab/optuna"
    for bad in ("studies.db", "journal:", "redis://host"):
        with pytest.raises(UserError, match="SQLAlchemy URL|journal"):
            normalise(bad, "runs")


def _open_at(url: str, start: float) -> str:
    import time

    from aprelu_exp.search.storage import open_storage

    while time.time() < start:
        pass
    try:
        open_storage(url)
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def test_sweepers_opening_a_new_storage_together_all_get_it(tmp_path):
    # Without the retry about one process in four lost the race to create the tables here.
    import multiprocessing
    import time

    with multiprocessing.get_context("fork").Pool(3) as pool:
        for i in range(5):
            start = time.time() + 0.5
            assert pool.starmap(_open_at, [(f"sqlite:///{tmp_path / f's{i}.db'}", start)] * 3) == ["ok"] * 3


# -- a real search ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory, cifar_root):
    import os

    env = {**os.environ, "APRELU_DATA_ROOT": str(cifar_root), "PYTHONUNBUFFERED": "1"}
    root = tmp_path_factory.mktemp("search")
    first = _search(root, env, "budget=2", *SPACE, "hydra.sweeper.n_trials=4")
    return root, env, first


def test_a_four_trial_search_matches_its_jobs(searched):
    root, _, out = searched
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = _sweeps(root)
    ref = json.loads((sweep / "search.json").read_text())
    assert ref["storage"] == f"sqlite:///{root / 'optuna.db'}"
    study = _study(root, ref["study"])
    assert len(study.trials) == 4
    # The default median pruner judges from the second epoch on, and never at the last one.
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    for t in study.trials:
        run = Path(t.user_attrs["run_dir"])
        assert run.parent == sweep and run.name.startswith(f"trial_{t.number:04d}")
        cfg = OmegaConf.load(run / "config.yaml")
        # The job trained exactly the point the sampler drew.
        assert cfg.model.reduction == t.params["model.reduction"] in (4, 8, 16)
        assert cfg.optim.lr == t.params["optim.lr"] and 0.02 <= cfg.optim.lr <= 0.3
        assert (cfg.trial.number, cfg.trial.study) == (t.number, study.study_name)
        rows = _metrics(run)
        # The job reported every epoch's val_acc_article to its trial (what the pruner reads).
        assert t.intermediate_values == {int(r["epoch"]): float(r["val_acc_article"]) for r in rows}
        assert json.loads((run / "status.json").read_text())["status"] == "finished" and len(rows) == 2
        assert t.value == pytest.approx(float(rows[-1]["val_acc_article"]))
    report = (sweep / "report.md").read_text()
    best = study.best_trial
    assert f"## Study `{study.study_name}`" in report and f"**Best: trial {best.number}**" in report
    assert " ".join(best.user_attrs["overrides"]) in report
    # The study's storage is named whole (it leads back to the study); no other absolute path.
    storage_url = f"sqlite:///{root / 'optuna.db'}"
    assert storage_url in report
    for written in (report, (sweep / "runs.csv").read_text(), (sweep / "study_trials.csv").read_text()):
        written = written.replace(storage_url, "")
        assert str(root) not in written and str(root.parent) not in written  # no absolute run root
    for name in ("study_trials.csv", "study_history.png", "study_epochs.png", "study_slice.png"):
        assert (sweep / name).stat().st_size > 0, name
    assert "Parameter importances (fANOVA)" in report or len(
        [t for t in study.trials if t.state == TrialState.COMPLETE]) < 3


def test_the_same_command_continues_the_study(searched):
    root, env, first = searched
    assert first.returncode == 0
    before = [(t.number, t.params, t.value, t.state) for t in _study(root).trials]
    again = _search(root, env, "budget=2", *SPACE, "hydra.sweeper.n_trials=2")
    assert again.returncode == 0, again.stderr[-3000:]
    study = _study(root)  # still the only study in the storage
    assert len(study.trials) == 6
    assert [(t.number, t.params, t.value, t.state) for t in study.trials[:4]] == before
    # The continued sampler is not replaying the first invocation's draws.
    assert {t.params["optim.lr"] for t in study.trials[4:]}.isdisjoint({p["optim.lr"] for _, p, _, _ in before})
    second = _sweeps(root)[-1]
    assert sorted(p.name.split("_")[1] for p in second.glob("trial_*")) == ["0004", "0005"]


def test_promote_writes_the_best_trial_as_a_record(searched):
    root, env, first = searched
    assert first.returncode == 0
    study = _study(root)
    best = study.best_trial
    name = f"record_t{unique_suffix()}"
    path = REPO / "conf" / "experiment" / f"{name}.yaml"
    sweep = _sweeps(root)[0]
    try:
        out = _cli(["promote", str(sweep), "--name", name], env, module="aprelu_exp.records")
        assert out.returncode == 0, out.stderr
        text = path.read_text()
        assert text.startswith("# @package _global_")
        saved = OmegaConf.load(path)
        assert list(saved.defaults) == ["record_16", "_self_"]
        assert saved.record.provenance == "searched" and saved.record.parent == "record_16"
        assert study.study_name in saved.record.source and f"trial {best.number}" in saved.record.source
        # The storage leads back to the study without a machine's path: the run root lies outside
        # the project, so relative to it (`search --run-root DIR`); the study's own section in the
        # sweep report, in the run folder, names its absolute URL.
        assert (f"Optuna study {study.study_name} in sqlite:///optuna.db (relative to run_root), "
                f"trial {best.number}:") in saved.record.source
        assert str(root) not in text and str(root.parent) not in text
        assert json.loads((sweep / "search.json").read_text())["run_root"] == str(root)
        assert f"Storage `sqlite:///{root / 'optuna.db'}`;" in (sweep / "report.md").read_text()
        # Exactly the trial's changes against record 16 (lr 0.1, reduction 16), nothing else.
        expected = {f"optim.lr: 0.1 -> {best.params['optim.lr']!r}"}
        if best.params["model.reduction"] != 16:
            expected.add(f"model.reduction: 16 -> {best.params['model.reduction']}")
        diff = _cli(["diff", "record_16", name], env, module="aprelu_exp.records")
        assert diff.returncode == 0, diff.stderr
        assert set(diff.stdout.splitlines()[1:]) == expected
        listing = _cli(["list"], env, module="aprelu_exp.records").stdout
        assert f"└── {name}  [searched]  parent: record_16" in listing
        # It trains: one small epoch of the promoted record.
        run = _cli([f"experiment={name}", f"run_root={root / 'promoted'}", *SMALL, "data.train_subset=200",
                    "trainer.max_epochs=1"], env)
        assert run.returncode == 0, run.stderr[-3000:]
        (run_dir,) = [p.parent for p in (root / "promoted").rglob("summary.json")]
        cfg = OmegaConf.load(run_dir / "config.yaml")
        assert cfg.record.name == name and cfg.optim.lr == best.params["optim.lr"]
        # An existing record is kept unless --force.
        again = _cli(["promote", str(sweep), "--name", name], env, module="aprelu_exp.records")
        assert again.returncode == 2 and "--force" in again.stderr and path.read_text() == text
    finally:
        path.unlink(missing_ok=True)


def test_a_pruned_trial_reads_pruned_everywhere(tmp_path, cli_env):
    # A deterministic pruning: the objective is the epoch's lr, and the threshold pruner stops any
    # trial below 0.01 from its first epoch on; the grid tries both values. Journal storage.
    journal = tmp_path / "studies.log"
    out = _search(tmp_path, cli_env, "trainer.max_epochs=2", "optim.lr=choice(0.001,0.1)",
                  "hydra/sweeper/sampler=grid", "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=0.01",
                  "hydra.sweeper.objective.metric=lr", f"hydra.sweeper.storage=journal:{journal}",
                  "hydra.sweeper.n_trials=5")
    assert out.returncode == 0, out.stderr[-3000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    by_lr = {t.params["optim.lr"]: t for t in study.trials}
    assert len(study.trials) == 2  # the grid's two points, though five trials were allowed
    pruned, kept = by_lr[0.001], by_lr[0.1]
    assert pruned.state == TrialState.PRUNED and pruned.intermediate_values == {1: 0.001}
    assert kept.state == TrialState.COMPLETE and kept.value == 0.1
    run = Path(pruned.user_attrs["run_dir"])
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "pruned" and "ThresholdPruner after epoch 1" in status["error"]
    assert len(_metrics(run)) == 1 and (run / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run / "summary.json").read_text())["status"] == "pruned"
    sweep = run.parent
    with open(sweep / "runs.csv", newline="") as fh:
        assert sorted(r["status"] for r in csv.DictReader(fh)) == ["finished", "pruned"]
    assert "complete 1, pruned 1" in (sweep / "report.md").read_text()


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path, cli_env):
    # reduction 1000 cannot be built (refused before a job starts); lr 1e30 trains into nan.
    out = _search(tmp_path, cli_env, "trainer.max_epochs=2", "optim.lr=choice(0.05,1e30)",
                  "model.reduction=choice(8,1000)", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "cannot run" in out.stdout + out.stderr  # the probe's warning about reduction=1000
    trials = {(t.params["optim.lr"], t.params["model.reduction"]): t for t in _study(tmp_path).trials}
    assert len(trials) == 4
    assert trials[0.05, 8].state == TrialState.COMPLETE and math.isfinite(trials[0.05, 8].value)
    nan = trials[1e30, 8]
    assert nan.state == TrialState.FAIL and "nan" in nan.user_attrs["error"]
    assert json.loads((Path(nan.user_attrs["run_dir"]) / "status.json").read_text())["status"] == "failed"
    for lr in (0.05, 1e30):
        t = trials[lr, 1000]
        assert t.state == TrialState.FAIL and "model.reduction=1000" in t.user_attrs["error"]
        assert "run_dir" not in t.user_attrs  # no job was launched for an impossible network
    (sweep,) = _sweeps(tmp_path)
    assert len(list(sweep.glob("trial_*"))) == 2


@pytest.mark.parametrize("space, message", [
    ("model.reductoin=choice(4,8)", "model.reductoin is not a key"),
    ("model.reduction=choice(1000,2000)", "no point of the search space can run"),
])
def test_a_bad_space_is_refused_before_any_trial(tmp_path, cli_env, space, message):
    out = _search(tmp_path, cli_env, "trainer.max_epochs=1", space)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not _sweeps(tmp_path)
    db = tmp_path / "optuna.db"
    assert not db.exists() or not optuna.get_all_study_summaries(f"sqlite:///{db}")


@pytest.mark.slow
def test_two_sweeper_processes_share_one_study(tmp_path, cli_env):
    # The scale-out path: one sweeper per machine on one storage; each its own sampler seed.
    storage = tmp_path / "shared.db"
    common = ["trainer.max_epochs=1", *SPACE, "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=shared",
              f"hydra.sweeper.storage=sqlite:///{storage}"]
    procs = [subprocess.Popen([sys.executable, "-m", "aprelu_exp", "-m", "hydra/sweeper=optuna",
                               f"run_root={tmp_path / f'machine{i}'}", *SMALL, *common,
                               f"hydra.sweeper.sampler.seed={i}"], cwd=REPO, env=cli_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{storage}")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    runs = [Path(t.user_attrs["run_dir"]) for t in study.trials]
    assert {r.parents[2].name for r in runs} == {"machine0", "machine1"}
    assert len({(t.params["model.reduction"], t.params["optim.lr"]) for t in study.trials}) == 4


@pytest.mark.slow
def test_trials_run_in_parallel_through_the_joblib_launcher(tmp_path, cli_env):
    # n_jobs trials per batch, each in its own joblib worker process, each reporting to its trial.
    out = _search(tmp_path, cli_env, "budget=2", *SPACE, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=none")
    assert out.returncode == 0, out.stderr[-3000:]
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    pids = set()
    for t in study.trials:
        run = Path(t.user_attrs["run_dir"])
        assert t.intermediate_values == {int(r["epoch"]): float(r["val_acc_article"]) for r in _metrics(run)}
        pids.add(json.loads((run / "status.json").read_text())["pid"])
    assert len(pids) == 2  # two worker processes, not the sweeper's own


@pytest.mark.slow
def test_a_search_with_replicates_runs_every_trial_with_each_seed(tmp_path, cli_env):
    out = _search(tmp_path, cli_env, "budget=1", "model.reduction=choice(4,16)", "hydra.sweeper.n_trials=2",
                  "replicates=2", "seed=3", "hydra/sweeper/pruner=none")
    assert out.returncode == 0, out.stderr[-3000:]
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for t in study.trials:
        reps = t.user_attrs["replicates"]
        assert [r["seed"] for r in reps] == [3, 4]
        values = []
        for rep in reps:
            cfg = OmegaConf.load(Path(rep["run_dir"]) / "config.yaml")
            assert cfg.seed == rep["seed"] and cfg.model.reduction == t.params["model.reduction"]
            values.append(float(_metrics(rep["run_dir"])[-1]["val_acc_article"]))
        # The trial's value is the mean over its seeds, read back from the runs' own metrics.
        assert t.value == pytest.approx(sum(values) / 2)
    (sweep,) = _sweeps(tmp_path)
    groups = list(csv.DictReader(open(sweep / "groups.csv")))
    assert {g["n"] for g in groups} == {"2"} and len({g["group"] for g in groups}) == 2
