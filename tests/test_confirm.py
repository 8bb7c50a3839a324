"""A record is confirmed against its parent before it is written: N seeds each through the main
command, the comparison on the search's objective, the evidence in the record file."""
import re
import shutil

import optuna
import pytest
import yaml

from aprelu_exp.compose import CONF_DIR
from aprelu_exp.records.confirm import merge_settings
from inprocess import run_module

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
    # A record of this test's own (record 16 with plain ReLU), so the log's records stay untouched.
    name = "record_tconfirm"
    path = CONF_DIR / "experiment" / f"{name}.yaml"
    saved = (f"# @package _global_\n# a test record\ndefaults:\n- record_16\n- _self_\n\nrecord:\n  name: {name}\n"
             f"  parent: record_16\n  provenance: searched\n  source: test\n  change: relu\nmodel:\n"
             f"  activation: relu\n")
    path.write_text(saved)
    try:
        # Two seeds a side never make a verdict (at n=2 the t interval of the paired differences is
        # +-12.7 standard errors wide): nothing is written, exit 1.
        out = run_module("aprelu_exp.records", ["confirm", name, "--seeds", "2", *TINY], env=cli_env,
                         cwd=tmp_path)
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
        forced = run_module("aprelu_exp.records", ["confirm", name, "--seeds", "2", "--force", *TINY],
                            env=cli_env, cwd=tmp_path)
        assert forced.returncode == 0, forced.stderr[-3000:]
        evidence = yaml.safe_load(path.read_text())["record"]["evidence"]
        assert evidence["confirmed"] is False and evidence["n"] == 2 and evidence["seeds"] == [0, 1]
        assert evidence["metric"] == "final_val_acc_article" and "data.train_subset=200" in evidence["settings"]
        assert evidence["ci"][0] <= evidence["mean"] <= evidence["ci"][1]
        assert path.read_text().startswith("# @package _global_")
        listing = run_module("aprelu_exp.records", ["list"]).stdout
        assert "UNCONFIRMED" in listing
    finally:
        path.unlink(missing_ok=True)
        shutil.rmtree(tmp_path / "runs", ignore_errors=True)
