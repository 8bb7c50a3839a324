"""The perf policy: which arithmetic a run trains in (the `perf.precision` switch resolved against
the hardware), on which device, compiled or not, in which memory layout, at which eval batch.

`trainer` keeps Lightning's `trainer.precision` as configured (32-true for the records, bf16-mixed
under trainer=gpu); `bf16` asks for bf16 autocast (Lightning's bf16-mixed); `32` forces fp32. A
bf16 request on hardware without fast bf16 kernels runs fp32 instead and says so once: emulated
bf16 on such a CPU is slower than fp32, the opposite of what the switch is for. `fast` (perf=fast)
measures: where bf16 is not emulated, a short probe (training/precision_probe.py, passed in by the
caller that trains) times both and the faster one runs; where it would be emulated, fp32 unprobed.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from aprelu_exp.errors import UserError

log = logging.getLogger(__name__)

PRECISION_CHOICES = ("trainer", "32", "bf16", "fast")
# perf.precision (and the bench's --precisions) -> Lightning's precision
LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}
# /proc/cpuinfo flags that mean the CPU computes bf16 dot products in hardware.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_FLAGS_REPORTED = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> frozenset[str]:
    line = next((ln for ln in _cpuinfo().splitlines() if ln.startswith("flags")), "")
    return frozenset(line.split(":", 1)[-1].split())


def onednn_bf16() -> bool:
    """Whether PyTorch's oneDNN has bf16 kernels for this CPU (its own probe of the hardware).
    The one private call of the project: torch has no public API for this probe, so it is kept here,
    in one place."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_capability() -> dict:
    """What the bench and summary.json report about the CPU's vector and bf16 support."""
    flags = cpu_flags()
    return {
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_bf16": onednn_bf16(),
        **{flag: flag in flags for flag in CPU_FLAGS_REPORTED},
    }


def cpu_model() -> str:
    return next((ln.split(":", 1)[1].strip() for ln in _cpuinfo().splitlines()
                 if ln.startswith("model name")), "unknown CPU")


def capability_line() -> str:
    """One line naming this CPU's kind, for logs that must say which machine they came from."""
    cap = cpu_capability()
    model = cpu_model()
    amx = "yes" if cap["amx_bf16"] else "no"
    return (f"CPU: {model}; vector level {cap['torch_capability']}; AVX-512 {'yes' if cap['avx512f'] else 'no'}; "
            f"AVX512_BF16 {'yes' if cap['avx512_bf16'] else 'no'}; AMX-BF16 {amx}; "
            f"oneDNN bf16 {'yes' if cap['onednn_bf16'] else 'no'}")


def bf16_support(device_type: str) -> tuple[bool, str]:
    """(fast bf16 available, why not) for the accelerator a run trains on."""
    if device_type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, ""
        return False, "this GPU has no bf16 support"
    if not onednn_bf16():
        return False, "PyTorch's oneDNN has no bf16 kernels for this CPU"
    flags = cpu_flags()
    if flags and not any(f in flags for f in BF16_CPU_FLAGS):
        return False, (f"this CPU lacks {' and '.join(BF16_CPU_FLAGS)} (bf16 would be emulated, slower "
                       f"than fp32)")
    return True, ""


def resolve_precision(requested: str, trainer_precision: str, device_type: str) -> tuple[str, str | None]:
    """(Lightning precision that runs, a note when it is not what was asked for)."""
    requested = str(requested).lower()
    if requested not in PRECISION_CHOICES:
        raise ValueError(f"perf.precision={requested!r}: use trainer (trainer.precision as configured), "
                         f"bf16 (bf16 autocast where the hardware has it), 32 (fp32) or fast (the one "
                         f"measured faster here).")
    if requested == "fast":
        raise ValueError("perf.precision=fast is measured, not resolved: see perf_switches")
    precision = str(trainer_precision) if requested == "trainer" else LIGHTNING_PRECISION[requested]
    if precision.startswith("bf16"):
        ok, why = bf16_support(device_type)
        if not ok:
            return "32-true", f"{precision} was asked for but {why}; training in fp32 (32-true) instead."
    return precision, None


@functools.lru_cache(maxsize=None)
def warn_once(note: str) -> None:
    log.warning(note)


# Standard validation at batch 1000 keeps a GPU busy; on a CPU the same images go through ~1.5x
# faster at batch 100, whose activations fit in the caches (bench: 1,580 vs 1,016 images/s compiled).
EVAL_BATCH_AUTO = {"cuda": 1000, "cpu": 100}
# Compilation costs about a minute on a cold cache (seconds on a warm one) and speeds the
# APReLU network's CPU training up by about a third: it pays once a run trains a full epoch.
COMPILE_PAYS_AFTER_IMAGES = 50_000


