"""`python -m aprelu_exp.bench [hydra overrides] [--out FILE.json] [--windows N]`

Measures, in one process and one run, for the composed config (record 16 by default):
training images/s of the network and of the same network with plain ReLU (eager), evaluation
images/s in both validation modes, augmentation images/s, the end-to-end epoch time
(augmentation + training + both evaluations, through the real Lightning loop on a subset, scaled
to the full data set), compile/warm-up time (reported apart), the epoch time the convolutions alone
take (profiled; CPU), peak memory, versions and device. Every rate is the median over several timed
windows, with min and max; the training contenders are timed in interleaved windows.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from aprelu_exp import config_schema  # noqa: F401
from aprelu_exp.records.lineage import CONF_DIR, _ensure_resolvers


FULL_TRAIN_IMAGES = 50_000


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rates(fn, images_per_call: int, windows: int, calls: int, device) -> dict:
    rates = []
    for _ in range(windows):
        _sync(device)
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        rates.append(images_per_call * calls / (time.perf_counter() - t))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "windows": windows}


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    _ensure_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def _module(cfg, activation=None, compile_net=None, channels_last=None):
    from aprelu_exp.train import build_module, build_net, plan_schedule
    from omegaconf import OmegaConf

    c = cfg.copy()
    OmegaConf.set_struct(c, False)
    if activation:
        c.model.activation = activation
    if compile_net is not None:
        c.perf.compile = str(compile_net).lower()
    if channels_last is not None:
        c.perf.channels_last = str(channels_last).lower()
    switches = _full_run_switches(c, FULL_TRAIN_IMAGES)
    return build_module(c, build_net(c), plan_schedule(c), switches), switches


def training_step_fn(module, batch, device) -> tuple:
    """A plain SGD step of `module` on one fixed batch, after warm-up; returns (step, warm-up s)."""
    x, y = batch
    module.to(device).train()
    opt = module.configure_optimizers()["optimizer"]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(x), y)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    for _ in range(3):  # warm-up: compilation, allocator, oneDNN primitive caches
        step()
    _sync(device)
    return step, time.perf_counter() - t


def interleaved_rates(steps: dict, images: int, windows: int, calls: int, device, ctx) -> dict:
    """Time the step functions window by window in turn, so that a slow spell of a shared
    machine hits every contender alike and the ratios between them stay fair."""
    rates: dict = {name: [] for name in steps}
    names = list(steps)
    for w in range(windows):
        # The order rotates too: whichever runs first after another's window pays for its caches.
        for name in names[w % len(names):] + names[:w % len(names)]:
            fn = steps[name]
            with ctx():
                rates[name].append(_rates(fn, images, 1, calls, device)["median"])
    return {name: {"median": statistics.median(r), "min": min(r), "max": max(r), "windows": windows}
            for name, r in rates.items()}


def convolution_ms(fn, calls: int = 5) -> dict:
    """Milliseconds of one call of `fn` spent inside convolution kernels (forward and backward),
    and in all operators, from the profiler's self times: what no fusion of the rest can remove.
    Each call is profiled alone and the least convolution time kept, since this is a bound
    and a shared machine only ever adds to it."""
    from torch.profiler import ProfilerActivity, profile

    # A compiled network recompiles on its first call under the profiler: keep that out.
    with profile(activities=[ProfilerActivity.CPU]):
        fn()
    best = None
    for _ in range(calls):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        conv = total = 0.0
        for e in prof.key_averages():
            total += e.self_cpu_time_total
            # aten/mkldnn operators only: compiled kernels' names mention the ops they fused.
            if e.key.startswith(("aten::", "mkldnn::")) and "conv" in e.key:
                conv += e.self_cpu_time_total
        if best is None or conv < best[0]:
            best = (conv, total)
    return {"conv_ms": best[0] / 1e3, "all_ms": best[1] / 1e3}


def bench_eval(module, x, batch: int, article: bool, windows, device) -> tuple[dict, object]:
    """Evaluation of the images `x` in batches of `batch`, as the validation loop feeds them."""
    from aprelu_exp.training.module import batchnorm_batch_statistics

    module.to(device).eval()
    batches = list(torch.split(x, batch))

    @torch.no_grad()
    def run():
        if article:
            with batchnorm_batch_statistics(module.net):
                for b in batches:
                    module(b)
        else:
            for b in batches:
                module(b)

    for _ in range(2):
        run()
    return _rates(run, x.shape[0], windows, 1, device), run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aprelu_exp.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=record_15 perf.compile=true")
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4, help="training steps per window")
    parser.add_argument("--epoch-subset", type=int, default=3000,
                        help="training images of the measured Lightning epoch (scaled to 50,000)")
    parser.add_argument("--epoch-test-subset", type=int, default=5000,
                        help="test images of its two evaluations (scaled to the 10,000)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    from aprelu_exp.data.augment import KerasAugment, KerasAugmentConfig
    from aprelu_exp.data.cifar10 import load_cifar10
    from aprelu_exp.runs.rundir import environment
    from aprelu_exp.train import augment_config

    cfg = _compose(args.overrides)
    accel = str(cfg.trainer.accelerator)
    device = torch.device("cuda" if torch.cuda.is_available() and accel in ("auto", "gpu", "cuda") else "cpu")
    torch.set_float32_matmul_precision(str(cfg.perf.matmul_precision))
    arrays = load_cifar10(cfg.data.root, cfg.data.download, cfg.data.verify_digests)
    bs = int(cfg.data.batch_size)
    mean = float(arrays.train_images.mean(dtype="float64") / 255.0)
    x = (torch.from_numpy(arrays.train_images[:bs]).float() / 255 - mean).to(device)
    y = torch.from_numpy(arrays.train_labels[:bs]).to(device)
    autocast = "bf16" in str(cfg.trainer.precision)
    results: dict = {"config": {"overrides": args.overrides, "record": cfg.record.name,
                                "precision": str(cfg.trainer.precision), "batch_size": bs},
                     "environment": environment(device)}

    def ctx():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)

    # 1. training throughput: the configured network (fast path as configured), the same network
    # eager, and the plain-ReLU network eager, timed in interleaved windows
    module, switches = _module(cfg)
    results["perf"] = switches
    steps = {}
    with ctx():
        steps["train_images_per_s"], results["warmup_s"] = training_step_fn(module, (x, y), device)
        if switches["compile"] or switches["channels_last"]:
            eager, _ = _module(cfg, compile_net=False, channels_last=False)
            steps["train_images_per_s_eager"], _ = training_step_fn(eager, (x, y), device)
        relu, _ = _module(cfg, activation="relu", compile_net=False, channels_last=False)
        steps["train_images_per_s_relu_eager"], _ = training_step_fn(relu, (x, y), device)
    results.update(interleaved_rates(steps, bs, args.windows, args.steps, device, ctx))
    train = results["train_images_per_s"]

    # 2. evaluation throughput in both validation modes
    eb, ab = switches["eval_batch_size"], int(cfg.data.article_eval_batch_size)
    n_eval = max(eb, ab, 1000)
    xe = (torch.from_numpy(arrays.test_images[:n_eval]).float() / 255 - mean).to(device)
    with ctx():
        results["eval_images_per_s_standard"], eval_std = bench_eval(module, xe, eb, False, args.windows, device)
        results["eval_images_per_s_article"], eval_art = bench_eval(module, xe, ab, True, args.windows, device)
        if device.type == "cpu":
            results["convolution_floor"] = convolution_floor(
                steps["train_images_per_s"], bs, (eval_std, eval_art), n_eval, len(arrays.test_labels))

    # 3. augmentation throughput (uint8 -> centred float -> one resampling per batch)
    aug = KerasAugment(augment_config(cfg) or KerasAugmentConfig())
    raw = torch.from_numpy(arrays.train_images[:1000]).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    results["augment_images_per_s"] = _rates(lambda: aug(raw.float().div(255).sub(mean), g), 1000,
                                             args.windows, 5, device)

    # 4. a real Lightning epoch (loader + augmentation + training + both evaluations) on a subset
    results["epoch"] = measured_epoch(cfg, arrays, args.epoch_subset, args.epoch_test_subset)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    results["peak_memory_mb"] = round(peak / 2 ** 20, 1)
    results["bench_wall_s"] = time.perf_counter() - started
    results["apr_vs_relu_eager"] = train["median"] / results["train_images_per_s_relu_eager"]["median"]

    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(results)
    print(f"\nwritten: {args.out}")
    return 0


def convolution_floor(step, batch: int, eval_runs, eval_images: int, num_test: int) -> dict:
    """The epoch time the convolutions alone take (CPU), from profiled training steps and
    evaluation passes scaled to 50,000 training and 2 x num_test test images: the bound below
    which no fusion of BatchNorm, activations or data work can bring an epoch."""
    train = convolution_ms(step)
    evals = [convolution_ms(run, calls=3) for run in eval_runs]
    train_s = train["conv_ms"] / 1e3 * FULL_TRAIN_IMAGES / batch
    eval_s = sum(e["conv_ms"] for e in evals) / 1e3 * num_test / eval_images
    return {"train_conv_ms_per_step": train["conv_ms"], "train_ms_per_step_profiled": train["all_ms"],
            "conv_share_of_step": train["conv_ms"] / train["all_ms"],
            "epoch_conv_s": train_s + eval_s, "train_conv_s": train_s, "eval_conv_s": eval_s}


def measured_epoch(cfg, arrays, subset: int, test_subset: int) -> dict:
    """Two Lightning epochs on `subset` training images and `test_subset` test images (both
    validation modes); the second epoch is the measurement (the first carries compilation and
    warm-up). Its training and evaluation times are scaled to the full training and test sets."""
    import tempfile

    from omegaconf import OmegaConf

    from aprelu_exp.report.collect import read_metrics_rows
    from aprelu_exp.train import train

    c = cfg.copy()
    OmegaConf.set_struct(c, False)
    c.data.train_subset = subset
    num_test = len(arrays.test_labels)
    used_test = min(num_test, test_subset, int(c.data.test_subset or num_test))
    c.data.test_subset = used_test
    c.budget = None
    c.trainer.max_epochs = 2
    c.trainer.enable_progress_bar = False
    c.trainer.enable_model_summary = False
    c.logger.backends = []
    # The fast-path decision is the one a full-length run of this config gets, not a 2-epoch one's.
    for key, value in _full_run_switches(cfg, len(arrays.train_labels)).items():
        if key in c.perf and str(c.perf[key]) == "auto":
            c.perf[key] = str(value).lower()
    with tempfile.TemporaryDirectory() as tmp:
        s = train(c, Path(tmp), arrays=arrays)
        rows = read_metrics_rows(Path(tmp))
    first, row = rows[0], rows[-1]
    scale = len(arrays.train_labels) / subset
    train_full = float(row["train_time_s"]) * scale
    eval_full = float(row["eval_time_s"]) * num_test / used_test
    return {"train_subset": subset, "train_time_s_measured": float(row["train_time_s"]),
            "test_subset": used_test, "eval_time_s_measured": float(row["eval_time_s"]),
            "train_time_s_full": train_full, "eval_time_s": eval_full,
            "end_to_end_epoch_s": train_full + eval_full,
            "first_epoch_s": float(first["epoch_time_s"]), "perf": s["perf"],
            "note": "second of two epochs; the first (first_epoch_s) includes compilation/warm-up"}


def _full_run_switches(cfg, num_train: int) -> dict:
    """The perf switches (auto resolved) of a full-length run of this config on num_train images."""
    from aprelu_exp.train import perf_switches, plan_schedule

    return perf_switches(cfg, num_train, plan_schedule(cfg).max_epochs)


def print_table(r: dict) -> None:
    def line(name, v):
        if isinstance(v, dict) and "median" in v:
            print(f"{name:<38} {v['median']:>10.1f}   (min {v['min']:.1f}, max {v['max']:.1f})")
        else:
            print(f"{name:<38} {v}")

    env = r["environment"]
    print(f"device: {env.get('device_name')} | torch {env['packages']['torch']} | threads {env['torch_threads']}")
    print(f"record: {r['config']['record']} | precision {r['config']['precision']} | perf {r['perf']}")
    line("train images/s (configured)", r["train_images_per_s"])
    if "train_images_per_s_eager" in r:
        line("train images/s (same net, eager)", r["train_images_per_s_eager"])
    line("train images/s (plain ReLU, eager)", r["train_images_per_s_relu_eager"])
    line("  ratio configured / ReLU eager", f"{r['apr_vs_relu_eager']:.2f}x")
    line(f"eval images/s standard (batch {r['perf']['eval_batch_size']})", r["eval_images_per_s_standard"])
    line("eval images/s article (batch 100)", r["eval_images_per_s_article"])
    line("augmentation images/s", r["augment_images_per_s"])
    line("warm-up / compile s (not in rates)", f"{r['warmup_s']:.1f}")
    e = r["epoch"]
    line("end-to-end epoch s (50k + 2x10k eval)", f"{e['end_to_end_epoch_s']:.1f}  "
         f"(train {e['train_time_s_full']:.1f} scaled from {e['train_subset']}, "
         f"eval {e['eval_time_s']:.1f} scaled from {e['test_subset']})")
    line("  first epoch s (compile, warm-up)", f"{e['first_epoch_s']:.1f}")
    if "convolution_floor" in r:
        f = r["convolution_floor"]
        line("convolutions alone, s per epoch", f"{f['epoch_conv_s']:.1f}  (train {f['train_conv_s']:.1f}, "
             f"eval {f['eval_conv_s']:.1f}; {100 * f['conv_share_of_step']:.0f}% of a training step)")
    line("peak memory MB", r["peak_memory_mb"])
    line("bench wall time s", f"{r['bench_wall_s']:.0f}")


if __name__ == "__main__":
    sys.exit(main())
