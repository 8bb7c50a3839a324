"""`python -m aprelu_exp.evaluate RUN_DIR [ckpt=best|last] [data.KEY=VALUE ...] [--out DIR]`: a run's
checkpoint, rebuilt from the run's own config.yaml, on its validation and test images in both
validation modes.

It writes `RUN_DIR/eval/<ckpt>.json` (or `DIR/<ckpt>.json` with --out): the metrics under the names
of metrics.csv (`val_loss`, `val_acc`, `val_loss_article`, `val_acc_article`) and of summary.json's
`test` (`test_*`), each accuracy's per-class accuracy and confusion matrix; and `<ckpt>_confusion.png`,
the test set's confusion matrices. Without data.val_split validation was the test set, so `val_*`
and `test_*` are the same numbers and `last` reproduces the last row of metrics.csv; with a split,
`val_*` are the held-out training images' (as metrics.csv) and `test_*` the test set's: best.ckpt
was chosen on the split, so its test accuracy is the clean number to report."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from aprelu_exp import config_schema  # noqa: F401
from aprelu_exp.data.cifar10 import CLASSES, DataError
from aprelu_exp.errors import UserError, run_command
from aprelu_exp.parts import closest
from aprelu_exp.report.confusion import confusion_png
from aprelu_exp.runs.checkpoint import DamagedCheckpoint, check_compatible, network_signature, split_text
from aprelu_exp.runs.resume import RESUME_FROM
from aprelu_exp.runs.rundir import CONFIG_FILE, SUMMARY_FILE, atomic_file, write_json_atomic
from aprelu_exp.training.build import build_datamodule, build_module, build_net
from aprelu_exp.training.evaluation import TEST_METRICS, ModeResult, evaluate_modes
from aprelu_exp.training.module import ARTICLE, STANDARD
from aprelu_exp.training.precision import perf_switches, resolve_precision

CKPT_KEY = "ckpt"
EVAL_DIR = "eval"
# Data settings that fix the images the network trained on, hence its centring statistics and the
# held-out split: evaluated under others, the numbers would judge inputs the run never saw.
TRAINED_WITH = ("train_subset", "val_split", "split_seed", "centring")
EVALUATE_FIX = ("evaluate reads a checkpoint against its own run's config.yaml: give the directory of "
                "the run that wrote it, with its config.yaml as that run wrote it.")
AUTOCAST = {"bf16": torch.bfloat16, "16": torch.float16}  # Lightning precision prefix -> autocast dtype
MODE_WORDS = {STANDARD: "standard mode (BatchNorm running statistics)",
              ARTICLE: "article mode (BatchNorm statistics of each batch)"}


def _no_run(run_dir: Path) -> UserError:
    what = ("the directory of a run (runs/<date>/<run>: the folder that holds config.yaml, metrics.csv "
            "and checkpoints/)")
    if not run_dir.is_dir():
        return UserError(f"{run_dir}: no such directory; give {what}.")
    runs = sorted({p.parent for pattern in ("*/" + CONFIG_FILE, "*/*/" + CONFIG_FILE) for p in run_dir.glob(pattern)
                   if not any(part.startswith(".") for part in p.relative_to(run_dir).parts)})  # not .hydra/
    if runs:
        return UserError(f"{run_dir} is no run directory (no {CONFIG_FILE} in it) but holds {len(runs)} "
                         f"run{'s' if len(runs) > 1 else ''}, e.g. {runs[0]}; evaluate one of them.")
    return UserError(f"{run_dir} is no run directory: there is no {CONFIG_FILE} in it. Give {what}.")


def run_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's own config with the data overrides on top; anything else is refused."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise _no_run(run_dir)
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    if "_target_" not in (cfg.get("model") or {}):
        raise UserError(f"{run_dir}: its {CONFIG_FILE} comes from an earlier version of aprelu-exp (before every "
                        f"part named its `_target_`); it cannot rebuild that network. Evaluate a newer run.")
    for item in overrides:
        key, eq, _ = item.partition("=")
        name = key[len("data."):]
        if not eq or not key.startswith("data.") or "." in name:
            raise UserError(f"{item!r}: evaluate takes the checkpoint (ckpt=best or ckpt=last) and data "
                            f"overrides such as data.test_subset=1000 or data.root=/path; the rest of the "
                            f"config is the run's own.")
        if name not in cfg.data:
            near = closest(key, [f"data.{k}" for k in cfg.data if k != "_target_"])
            raise UserError(f"{key} is no data setting.{' Did you mean ' + ' or '.join(near) + '?' if near else ''}")
        if name in TRAINED_WITH:
            raise UserError(f"{key} fixes the images the run trained on (its centring statistics and its "
                            f"held-out split follow from them), so evaluate keeps the run's own "
                            f"({key}={cfg.data[name]}); change what is evaluated with data.test_subset instead.")
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))


def _device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible here; use --device cpu (or auto).")
    return torch.device(requested)


def _run_precision(run_dir: Path, cfg: DictConfig, device: torch.device) -> tuple[str, str | None]:
    """The arithmetic the run validated in (summary.json's, else its config's), where this device
    has it: bf16 evaluated in fp32 moves the numbers by rounding, so the JSON says which ran."""
    try:
        trained = json.loads((run_dir / SUMMARY_FILE).read_text())["perf"]["precision"]
    except (OSError, ValueError, KeyError, TypeError):
        trained = perf_switches(cfg)["precision"]
    return resolve_precision("trainer", trained, device.type)


def _nan_free(values) -> list:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


def named_results(results: list[ModeResult], names: str) -> tuple[dict, dict, dict]:
    """(metrics, per-class accuracy, confusion) of one set, under metrics.csv's names (names="val")
    or summary.json's test names (names="test")."""
    metrics, per_class, confusion = {}, {}, {}
    for test_name, (mode, part, val_name) in TEST_METRICS.items():
        name = test_name if names == "test" else val_name
        result = results[mode]
        metrics[name] = (result.loss, result.accuracy)[part]
        if part == 1:
            per_class[name] = dict(zip(CLASSES, _nan_free(result.per_class_accuracy().tolist())))
            confusion[name] = result.confusion.tolist()
    return metrics, per_class, confusion


