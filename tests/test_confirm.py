"""A record is confirmed against its parent before it is written: N seeds each through the main
command, the comparison on the search's objective, the evidence in the record file."""
import re
import shutil
from pathlib import Path

import optuna
import pytest
import yaml

from aprelu_exp import compose
from aprelu_exp.compose import CONF_DIR
from aprelu_exp.console.child import ChildResult
from aprelu_exp.records import confirm as confirm_module
from aprelu_exp.records.confirm import merge_settings
from aprelu_exp.records.promote import promote
from aprelu_exp.runs.rundir import PROJECT_ROOT
from aprelu_exp.search.storage import normalise, recorded_storage, shared_storage, write_search_ref
from inprocess import REPO, run_module

TINY = ["data.train_subset=200", "data.test_subset=100", "trainer.max_epochs=1", "logger=none",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def _study(tmp_path, overrides):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("record", "record_16")
    study.set_user_attr("objective", {"metric": "val_acc_article", "direction": "maximize", "reduce": "last"})
    study.set_user_attr("trial_settings", {"record": "record_16", "budget": 4, "trainer.max_epochs": 5000,
                                           "data.train_subset": 10000, "data.test_subset": None,
                                           "perf.precision": "bf16", "perf.compile": "auto", "seed": 0})
    trial = study.ask()
    trial.set_user_attr("overrides", overrides)
    study.tell(trial, 0.5)
    return storage


def test_confirm_of_a_trial_that_equals_its_parent_is_refused(tmp_path):
    storage = _study(tmp_path, ["model.reduction=16"])  # record 16's own value
    out = run_module("aprelu_exp.records", ["promote", "s", "--storage", storage, "--name", "record_t0",
                                            "--confirm", "3", "budget=10"])
    assert out.returncode == 2, out.stderr
    assert "trains exactly what record_16 trains" in out.stderr and "nothing to promote or confirm" in out.stderr
    assert not (CONF_DIR / "experiment" / "record_t0.yaml").exists()


def test_settings_are_the_searchs_with_the_users_on_top():
    searched = {"budget": 4, "trainer.max_epochs": 5000, "data.train_subset": 10000, "data.test_subset": None,
                "perf.precision": "bf16"}
    assert merge_settings(searched, ["budget=10", "hydra/launcher=joblib"]) == [
        "budget=10", "data.train_subset=10000", "data.test_subset=null", "perf.precision=bf16",
        "hydra/launcher=joblib"]


@pytest.mark.slow
def test_confirm_trains_both_sides_and_writes_only_what_it_confirmed(tmp_path, cli_env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key, value in cli_env.items():
        monkeypatch.setenv(key, value)
    # A record of this test's own (record 16 with plain ReLU) in a config folder of the user's, on
    # the search path through --config-dir: the checkout's conf/ is never written.
    name = "record_tconfirm"
    mine = tmp_path / "my_conf"
    (mine / "experiment").mkdir(parents=True)
    path = mine / "experiment" / f"{name}.yaml"
    saved = (f"# @package _global_\n# a test record\ndefaults:\n- record_16\n- _self_\n\nrecord:\n  name: {name}\n"
             f"  parent: record_16\n  provenance: searched\n  source: test\n  change: relu\nmodel:\n"
             f"  activation: relu\n")
    path.write_text(saved)
    checkout_records = sorted((CONF_DIR / "experiment").iterdir())
    # Two seeds a side never make a verdict (at n=2 the t interval of the paired differences is
    # +-12.7 standard errors wide): nothing is written, exit 1.
    confirm = ["--config-dir", mine, "confirm", name, "--seeds", "2"]
    out = run_module("aprelu_exp.records", [*confirm, *TINY], env=cli_env, cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-3000:]
    assert f"not confirmed: {name} was not confirmed" in out.stderr
    assert re.search(r": no verdict \(n=2 < 3 runs per group\) \(", out.stderr), out.stderr
    assert path.read_text() == saved
    (confirm_dir,) = list((tmp_path / "runs" / "confirm").iterdir())
    for side in ("parent", "candidate"):
        runs = sorted(p for p in (confirm_dir / side).iterdir() if (p / "summary.json").exists())
        assert len(runs) == 2, side
    cfgs = [yaml.safe_load((p / "config.yaml").read_text())
            for p in sorted((confirm_dir / "candidate").iterdir()) if (p / "config.yaml").exists()]
    assert [c["seed"] for c in cfgs] == [0, 1] and {c["record"]["name"] for c in cfgs} == {name}
    assert {c["model"]["activation"] for c in cfgs} == {"relu"}
    assert f"{name},record_16," in (confirm_dir / "report" / "comparisons.csv").read_text()
    # --force writes the evidence, marked unconfirmed; `records list` shows it.
    forced = run_module("aprelu_exp.records", [*confirm, "--force", *TINY], env=cli_env, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr[-3000:]
    evidence = yaml.safe_load(path.read_text())["record"]["evidence"]
    assert evidence["confirmed"] is False and evidence["n"] == 2 and evidence["seeds"] == [0, 1]
    assert evidence["metric"] == "final_val_acc_article" and "data.train_subset=200" in evidence["settings"]
    assert evidence["ci"][0] <= evidence["mean"] <= evidence["ci"][1]
    assert path.read_text().startswith("# @package _global_")
    listing = run_module("aprelu_exp.records", ["--config-dir", mine, "list"]).stdout
    assert "UNCONFIRMED" in listing and name in listing
    assert name not in run_module("aprelu_exp.records", ["list"]).stdout
    assert sorted((CONF_DIR / "experiment").iterdir()) == checkout_records


def _commands_of_a_confirmation(tmp_path, monkeypatch, *extra):
    """`records promote --confirm 2` from a directory of its own, the training commands recorded
    instead of run: (the commands, the command's result, that directory)."""
    storage = _study(tmp_path, ["model.reduction=8"])
    commands = []

    def run_child(cmd):
        commands.append(cmd)
        return ChildResult(0, None)

    monkeypatch.setattr(confirm_module, "run_child", run_child)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_module("aprelu_exp.records", ["promote", "s", "--storage", storage, "--name", "record_tdir",
                                            "--confirm", "2", "budget=2", *extra], cwd=elsewhere)
    return commands, out, elsewhere


def _sweep_dirs(commands) -> list[Path]:
    return [Path(a.split("=", 1)[1]) for cmd in commands for a in cmd if a.startswith("hydra.sweep.dir=")]


def test_a_confirmation_trains_under_run_root_and_nowhere_else(tmp_path, monkeypatch):
    before = set((REPO / "runs" / "confirm").glob("*"))
    commands, out, elsewhere = _commands_of_a_confirmation(tmp_path, monkeypatch, f"run_root={tmp_path / 'x'}")
    # No run was really trained, so the comparison finds none and nothing is written.
    assert out.returncode == 2 and "0 of 2 finished" in out.stderr and "Nothing was written" in out.stderr
    parent, candidate = _sweep_dirs(commands)
    assert len(commands) == 2 and parent.name == "parent" and candidate.name == "candidate"
    assert parent.parent == candidate.parent and parent.parent.parent == tmp_path / "x" / "confirm"
    assert all(f"run_root={tmp_path / 'x'}" in cmd for cmd in commands)
    assert list(elsewhere.iterdir()) == [] and set((REPO / "runs" / "confirm").glob("*")) == before
    assert not (CONF_DIR / "experiment" / "record_tdir.yaml").exists()


def test_a_confirmation_given_a_sweep_dir_writes_into_it(tmp_path, monkeypatch):
    commands, out, elsewhere = _commands_of_a_confirmation(tmp_path, monkeypatch,
                                                           f"hydra.sweep.dir={tmp_path / 'mine'}")
    assert out.returncode == 2
    assert _sweep_dirs(commands) == [tmp_path / "mine" / "parent", tmp_path / "mine" / "candidate"]
    assert list(elsewhere.iterdir()) == []


def test_a_storage_inside_the_project_is_stated_relative_to_its_root(monkeypatch):
    url, note = recorded_storage(f"sqlite:///{PROJECT_ROOT / 'runs' / 'optuna.db'}")
    assert (url, note) == ("sqlite:///runs/optuna.db", " (relative to the project root)")
    monkeypatch.chdir(PROJECT_ROOT)  # read back from there, it names the same file
    assert normalise(url, "runs") == f"sqlite:///{PROJECT_ROOT / 'runs' / 'optuna.db'}"
    assert recorded_storage("journal:/scratch/x/runs/studies.log") == ("journal:/scratch/x/runs/studies.log", "")
    assert recorded_storage("postgresql://u:secret@db.lab/optuna") == ("postgresql://u:***@db.lab/optuna", "")


def test_a_record_states_a_storage_without_the_machines_path():
    # A record is committed and read elsewhere: relative to the project or to run_root (read back
    # with --run-root), else by the file's name; a server by its URL without the password.
    inside = f"sqlite:///{PROJECT_ROOT / 'runs' / 'optuna.db'}"
    assert shared_storage(inside, "/scratch/x/runs") == ("sqlite:///runs/optuna.db", " (relative to the project root)")
    assert shared_storage("sqlite:////scratch/x/runs/optuna.db", "/scratch/x/runs") == (
        "sqlite:///optuna.db", " (relative to run_root)")
    assert shared_storage("journal:/scratch/x/runs/s/studies.log", "/scratch/x/runs") == (
        "journal:s/studies.log", " (relative to run_root)")
    assert shared_storage("sqlite:////data/team/optuna.db", "/scratch/x/runs") == (
        "sqlite:///optuna.db", " (outside the project and run_root: only its name is recorded)")
    assert shared_storage("postgresql://u:secret@db.lab/optuna", "/scratch/x/runs") == (
        "postgresql://u:***@db.lab/optuna", "")
    assert normalise("sqlite:///optuna.db", "/scratch/x/runs", relative_to="/scratch/x/runs") == \
        "sqlite:////scratch/x/runs/optuna.db"
    assert normalise("journal:s/studies.log", "runs", relative_to="/scratch/x/runs") == \
        "journal:/scratch/x/runs/s/studies.log"


@pytest.fixture
def conf_copy(tmp_path, monkeypatch):
    """The project's conf/ tree copied into tmp_path and composed from there: a promoted record is
    written into the copy, never into the checkout."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    monkeypatch.setattr(compose, "CONF_DIR", conf)
    return conf


def _source_storage(record_file: Path) -> tuple[str, str]:
    source = yaml.safe_load(record_file.read_text())["record"]["source"]
    found = re.match(r"Optuna study (\S+) in (\S+)( \([^)]*\))?, trial \d+:", source)
    assert found, source
    return found.group(1), found.group(2) + (found.group(3) or "")


def _study_outside_the_project(tmp_path, monkeypatch):
    """(run root, storage, working directory): a one-trial study under tmp/scratch/runs, and the
    command started from another directory."""
    root = tmp_path / "scratch" / "runs"
    root.mkdir(parents=True)
    storage = _study(root, ["model.reduction=8"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root, storage, elsewhere


def test_a_promoted_record_leads_back_to_its_study(tmp_path, conf_copy, monkeypatch):
    # The study lies outside the project (run_root=/scratch/x/runs, say): the record names its
    # storage relative to run_root, and `search --run-root DIR report` on that URL, from anywhere,
    # finds the study.
    root, storage, elsewhere = _study_outside_the_project(tmp_path, monkeypatch)
    written = promote("s", "record_tsrc", storage=storage, conf_dir=conf_copy, run_root=str(root))
    assert written == conf_copy / "experiment" / "record_tsrc.yaml"
    study, url = _source_storage(written)
    assert study == "s" and url == "sqlite:///optuna.db (relative to run_root)"
    url = url.split(" ")[0]
    out = run_module("aprelu_exp.search", ["--run-root", root, "--storage", url, "report", study,
                                           "--out", tmp_path / "study"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # The study's report lies in a run folder: it keeps the full path.
    assert f"Storage `sqlite:///{root / 'optuna.db'}`;" in (tmp_path / "study" / "study.md").read_text()
    # promote finds it the same way from the record's form.
    again = run_module("aprelu_exp.records", ["--config-dir", conf_copy, "promote", "s", "--storage", url,
                                              "--run-root", root, "--name", "record_tsrc2"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _source_storage(conf_copy / "experiment" / "record_tsrc2.yaml")[1] == \
        "sqlite:///optuna.db (relative to run_root)"
    assert list(elsewhere.iterdir()) == []


def test_a_promoted_record_holds_no_path_of_the_machine(tmp_path, conf_copy, monkeypatch):
    # A search's sweep folder under a run_root in a temporary folder (search.json as the search
    # writes it, with the full paths): the record written from it names none of them.
    root, storage, elsewhere = _study_outside_the_project(tmp_path, monkeypatch)
    sweep = root / "multirun" / "2026-01-01_00-00-00_abc"
    sweep.mkdir(parents=True)
    write_search_ref(sweep, "s", storage, {"run_root": str(root)})
    written = promote(str(sweep), "record_tpath", conf_dir=conf_copy)
    text = written.read_text()
    assert str(tmp_path) not in text and str(root) not in text, text
    assert _source_storage(written) == ("s", "sqlite:///optuna.db (relative to run_root)")
    assert str(root) in (sweep / "search.json").read_text()  # the run folder keeps the full path


@pytest.mark.slow
def test_promote_confirm_honours_run_root_and_records_where_it_went(tmp_path, conf_copy, cli_env, monkeypatch):
    # The promotion with --confirm of docs/records.md, run_root outside the project and the command started
    # from another directory: the runs, the report and the record's evidence all point under run_root.
    for key, value in cli_env.items():
        monkeypatch.setenv(key, value)
    root, storage, elsewhere = _study_outside_the_project(tmp_path, monkeypatch)
    before = set((REPO / "runs" / "confirm").glob("*"))
    written = promote("s", "record_tconf", storage=storage, conf_dir=conf_copy, confirm=2, force=True,
                      overrides=[*TINY, f"run_root={root}"])
    evidence = yaml.safe_load(written.read_text())["record"]["evidence"]
    (confirm_dir,) = (root / "confirm").iterdir()
    # No machine's path in the record: the runs relative to run_root, the storage too.
    assert evidence["runs"] == f"confirm/{confirm_dir.name} (relative to run_root)" and evidence["n"] == 2
    assert str(tmp_path) not in written.read_text()
    for side in ("parent", "candidate"):
        assert len([p for p in (confirm_dir / side).iterdir() if (p / "summary.json").exists()]) == 2, side
    assert (confirm_dir / "report" / "comparisons.csv").is_file()
    assert list(elsewhere.iterdir()) == [] and set((REPO / "runs" / "confirm").glob("*")) == before
    assert _source_storage(written)[1] == "sqlite:///optuna.db (relative to run_root)"


def test_a_users_config_folder_holds_the_records_it_promotes_and_composes_them(tmp_path):
    """`records --config-dir DIR`: a new record is written into DIR/experiment (never the package's
    conf/), and list, show and diff find it there, as the main command's --config-dir does."""
    storage = _study(tmp_path, ["model.reduction=8"])
    mine = tmp_path / "my_conf"
    mine.mkdir()
    before = sorted((CONF_DIR / "experiment").iterdir())
    out = run_module("aprelu_exp.records", ["--config-dir", mine, "promote", "s", "--storage", storage,
                                            "--name", "record_tmine"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (mine / "experiment" / "record_tmine.yaml").is_file()
    assert sorted((CONF_DIR / "experiment").iterdir()) == before
    diff = run_module("aprelu_exp.records", ["--config-dir", mine, "diff", "record_16", "record_tmine"])
    assert diff.returncode == 0 and "model.reduction: 16 -> 8" in diff.stdout, diff.stdout + diff.stderr
    assert "record_tmine" in run_module("aprelu_exp.records", ["--config-dir", mine, "list"]).stdout
    assert "record_tmine" not in run_module("aprelu_exp.records", ["list"]).stdout
    missing = run_module("aprelu_exp.records", ["--config-dir", tmp_path / "nowhere", "list"])
    assert missing.returncode == 2 and "--config-dir" in missing.stderr and "no such folder" in missing.stderr
