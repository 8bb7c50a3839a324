"""Continuing a run in place: its own config with plain key=value overrides on top, and the
checkpoint it goes on from (last or best), checked against the network it will be loaded into."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aprelu_exp.errors import UserError
from aprelu_exp.runs.checkpoint import DamagedCheckpoint, check_compatible
from aprelu_exp.runs.rundir import CONFIG_FILE

RESUME_FROM = ("last", "best")


def resume_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, Path]:
    """A resumed run keeps its own config; plain key=value overrides still apply on top, so a
    changed network is caught by the checkpoint check instead of silently ignored."""
    run_dir = Path(cfg.resume)
    saved = run_dir / CONFIG_FILE
    if not saved.is_file() and (run_dir / "multirun.yaml").is_file():
        raise UserError(f"resume={run_dir} is a sweep: continue it with -m: "
                        f"`python -m aprelu_exp -m resume={run_dir}`.")
    if not saved.is_file():
        raise UserError(f"resume={run_dir}: no {CONFIG_FILE} there; give the directory of an "
                        f"earlier run (it holds config.yaml, metrics.csv and checkpoints/).")
    base = OmegaConf.load(saved)
    if "_target_" not in (base.get("model") or {}):
        raise UserError(f"resume={run_dir}: its {CONFIG_FILE} comes from an earlier version of aprelu-exp, "
                        f"before every part (model, data, optim, schedule) named its `_target_`, so it "
                        f"cannot rebuild that run exactly. Start a new run with the same settings "
                        f"(`python -m aprelu_exp.records diff` shows them).")
    extra = [o for o in overrides if not o.startswith("resume=")]
    groups = [o for o in extra if ("/" in o.split("=", 1)[0] or "." not in o.split("=", 1)[0])
              and not o.startswith("resume_from=")]
    if groups:
        raise UserError(f"resume cannot switch config groups or top-level keys ({', '.join(groups)}); "
                        f"only dotted key=value overrides such as trainer.max_epochs=10 apply.")
    OmegaConf.set_struct(base, True)
    merged = OmegaConf.merge(base, OmegaConf.from_dotlist(extra))
    merged.resume = str(run_dir)
    return merged, run_dir


def resume_checkpoint(run_dir: Path, signature: dict, net_state: dict, which: str = "last",
                      split: dict | None = None) -> tuple[Path, int]:
    """(checkpoint path, its last completed epoch); refused when missing, damaged, from another
    network or another held-out split, with the way on where there is one."""
    if which not in RESUME_FROM:
        raise UserError(f"resume_from={which!r}: use last (the last completed epoch) or best (best.ckpt).")
    path = run_dir / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        raise UserError(f"resume={run_dir}: no checkpoints/{which}.ckpt there. Give the directory of "
                        f"a run that finished at least one epoch.")
    try:
        return path, check_compatible(path, signature, net_state, split)
    except DamagedCheckpoint as exc:
        best = run_dir / "checkpoints" / "best.ckpt"
        offer = (f" checkpoints/best.ckpt is there: resume from it with "
                 f"`python -m aprelu_exp resume={run_dir} resume_from=best` (later epochs are trained again),"
                 if which == "last" and best.is_file() else "")
        raise UserError(f"{exc}.{offer} or start a new run.") from None
