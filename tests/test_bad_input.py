"""Bad input through the real CLI: a clear message, a non-zero exit, no run that looks finished.

Each case goes through `python -m aprelu_exp`'s own main in process; one case (missing data) runs as
a real process too, so the exit status and stderr of the interpreter itself are pinned."""
import json
from pathlib import Path

import pytest

from aprelu_exp.data.cifar10 import SUBDIR, TEST_FILES, TRAIN_FILES
import test_cli
from inprocess import run_cli


def _data_variant(src_root: Path, dst: Path, kind: str) -> Path:
    """A data root of symlinks to the real files, with data_batch_2.bin missing/cut/altered."""
    folder = dst / SUBDIR
    folder.mkdir(parents=True)
    for name in TRAIN_FILES + TEST_FILES:
        if name == "data_batch_2.bin":
            raw = (src_root / SUBDIR / name).read_bytes()
            if kind == "truncated":
                (folder / name).write_bytes(raw[: len(raw) // 2])
            elif kind == "altered":
                b = bytearray(raw)
                b[1000] ^= 1
                (folder / name).write_bytes(bytes(b))
            continue  # "missing": leave it out
        (folder / name).symlink_to(src_root / SUBDIR / name)
    return dst


CASES = [
    # (overrides, expected exit, text the message must contain)
    (["model.stages.0.channels=48"], 2, "model.stages[0].channels=48 cannot follow 16 channels"),
    (["model.stages.2.channels=100"], 2, "may only stay the same or double"),
    (["model.foo=1"], 2, "model.foo is not a key of this config"),
    (["+model.foo=3"], 2, "model.foo is not a setting of aprelu_exp.model.resnet.APReLUResNet"),
    (["model.reducton=16"], 2, "Did you mean model.reduction"),
    (["logger.tracking_uri=http://127.0.0.1:1"], 2, "Did you mean logger.mlflow.tracking_uri (with logger=mlflow)"),
    (["optim=adamx"], 2, "optim=adamx is not an option of the config group optim; its options are adamw, sgd"),
    (["optim._target_=torch.optim.AdamW"], 2, "optim.momentum is not a setting of torch.optim.AdamW"),
    (["+optim._target_=torch.optim.AdamW"], 2, "An item is already at 'optim._target_'"),
    (["optim._target_=torch.optim.Nope"], 2, "optim._target_=torch.optim.Nope names no importable class"),
    (["model.reduction=abc"], 2, "model.reduction='abc' is a str; aprelu_exp.model.resnet.APReLUResNet expects int"),
    (["seed=abc"], 2, "seed=abc: the value has the wrong type; seed takes integer"),
    (["experiment=record_99"], 2, "experiment=record_99 is not an option of the config group experiment"),
    (["model.reduction=64"], 2, "model.reduction=64 is larger than"),
    (["model.reduction=20"], 2, "larger than the 16 channels of model.stem_channels"),  # record 16's stem
    (["model.reduction=0"], 2, "model.reduction must be a positive integer"),
    (["model.activation=swish"], 2, "model.activation='swish' is not known"),
    (["model.shortcut=conv"], 2, "model.shortcut='conv' is not known"),
    (["model.stages=[]"], 2, "model.stages is empty"),
    (["budget=0"], 2, "budget=0 is below one epoch"),
    (["trainer.max_epochs=0"], 2, "trainer.max_epochs=0"),
    (["seed=null"], 2, "seed is null"),
    (["data.centring=zca"], 2, "data.centring must be"),
    (["augment.fill_mode=wrap"], 2, "augment.fill_mode must be"),
    (["data.train_subset=0"], 2, "data.train_subset=0"),
    (["resume=/nonexistent/run"], 2, "resume=/nonexistent/run"),
    (["data.val_split=0"], 2, "data.val_split=0 must be a positive number"),
    (["data.val_split=-100"], 2, "data.val_split=-100 must be a positive number"),
    (["data.val_split=150"], 2, "must be a multiple of data.article_eval_batch_size=100"),
    (["data.val_split=200"], 2, "data.val_split=200 leaves no training image (the run uses 200)"),
    # 30 images hold one of class 0: its share of 20 empties it (a batch of 10 allows the 20).
    (["data.train_subset=30", "data.article_eval_batch_size=10", "data.val_split=20"], 2,
     "would leave class 0 without a training image"),
    ("missing", 2, "data_batch_2.bin is missing"),
    ("truncated", 2, "data_batch_2.bin has 15365000 bytes"),
    ("altered", 2, "data_batch_2.bin has SHA-256"),
]


@pytest.mark.parametrize("overrides, code, message", CASES, ids=[str(c[0]) for c in CASES])
def test_bad_input_is_refused_cleanly(overrides, code, message, cli_env, cifar_root, tmp_path):
    _refused_cleanly(run_cli, overrides, code, message, cli_env, cifar_root, tmp_path)


@pytest.mark.parametrize("overrides, code, message", [CASES[-3]], ids=["missing"])
def test_bad_input_is_refused_cleanly_by_a_real_process(overrides, code, message, cli_env, cifar_root, tmp_path):
    _refused_cleanly(test_cli.run_cli, overrides, code, message, cli_env, cifar_root, tmp_path)


def _refused_cleanly(run_cli, overrides, code, message, cli_env, cifar_root, tmp_path):
    runs = tmp_path / "runs"
    args = [f"run_root={runs}", "trainer.max_epochs=1", "data.train_subset=200", "data.test_subset=100"]
    if isinstance(overrides, str):
        root = _data_variant(cifar_root, tmp_path / "data", overrides)
        args += [f"data.root={root}", "data.download=false"]
    else:
        args = [a for a in args if not any(a.split("=")[0] == o.split("=")[0] for o in overrides)]
        args += overrides
    out = run_cli(args, cli_env)
    assert out.returncode == code, out.stderr[-2000:]
    assert message in out.stderr, out.stderr[-2000:]
    if code == 2:
        # Our own errors: one paragraph, no traceback.
        assert "Traceback" not in out.stderr
    # Nothing that looks like a finished (or any) run is left behind.
    leftovers = [p for p in runs.rglob("*") if p.is_dir() and (p / ".hydra").exists()]
    assert leftovers == []
    assert not list(runs.rglob("summary.json"))
    for status in runs.rglob("status.json"):
        assert json.loads(status.read_text())["status"] != "finished"
