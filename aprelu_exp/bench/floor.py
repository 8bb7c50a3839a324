"""The epoch time the convolutions alone take (CPU, profiled): the bound below which no fusion
of BatchNorm, activations or data work can bring an epoch."""
from __future__ import annotations

from torch.profiler import ProfilerActivity, profile

from aprelu_exp.bench.training import FULL_TRAIN_IMAGES
from aprelu_exp.console.noise import native_output_filtered


def convolution_ms(fn, calls: int = 5) -> dict:
    """Milliseconds of one call of `fn` inside convolution kernels (forward and backward) and in
    all operators, from the profiler's self times; the least of `calls` profiled calls, since a
    shared machine only ever adds to it. Give it an eager step: the convolutions are aten's
    either way, and a compiled network would recompile under the profiler."""
    best = None
    for _ in range(calls):
        with native_output_filtered(), profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        conv = total = 0.0
        for e in prof.key_averages():
            total += e.self_cpu_time_total
            if e.key.startswith(("aten::", "mkldnn::")) and "conv" in e.key:
                conv += e.self_cpu_time_total
        if best is None or conv < best[0]:
            best = (conv, total)
    return {"conv_ms": best[0] / 1e3, "all_ms": best[1] / 1e3}


def convolution_floor(step, batch: int, eval_runs, eval_images: int, num_test: int, calls: int = 6) -> dict:
    """Profiled training steps and evaluation passes (the least of up to 5 and 3 profiled calls, no
    more than `calls`, the bench's windows), scaled to 50,000 training and 2 x num_test test images."""
    train = convolution_ms(step, calls=min(5, calls))
    evals = [convolution_ms(run, calls=min(3, calls)) for run in eval_runs]
    train_s = train["conv_ms"] / 1e3 * FULL_TRAIN_IMAGES / batch
    eval_s = sum(e["conv_ms"] for e in evals) / 1e3 * num_test / eval_images
    return {"train_conv_ms_per_step": train["conv_ms"], "train_ms_per_step_profiled": train["all_ms"],
            "conv_share_of_step": train["conv_ms"] / train["all_ms"],
            "epoch_conv_s": train_s + eval_s, "train_conv_s": train_s, "eval_conv_s": eval_s}
