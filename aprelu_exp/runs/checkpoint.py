"""Checkpoints that are written atomically and know which network they hold."""
from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from aprelu_exp.errors import UserError
from aprelu_exp.runs import moments
from aprelu_exp.runs.rundir import atomic_file

SIGNATURE_KEY = "aprelu_network_signature"
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


def check_compatible(ckpt_path: Path, signature: dict) -> int:
    """Refuse to resume from a checkpoint of another network, naming every differing key; return
    the epoch the checkpoint ends."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = checkpoint.get(SIGNATURE_KEY)
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
