"""Checkpoints that are written atomically and know which network they hold."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from aprelu_exp.errors import UserError
from aprelu_exp.runs.rundir import atomic_file

SIGNATURE_KEY = "aprelu_network_signature"
SPLIT_KEY = "aprelu_data_split"  # the held-out validation split trained with (absent or None: none)
# The keys that decide the network's shapes and wiring; anything else may change on resume.
ARCHITECTURE_KEYS = ("activation", "stem_channels", "stages", "reduction", "num_classes", "shortcut",
                     "tf_same_padding")


class DamagedCheckpoint(UserError):
    """A checkpoint file that cannot be loaded (truncated, corrupt, not ours)."""


def network_signature(model_cfg: DictConfig) -> dict:
    data = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    return {k: data.get(k) for k in ARCHITECTURE_KEYS}


def _flat(sig: dict) -> dict:
    out = {}
    for k, v in sig.items():
        if k == "stages" and isinstance(v, list):
            for i, stage in enumerate(v):
                for sk, sv in (stage or {}).items():
                    out[f"model.stages[{i}].{sk}"] = sv
            out["model.stages (count)"] = len(v)
        else:
            out[f"model.{k}"] = v
    return out


def split_text(split: dict | None) -> str:
    return ("no held-out split (validation on the test set)" if not split else
            f"data.val_split={split['val_split']} data.split_seed={split['split_seed']}")


class SplitStamp(pl.Callback):
    """Writes the run's held-out split into every checkpoint, so a resume can check it."""

    def __init__(self, split: dict | None):
        self.split = split

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[SPLIT_KEY] = self.split


def check_compatible(ckpt_path: Path, signature: dict, split: dict | None = None) -> int:
    """Refuse to resume from a checkpoint of another network, or one trained on another held-out
    split (its training images differ), naming what differs; return the epoch the checkpoint ends."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = checkpoint.get(SIGNATURE_KEY)
        saved_split = checkpoint.get(SPLIT_KEY)
        epoch = int(checkpoint["epoch"])
    except Exception as exc:
        raise DamagedCheckpoint(f"checkpoint {ckpt_path} cannot be read ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200]}); it is truncated, damaged or not one of "
                                f"this tool's checkpoints") from None
    if saved is None:
        raise UserError(f"checkpoint {ckpt_path} does not say which network it holds (not written by "
                        f"aprelu_exp); start a new run instead of resuming from it.")
    a, b = _flat(saved), _flat(signature)
    diffs = [f"{k}: checkpoint {a.get(k)} vs config {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diffs:
        raise UserError(f"checkpoint {ckpt_path} holds a different network than the config asks for "
                        f"({'; '.join(diffs)}). Resume without changing the model, or start a new run "
                        f"with the new settings.")
    if (saved_split or None) != (split or None):
        raise UserError(f"checkpoint {ckpt_path} was trained with {split_text(saved_split)}, but the config asks "
                        f"for {split_text(split)}: its training and validation images differ. Resume with the "
                        f"run's own data.val_split and data.split_seed, or start a new run.")
    return epoch


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file beside the target, fsync, then rename: a crash mid-write leaves
    the previous checkpoint intact, never a truncated one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as fh:
            torch.save(checkpoint, fh)
