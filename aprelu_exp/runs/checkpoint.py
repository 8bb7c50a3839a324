"""Checkpoints that are written atomically and know which network they hold."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from aprelu_exp.errors import UserError
from aprelu_exp.runs import moments
from aprelu_exp.runs.rundir import atomic_file

SIGNATURE_KEY = "aprelu_network_signature"
NET_PREFIX = "net."  # the Lightning module's attribute that holds the network
SPLIT_KEY = "aprelu_data_split"  # the held-out validation split trained with (absent or None: none)


class DamagedCheckpoint(UserError):
    """A checkpoint file that cannot be loaded (truncated, corrupt, not ours)."""


def network_signature(model_cfg: DictConfig) -> dict:
    """The `model` node as it built the network, stored in every checkpoint so that a refusal can
    name the settings that differ."""
    return OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)


def tensor_shapes(state_dict: dict, prefix: str = "") -> dict[str, tuple]:
    return {k[len(prefix):]: tuple(v.shape) for k, v in state_dict.items() if k.startswith(prefix)}


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


def check_compatible(ckpt_path: Path, signature: dict, net_state: dict, split: dict | None = None,
                     fix: str | None = None) -> int:
    """Refuse to resume from a checkpoint of another network, or one trained on another held-out
    split (its training images differ), naming what differs; return the epoch the checkpoint ends.
    ``fix``: the way on that a refusal names, for a caller that does not resume (the evaluate command).
    Which settings are architecture is derived, not listed: the checkpoint fits where its network's
    tensors have the names and shapes of the network that the config builds (``net_state``); a
    setting that shapes nothing (bn_eps, l2) may change."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = checkpoint.get(SIGNATURE_KEY)
        saved_split = checkpoint.get(SPLIT_KEY)
        epoch = int(checkpoint["epoch"])
        saved_shapes = tensor_shapes(checkpoint["state_dict"], NET_PREFIX)
    except Exception as exc:
        raise DamagedCheckpoint(f"checkpoint {ckpt_path} cannot be read ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200]}); it is truncated, damaged or not one of "
                                f"this tool's checkpoints") from None
    if saved is None:
        raise UserError(f"checkpoint {ckpt_path} does not say which network it holds (not written by "
                        f"aprelu_exp); {fix or 'start a new run instead of resuming from it.'}")
    shapes = tensor_shapes(net_state)
    if saved_shapes != shapes or saved.get("activation") != signature.get("activation"):
        a, b = _flat(saved), _flat(signature)
        diffs = [f"{k}: checkpoint {a.get(k)} vs config {b.get(k)}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
        if not diffs:
            changed = (sorted(set(saved_shapes) ^ set(shapes))
                       or [k for k in shapes if saved_shapes.get(k) != shapes[k]])
            diffs = [f"the tensor net.{changed[0]} differs ({len(changed)} tensors in all)"]
        raise UserError(f"checkpoint {ckpt_path} holds a different network than the config asks for "
                        f"({'; '.join(diffs)}). "
                        + (fix or "Resume without changing the model, or start a new run with the new settings."))
    if (saved_split or None) != (split or None):
        raise UserError(f"checkpoint {ckpt_path} was trained with {split_text(saved_split)}, but the config asks "
                        f"for {split_text(split)}: its training and validation images differ. "
                        + (fix or "Resume with the run's own data.val_split and data.split_seed, or start a new run."))
    return epoch


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file beside the target, fsync, then rename: a crash mid-write leaves
    the previous checkpoint intact, never a truncated one. `saved_epochs` says which epoch each
    file name holds as written by this process."""

    def __init__(self):
        super().__init__()
        self.saved_epochs: dict[str, int] = {}

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as fh:
            torch.save(checkpoint, fh)
            if path.name == "last.ckpt":
                moments.reached("checkpoint", int(checkpoint.get("epoch", 0)))
            # Set before the rename: a stop held back during the write is raised right after it.
            self.saved_epochs[path.name] = checkpoint.get("epoch")