def on_cuda(cfg: DictConfig) -> bool:
    """Whether this run trains on a CUDA device (the trainer's accelerator, where one exists)."""
    accel = str(cfg.trainer.get("accelerator", "auto"))
    return torch.cuda.is_available() and accel in ("auto", "gpu", "cuda")


def check_accelerator(cfg: DictConfig) -> None:
    """A trainer that asks for a GPU (trainer=gpu, trainer=ddp) where CUDA sees none is refused
    before anything is written (Lightning would fail inside the Trainer with 'No supported gpu
    backend found!')."""
    accel = str(cfg.trainer.get("accelerator", "auto")).lower()
    if accel in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(
            f"trainer.accelerator={accel} asks for a CUDA GPU, but no GPU is visible here: "
            f"torch.cuda.is_available() is False (no NVIDIA driver or device, CUDA_VISIBLE_DEVICES "
            f"empty, or a CPU-only torch build). Use trainer=cpu or the default trainer (which trains "
            f"on the CPU here); trainer=ddp_cpu runs DDP on CPU processes.")


def run_device(cfg: DictConfig) -> torch.device:
    """The device this run trains on."""
    return torch.device("cuda" if on_cuda(cfg) else "cpu")


def eval_batch_size(cfg: DictConfig) -> int:
    """`data.eval_batch_size`, with auto resolved for the accelerator this run trains on."""
    value = cfg.data.eval_batch_size
    if str(value).lower() == "auto":
        return EVAL_BATCH_AUTO["cuda" if on_cuda(cfg) else "cpu"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"data.eval_batch_size={value!r}: use auto or a positive number of images.")
    return value


def _switch(value: str, key: str, auto: bool) -> bool:
    value = str(value).lower()
    if value not in ("auto", "true", "false"):
        raise UserError(f"{key}={value!r}: use auto, true or false.")
    return auto if value == "auto" else value == "true"


def fast_precision(device_type: str, probe, **run) -> tuple[str | None, dict]:
    """perf.precision=fast: (the Lightning precision that runs, what summary.json and the first screen
    say of the choice). Where bf16 would be emulated, fp32 without probing; else `probe(device_type,
    **run)` measures both (None: no probe given, as in preflight, where nothing trains yet)."""
    ok, why = bf16_support(device_type)
    if not ok:
        return "32-true", {"choice": "32-true", "probed": False,
                           "why": f"perf=fast chose fp32 (32-true) without probing: no fast bf16 here ({why})."}
    if probe is None:
        return None, {"choice": None, "probed": False, "why": "measured when the run starts"}
    found = probe(device_type, **run)
    return found["choice"], found


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(cfg: DictConfig) -> str:
    mode = str(cfg.perf.get("compile_mode", "default"))
    if mode not in COMPILE_MODES:
        raise UserError(f"perf.compile_mode={mode!r}: use one of torch.compile's modes, {', '.join(COMPILE_MODES)} "
                        f"(reduce-overhead: CUDA graphs on a GPU).")
    return mode


def perf_switches(cfg: DictConfig, num_train: int | None = None, max_epochs: int | None = None,
                  probe=None) -> dict:
    """Resolve the `perf` group's auto values for the accelerator and size of this run, and the
    precision that will actually run (a bf16 request on hardware without bf16 runs fp32; `fast`
    runs `probe`, see fast_precision)."""
    cuda = on_cuda(cfg)
    big = num_train is not None and max_epochs is not None and num_train * max_epochs >= COMPILE_PAYS_AFTER_IMAGES
    switches = {
        "compile": _switch(cfg.perf.compile, "perf.compile", auto=cuda or big),
        "compile_mode": compile_mode(cfg),
        "channels_last": _switch(cfg.perf.channels_last, "perf.channels_last", auto=cuda),
        "eval_batch_size": eval_batch_size(cfg),
    }
    requested = str(cfg.perf.precision)
    try:
        if requested.lower() == "fast":
            precision, switches["fast"] = fast_precision(
                "cuda" if cuda else "cpu", probe, cfg=cfg, compile_net=switches["compile"],
                channels_last=switches["channels_last"])
            note = None
        else:
            precision, note = resolve_precision(requested, cfg.trainer.precision, "cuda" if cuda else "cpu")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if note:
        warn_once(note)
    return {**switches, "precision": precision, "precision_requested": requested}