def _figure(run_dir: Path, which: str, epoch: int, test: list[ModeResult]) -> bytes:
    n = int(test[STANDARD].confusion.sum())
    names = {mode: test_name for test_name, (mode, part, _) in TEST_METRICS.items() if part == 1}
    panels = [(f"{MODE_WORDS[mode]}: {names[mode]} {test[mode].accuracy:.4f}", test[mode].confusion)
              for mode in (STANDARD, ARTICLE)]
    run = run_dir.resolve()
    return confusion_png(panels, CLASSES, f"{run.parent.name}/{run.name}: {which}.ckpt (epoch {epoch}) "
                                          f"on the CIFAR-10 test set, {n} images")


def evaluate_checkpoint(run_dir: Path, which: str = "best", overrides: list[str] = (), out: Path | None = None,
                        device: str = "auto") -> dict:
    """Evaluate `which` checkpoint of a run, write the JSON and the figure, return the JSON's content.
    Every refusal comes before anything is written."""
    run_dir = Path(run_dir)
    if which not in RESUME_FROM:
        raise UserError(f"{CKPT_KEY}={which}: use best (best.ckpt, chosen on validation) or last (the last epoch's).")
    overrides = list(overrides)
    cfg = run_config(run_dir, overrides)
    path = run_dir / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        others = [p.stem for p in sorted((run_dir / "checkpoints").glob("*.ckpt"))]
        there = f"it holds {', '.join(o + '.ckpt' for o in others)}" if others else "the run saved no checkpoint yet"
        raise UserError(f"{run_dir}: no checkpoints/{which}.ckpt there ({there}); evaluate "
                        f"{'ckpt=' + others[0] if others else 'a run that finished at least one epoch'}.")
    dev = _device(device)
    net = build_net(cfg)
    dm = build_datamodule(cfg)
    epoch = check_compatible(path, network_signature(cfg.model), net.state_dict(), dm.split(), fix=EVALUATE_FIX) + 1
    precision, note = _run_precision(run_dir, cfg, dev)
    try:
        dm.prepare()
    except DataError as exc:
        raise UserError(str(exc)) from None
    dm.setup()
    torch.set_float32_matmul_precision(str(cfg.perf.matmul_precision))
    module = build_module(cfg, net, {"compile": False, "channels_last": False})
    try:
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
    except Exception as exc:  # read once already by check_compatible: changed since, or not the net's
        raise DamagedCheckpoint(f"checkpoint {path} cannot be loaded into the network ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200]}); it is damaged. {EVALUATE_FIX}") from None
    module.to(dev)
    sets = {"test": dm.test_dataloader()}
    if dm.split() is not None:
        sets["val"] = dm.val_dataloader()
    dtype = next((d for prefix, d in AUTOCAST.items() if precision.startswith(prefix)), None)
    autocast = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with autocast:
        results = {name: evaluate_modes(module, loaders, len(CLASSES)) for name, loaders in sets.items()}

    out_dir = Path(out) if out is not None else run_dir / EVAL_DIR
    figure = out_dir / f"{which}_confusion.png"
    metrics, per_class, confusion = {}, {}, {}
    for names, results_of in (("val", results.get("val", results["test"])), ("test", results["test"])):
        for into, part in zip((metrics, per_class, confusion), named_results(results_of, names)):
            into.update(part)
    report = {
        "run": str(run_dir.resolve()), "checkpoint": f"{which}.ckpt", "epoch": epoch, "overrides": overrides,
        "validation": (f"the held-out training images ({split_text(dm.split())}); test_*: the test set"
                       if dm.split() else "the test set (no data.val_split): val_* and test_* are the same numbers"),
        "images": {"val": len(dm.val_y) if dm.split() else len(dm.test_y), "test": len(dm.test_y)},
        "split": dm.split(), "device": dev.type, "precision": precision, **({"precision_note": note} if note else {}),
        **metrics, "classes": list(CLASSES), "per_class_acc": per_class,
        "confusion": confusion, "confusion_axes": "row: true class, column: predicted class",
        "figure": figure.name,
    }
    png = _figure(run_dir, which, epoch, results["test"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(figure, "wb") as fh:
        fh.write(png)
    write_json_atomic(out_dir / f"{which}.json", report)
    return report


def _split_arguments(tokens: list[str], checkpoint: str | None) -> tuple[str, list[str]]:
    which = [t.split("=", 1)[1] for t in tokens if t.startswith(CKPT_KEY + "=")]
    if checkpoint is not None:
        which.append(checkpoint)
    if len(set(which)) > 1:
        raise UserError(f"two checkpoints asked for ({' and '.join(which)}); give one: ckpt=best or ckpt=last.")
    return (which[0] if which else "best"), [t for t in tokens if not t.startswith(CKPT_KEY + "=")]


def _line(report: dict, names: str) -> str:
    keys = (f"{names}_acc", f"{names}_acc_article", f"{names}_loss", f"{names}_loss_article")
    return ", ".join(f"{k} {report[k]:.4f}" for k in keys)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run directory (runs/<date>/<run>)")
    parser.add_argument("overrides", nargs="*", metavar="ckpt=best|last data.KEY=VALUE",
                        help="the checkpoint (best, the default, or last) and data overrides such as "
                             "data.test_subset=1000")
    parser.add_argument("--checkpoint", choices=RESUME_FROM, help="the same as ckpt=")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write <ckpt>.json and <ckpt>_confusion.png here "
                                                 "instead of RUN_DIR/eval/")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to evaluate (auto: a CUDA GPU where one is visible, else the CPU)")
    return parser.parse_intermixed_args(argv)  # options before, between or after the overrides


def main(argv=None) -> int:
    args = parse_args(argv)

    def action():
        which, overrides = _split_arguments(args.overrides, args.checkpoint)
        r = evaluate_checkpoint(args.run, which, overrides, args.out, args.device)
        out_dir = args.out if args.out is not None else args.run / EVAL_DIR
        print(f"{r['checkpoint']} (epoch {r['epoch']}) of {args.run}, on {r['device']} in {r['precision']}:")
        if r["split"]:
            print(f"  held-out split ({split_text(r['split'])}), {r['images']['val']} training images: "
                  + _line(r, "val"))
        else:
            print(f"  validation is the test set (no data.val_split), {r['images']['test']} images: " + _line(r, "val"))
        print(f"  test set, {r['images']['test']} images: " + _line(r, "test"))
        print(f"  -> {out_dir / (which + '.json')}, {out_dir / r['figure']}")

    return run_command(action)


if __name__ == "__main__":
    sys.exit(main())
