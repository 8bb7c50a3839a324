"""The fast path's precision switch: bf16 where the hardware has it, fp32 where it matters."""
import logging

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aprelu_exp.train import train
from aprelu_exp.training import precision as prec
from aprelu_exp.training.precision import perf_switches

TINY = ["data.train_subset=200", "data.test_subset=200", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "perf.compile=false"]
# Only the test that really trains in bf16 depends on the host; every other test forces the probes.
needs_bf16 = pytest.mark.skipif(not prec.bf16_support("cpu")[0],
                                reason="this CPU has no fast bf16 (oneDNN bf16 and AVX512_BF16/AMX needed)")

# The two CPU kinds of the project's machines, as their probes answer.
ZEN4_AVX512_BF16 = (True, frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"}))
EPYC_AVX2_ONLY = (False, frozenset({"avx2", "fma"}))


def force_cpu(monkeypatch, onednn: bool, flags: frozenset) -> None:
    """Make both CPU probes answer as given, whatever this host would say."""
    prec.warn_once.cache_clear()
    monkeypatch.setattr(prec, "onednn_bf16", lambda: onednn)
    monkeypatch.setattr(prec, "cpu_flags", lambda: flags)


class DtypeLog(TorchDispatchMode):
    """Every aten operator that runs, with the dtypes of its tensor arguments."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, set, set]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls.append((func.__name__, _float_dtypes((args, kwargs or {})), _float_dtypes(out)))
        return out

    def dtypes_of(self, *fragments: str, outputs: bool = False) -> set:
        return set().union(*[o if outputs else i for name, i, o in self.calls
                             if any(f in name for f in fragments)] or [set()])


def _float_dtypes(tree) -> set:
    return {a.dtype for a in torch.utils._pytree.tree_leaves(tree)
            if isinstance(a, torch.Tensor) and a.is_floating_point()}


@needs_bf16
def test_fast_path_runs_convolutions_in_bf16_and_batchnorm_loss_sigmoid_in_fp32(make_cfg, cifar, tmp_path):
    cfg = make_cfg("perf=fast", "perf.precision=bf16", *TINY)  # forced: perf=fast alone measures first
    log = DtypeLog()
    with log:
        summary = train(cfg, tmp_path / "run", arrays=cifar)
    assert summary["perf"]["precision"] == "bf16-mixed"
    # The switch really trains in bf16: forward and backward convolutions see bf16 tensors.
    assert torch.bfloat16 in log.dtypes_of("convolution")
    # BatchNorm (training, both validation modes and their backward), the APReLU gate's sigmoid
    # and the loss never see a bf16 tensor; the averages (the gate's inputs, the head's pooling)
    # are taken into fp32.
    for ops in (("batch_norm",), ("sigmoid",), ("log_softmax", "nll_loss")):
        seen = log.dtypes_of(*ops) | log.dtypes_of(*ops, outputs=True)
        assert seen == {torch.float32}, (ops, seen)
    assert log.dtypes_of("mean", outputs=True) == {torch.float32}
    assert summary["final"]["train_loss"] > 0 and summary["final"]["val_acc_article"] >= 0


def test_records_stay_fp32_unless_asked(make_cfg):
    assert perf_switches(make_cfg())["precision"] == "32-true"
    assert perf_switches(make_cfg("perf.precision=32", "trainer.precision=bf16-mixed"))["precision"] == "32-true"


def test_fast_switch_and_trainer_precision_compose(make_cfg, monkeypatch):
    force_cpu(monkeypatch, *ZEN4_AVX512_BF16)
    assert perf_switches(make_cfg("perf=fast", "perf.precision=bf16"))["precision"] == "bf16-mixed"
    assert perf_switches(make_cfg("trainer.precision=bf16-mixed"))["precision"] == "bf16-mixed"


# (oneDNN has bf16 kernels, /proc/cpuinfo flags) -> bf16 runs?, what the note must name
PROBES = [
    (True, frozenset({"avx2", "avx512f", "avx512_bf16"}), True, None),
    (True, frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16"}), True, None),
    (False, frozenset({"avx2", "avx512f", "avx512_bf16"}), False, "oneDNN has no bf16 kernels"),
    (True, frozenset({"avx2", "fma"}), False, "lacks avx512_bf16 and amx_bf16"),
    (False, frozenset({"avx2", "fma"}), False, "oneDNN has no bf16 kernels"),
    (True, frozenset(), True, None),  # no /proc/cpuinfo (not Linux): oneDNN's answer decides
]


@pytest.mark.parametrize("onednn, flags, runs_bf16, why", PROBES,
                         ids=["avx512_bf16", "amx", "no-onednn", "avx2-only-onednn-yes", "avx2-only", "no-cpuinfo"])
def test_bf16_request_follows_both_cpu_probes(onednn, flags, runs_bf16, why, make_cfg, monkeypatch, caplog):
    force_cpu(monkeypatch, onednn, flags)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            switches = perf_switches(make_cfg("perf.precision=bf16"))
    assert switches["precision"] == ("bf16-mixed" if runs_bf16 else "32-true")
    assert switches["precision_requested"] == "bf16"
    notes = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    if runs_bf16:
        assert notes == []
    else:  # said once, naming the reason and what runs instead
        assert len(notes) == 1 and why in notes[0] and "training in fp32" in notes[0], notes


@pytest.mark.parametrize("machine", [ZEN4_AVX512_BF16, EPYC_AVX2_ONLY], ids=["zen4-avx512_bf16", "epyc-avx2"])
def test_records_train_fp32_on_either_machine(machine, make_cfg, monkeypatch, caplog):
    force_cpu(monkeypatch, *machine)
    with caplog.at_level(logging.WARNING):
        assert perf_switches(make_cfg("experiment=record_16"))["precision"] == "32-true"
    assert not [r for r in caplog.records if "bf16" in r.getMessage()]


def test_capability_line_names_vector_level_and_bf16(monkeypatch):
    force_cpu(monkeypatch, *EPYC_AVX2_ONLY)
    line = prec.capability_line()
    assert "AVX-512 no" in line and "AVX512_BF16 no" in line and "oneDNN bf16 no" in line
    assert f"vector level {torch.backends.cpu.get_cpu_capability()}" in line
    force_cpu(monkeypatch, *ZEN4_AVX512_BF16)
    line = prec.capability_line()
    assert "AVX-512 yes" in line and "AVX512_BF16 yes" in line and "oneDNN bf16 yes" in line


def test_gpu_keeps_bf16_and_falls_back_without_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prec.resolve_precision("trainer", "bf16-mixed", "cuda") == ("bf16-mixed", None)
    assert prec.resolve_precision("bf16", "32-true", "cuda") == ("bf16-mixed", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    precision, note = prec.resolve_precision("trainer", "bf16-mixed", "cuda")
    assert precision == "32-true" and "GPU has no bf16" in note


def test_unknown_precision_is_refused_naming_the_key(make_cfg):
    from aprelu_exp.errors import UserError

    with pytest.raises(UserError, match=r"perf.precision='fp8'.*trainer.*bf16.*32.*fast"):
        perf_switches(make_cfg("perf.precision=fp8"))


def test_cpu_capability_agrees_with_proc_cpuinfo():
    cap = prec.cpu_capability()
    flags = open("/proc/cpuinfo").read()
    assert cap["avx512_bf16"] == (" avx512_bf16" in flags)
    assert cap["avx512f"] == (" avx512f" in flags)
    assert cap["torch_capability"] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "SVE256", "VSX")
