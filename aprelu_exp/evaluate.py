"""`python -m aprelu_exp.evaluate RUN_DIR [--checkpoint best|last]`: a run's checkpoint on the test
set, in both validation modes (test_acc, test_acc_article, test_loss, test_loss_article).

With data.val_split, best.ckpt was chosen on held-out training images, so its test accuracy is a
clean number: this is the command that gives it (summary.json's `test` holds the last epoch's).
The result is printed and kept beside the run as `test_<checkpoint>.json`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from aprelu_exp import config_schema  # noqa: F401
from aprelu_exp.data.cifar10 import DataError
from aprelu_exp.errors import UserError, run_command
from aprelu_exp.metrics import TEST_ACC, TEST_ACC_ARTICLE, TEST_LOSS, TEST_LOSS_ARTICLE
from aprelu_exp.runs.checkpoint import check_compatible, network_signature
from aprelu_exp.runs.resume import RESUME_FROM
from aprelu_exp.runs.rundir import CONFIG_FILE, write_json_atomic
from aprelu_exp.training.build import build_datamodule, build_module, build_net
from aprelu_exp.training.evaluation import evaluate_loaders


def evaluate_checkpoint(run_dir: Path, which: str = "best") -> dict:
    run_dir = Path(run_dir)
    if which not in RESUME_FROM:
        raise UserError(f"--checkpoint {which!r}: use best (best.ckpt, chosen on validation) or last.")
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"{run_dir}: no {CONFIG_FILE} there; give the directory of a run (runs/<date>/<run>).")
    path = run_dir / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        raise UserError(f"{run_dir}: no checkpoints/{which}.ckpt there; give a run that finished an epoch.")
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    if "_target_" not in (cfg.get("model") or {}):
        raise UserError(f"{run_dir}: its {CONFIG_FILE} comes from an earlier version of aprelu-exp (before every "
                        f"part named its `_target_`); it cannot rebuild that network. Evaluate a newer run.")
    net = build_net(cfg)
    dm = build_datamodule(cfg)
    epoch = check_compatible(path, network_signature(cfg.model), net.state_dict(), dm.split())
    try:
        dm.prepare()
    except DataError as exc:
        raise UserError(str(exc)) from None
    dm.setup()
    module = build_module(cfg, net, {"compile": False, "channels_last": False})
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
    result = {**evaluate_loaders(module, dm.test_dataloader()), "checkpoint": f"{which}.ckpt",
              "epoch": epoch + 1, "images": len(dm.test_y), "split": dm.split()}
    write_json_atomic(run_dir / f"test_{which}.json", result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.evaluate", description=__doc__)
    parser.add_argument("run", type=Path, help="a run directory")
    parser.add_argument("--checkpoint", default="best", help="best (default) or last")
    args = parser.parse_args(argv)

    def action():
        r = evaluate_checkpoint(args.run, args.checkpoint)
        print(f"{r['checkpoint']} (epoch {r['epoch']}) on {r['images']} test images: "
              + ", ".join(f"{k} {r[k]:.4f}" for k in (TEST_ACC, TEST_ACC_ARTICLE, TEST_LOSS, TEST_LOSS_ARTICLE))
              + f" -> {args.run / ('test_' + args.checkpoint + '.json')}")

    return run_command(action)


if __name__ == "__main__":
    sys.exit(main())
