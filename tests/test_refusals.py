"""Input the command refuses or answers quietly: a GPU trainer where CUDA sees no GPU, two
overrides that contradict each other, a sweep whose every job failed, a completion query on a line
that does not parse. Each through the command's own main (in process)."""
import os

import pytest
import torch

from inprocess import run_cli, run_module
from test_bad_input import _refused_cleanly
from test_cli import run_dirs

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@no_cuda
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_cuda_is_refused_before_any_run_directory(trainer, cli_env, cifar_root, tmp_path):
    _refused_cleanly(run_cli, [f"trainer={trainer}"], 2, "torch.cuda.is_available() is False", cli_env,
                     cifar_root, tmp_path)
    out = run_cli([f"run_root={tmp_path / 'again'}", f"trainer={trainer}", "data.train_subset=200"], cli_env)
    assert "use trainer=cpu or the default" in out.stderr.lower().replace("\n", " ")
    assert "MisconfigurationException" not in out.stderr and run_dirs(tmp_path / "again") == []


def test_budget_and_max_epochs_together_are_refused(cli_env, cifar_root, tmp_path):
    _refused_cleanly(run_cli, ["budget=50", "trainer.max_epochs=1"], 2,
                     "budget=50 and trainer.max_epochs=1 contradict each other", cli_env, cifar_root, tmp_path)


def test_a_sweep_whose_every_job_failed_exits_non_zero(cli_env, tmp_path):
    # Both jobs are refused (DDP inside a basic multirun): the report lists them, the command fails.
    out = run_cli(["-m", f"run_root={tmp_path}", "trainer=ddp_cpu", "seed=0,1", "data.train_subset=200"], cli_env)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "every job of the sweep failed (2 of 2)" in out.stderr
    assert len(run_dirs(tmp_path)) == 2


@pytest.mark.parametrize("line", ["aprelu-exp model.stages=[1,2 ", "aprelu-exp trainer.max_epochs=}{ augment=",
                                  "aprelu-exp --no-such-flag augment="])
def test_a_completion_query_on_a_line_that_does_not_parse_offers_nothing(line):
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
    out = run_module("aprelu_exp", ["-sc", "query=bash"], env=env)
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "", "")
    # The same query on a line that parses still offers the options.
    good = "aprelu-exp augment="
    out = run_module("aprelu_exp", ["-sc", "query=bash"], env={**os.environ, "COMP_LINE": good,
                                                               "COMP_POINT": str(len(good))})
    assert sorted(out.stdout.split()) == ["augment=keras", "augment=none"]


def test_which_override_pairs_contradict():
    from aprelu_exp.errors import UserError
    from aprelu_exp.overrides import refuse_contradictions

    for fine in (["budget=50"], ["trainer.max_epochs=3"], ["budget=null", "trainer.max_epochs=3"],
                 ["budget=0", "trainer.max_epochs=1"]):  # budget=0 gets its own message first
        refuse_contradictions(fine)
    for clash in (["budget=50", "trainer.max_epochs=1"], ["++budget=4", "trainer.max_epochs=2", "seed=1"]):
        with pytest.raises(UserError, match="contradict each other"):
            refuse_contradictions(clash)
