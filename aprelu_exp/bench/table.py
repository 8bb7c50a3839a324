"""The bench's derived ratios and its printed table (the JSON holds everything)."""
from __future__ import annotations

from aprelu_exp.training.precision import LIGHTNING_PRECISION

FP32, BF16 = LIGHTNING_PRECISION["32"], LIGHTNING_PRECISION["bf16"]


def ratios(by_precision: dict) -> dict:
    out = {}
    for p, r in by_precision.items():
        out[f"configured_over_relu_eager[{p}]"] = (r["train_images_per_s"]["median"]
                                                   / r["train_images_per_s_relu_eager"]["median"])
    if FP32 in by_precision and BF16 in by_precision:
        a, b = by_precision[FP32], by_precision[BF16]
        for key in ("train_images_per_s", "train_images_per_s_eager", "train_images_per_s_relu_eager",
                    "eval_images_per_s_standard", "eval_images_per_s_article"):
            if key in a and key in b:
                out[f"bf16_over_fp32[{key}]"] = b[key]["median"] / a[key]["median"]
        # Below 1 is faster: the fast path's epoch as a share of the fp32 epoch.
        out["bf16_epoch_s_over_fp32_epoch_s"] = b["epoch"]["end_to_end_epoch_s"] / a["epoch"]["end_to_end_epoch_s"]
    return out


def _rate(v: dict | None) -> str:
    if not v:
        return "-"
    return f"{v['median']:.0f} ({v['min']:.0f}-{v['max']:.0f})"


def print_table(r: dict) -> None:
    env, by = r["environment"], r["by_precision"]
    cpu = env.get("cpu", {})
    print(f"device: {env.get('device_name')} | torch {env['packages']['torch']} | threads {env['torch_threads']}")
    print("cpu: " + ", ".join(f"{k}={v}" for k, v in cpu.items()))
    print(f"record: {r['config']['record']} | configured precision {r['config']['precision']} | perf {r['perf']}")
    if "bf16_unavailable" in r:
        print(f"bf16 not measured: {r['bf16_unavailable']}")
    names = list(by)
    print(f"\n{'':<42}" + "".join(f"{n:>24}" for n in names))

    def row(label, fn):
        print(f"{label:<42}" + "".join(f"{fn(by[n]):>24}" for n in names))

    row("train images/s (configured)", lambda b: _rate(b.get("train_images_per_s")))
    row("train images/s (same net, eager)", lambda b: _rate(b.get("train_images_per_s_eager")))
    row("train images/s (plain ReLU, eager)", lambda b: _rate(b.get("train_images_per_s_relu_eager")))
    row(f"eval images/s standard (batch {r['perf']['eval_batch_size']})",
        lambda b: _rate(b.get("eval_images_per_s_standard")))
    row("eval images/s article (batch 100)", lambda b: _rate(b.get("eval_images_per_s_article")))
    row("end-to-end epoch s (50k + 2x10k eval)", lambda b: f"{b['epoch']['end_to_end_epoch_s']:.1f}")
    row("  of which training / evaluation s",
        lambda b: f"{b['epoch']['train_time_s_full']:.1f} / {b['epoch']['eval_time_s']:.1f}")
    row("  first epoch s (compile, warm-up)", lambda b: f"{b['epoch']['first_epoch_s']:.1f}")
    row("warm-up / compile s (not in rates)", lambda b: f"{b['warmup_s']:.1f}")
    if all("convolution_floor" in b for b in by.values()):
        row("convolutions alone, s per epoch", lambda b: f"{b['convolution_floor']['epoch_conv_s']:.1f}")
    e = next(iter(by.values()))["epoch"]
    print(f"(epoch scaled from {e['train_subset']} training and {e['test_subset']} test images)")
    print()
    for k, v in r["ratios"].items():
        print(f"{k:<60} {v:.2f}x")
    fast = r.get("fast_probe")
    if fast:  # the probe's choice beside the bench's own measurement
        print(f"{'perf=fast here':<60} {fast['why']}{' (cached)' if fast.get('cached') else ''}")
    a = r["augment_images_per_s"]
    print(f"{'augmentation images/s (fp32)':<60} {_rate(a)}")
    print(f"{'peak memory MB':<60} {r['peak_memory_mb']}")
    print(f"{'bench wall time s':<60} {r['bench_wall_s']:.0f}")
