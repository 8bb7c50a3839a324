"""The block a run starts with, read from a real tiny run's output, and its epochs line for each
kind of schedule against hand-computed milestones."""
import subprocess
import sys

from aprelu_exp.console.first_screen import _epochs_line
from test_cli import run_dirs


def test_a_run_starts_with_its_plan_and_without_lightnings_notes(cli_env, tmp_path):
    out = subprocess.run([sys.executable, "-m", "aprelu_exp", f"run_root={tmp_path}", "data.train_subset=200",
                          "data.test_subset=100", "trainer.max_epochs=2", "logger=none"],
                         cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    lines = out.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("run "))
    block = lines[start:start + 5]
    assert block[0].split(None, 1) == ["run", str(run)]
    assert block[1].split(None, 1) == ["record", "record_16 (parent record_15)"]
    assert block[2].startswith("epochs  2 of the record's 5000 (truncated")
    assert "lr milestones 1500, 3000, 4500, none within this run" in block[2]
    assert block[3].startswith("data    train 200, validation 100 ") and block[3].endswith("test 100")
    assert block[4].startswith("device  cpu (") and "precision 32-true; not compiled" in block[4]
    # Then the epochs, the first with the expected end of the run.
    epochs = [ln for ln in lines[start + 5:] if ln.startswith("epoch ")]
    assert epochs[0].startswith("epoch 1/2 |") and "left ~" in epochs[0]
    text = out.stdout + out.stderr
    for gone in ("FLOPs", "Total Flops", "logging interval", "log_every_n_steps", "GPU available",
                 "TPU available"):
        assert gone not in text, gone


def test_the_epochs_line_names_the_kind_and_the_milestones():
    # Record 16: 5000 epochs, lr x0.1 every 1500 (milestones 1500/3000/4500); budget=50 scales them to
    # 15/30/45 (README), budget=2 to 1/1/2 (0.6, 1.2, 1.8 rounded, at least 1).
    full = {"kind": "full", "max_epochs": 5000, "full_epochs": 5000, "milestones": [1500, 3000, 4500]}
    assert _epochs_line(full, 0.1) == "5000 (the record's full schedule); lr x0.1 after epochs 1500, 3000, 4500"
    budget = {"kind": "budget", "max_epochs": 50, "full_epochs": 5000, "milestones": [15, 30, 45]}
    assert _epochs_line(budget, 0.1) == ("50 (budget: the record's 5000-epoch schedule compressed); "
                                         "lr x0.1 after epochs 15, 30, 45")
    short = {"kind": "budget", "max_epochs": 2, "full_epochs": 5000, "milestones": [1, 1, 2]}
    assert _epochs_line(short, 0.1).endswith("lr x0.1 after epochs 1, 1, 2 (2 within this run)")
    cut = {"kind": "truncated", "max_epochs": 2000, "full_epochs": 5000, "milestones": [1500, 3000, 4500]}
    assert _epochs_line(cut, 0.1).endswith("lr x0.1 after epochs 1500, 3000, 4500 (1 within this run)")
