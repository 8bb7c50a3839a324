"""`python -m aprelu_exp.bench [hydra overrides] [--out FILE.json] [--windows N]`
(`python -m aprelu_exp.bench cli`: the start-up times of the commands that train nothing, see bench/cli.py;
`python -m aprelu_exp.bench packed --runs 1,4,16`: N runs packed into one network against N solo runs
and N processes, see bench/packed.py)

Measures the composed config (record 16 by default) in one process, in fp32 and, where the
hardware has it, in bf16 (autocast, the fast path's arithmetic), side by side: training images/s
of the configured network, the same network eager and the plain-ReLU network eager (all timed in
interleaved windows); evaluation images/s in both validation modes; the end-to-end epoch time
(augmentation + training + both evaluations through the real Lightning loop on a subset, scaled to
the full data set); compile/warm-up time apart; the epoch time the convolutions alone take
(profiled, CPU); the bf16/fp32 ratios. Then augmentation images/s, peak memory, versions, device
and the CPU's vector and bf16 capability, and what perf=fast picks here (its probe's cached answer or
a fresh probe) beside the bench's own figures. Rates are medians over windows, with min and max.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

from aprelu_exp import config_schema  # noqa: F401
from aprelu_exp.bench import cli, packed
from aprelu_exp.bench.epoch import measured_epoch
from aprelu_exp.bench.evaluation import eval_rates
from aprelu_exp.bench.floor import convolution_floor
from aprelu_exp.bench.table import print_table, ratios
from aprelu_exp.bench.training import build, fast_choice, full_run_switches
from aprelu_exp.compose import compose_config
from aprelu_exp.data.augment import KerasAugment, KerasAugmentConfig
from aprelu_exp.data.cifar10 import load_cifar10
from aprelu_exp.errors import run_command
from aprelu_exp.console.noise import quiet_third_party
from aprelu_exp.runs.rundir import environment
from aprelu_exp.training.build import build_augment
from aprelu_exp.training.measured_rates import network_multiply_adds, record_bench
from aprelu_exp.training.precision import LIGHTNING_PRECISION, bf16_support, cpu_capability, run_device
from aprelu_exp.training.speed import interleaved_rates, precision_context, rates, training_step_fn

# perf.precision value -> the Lightning precision it runs as.
PRECISIONS = LIGHTNING_PRECISION


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cli"]:
        return cli.main(argv[1:])
    if argv[:1] == ["packed"]:
        return packed.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    # Missing data, an unknown override: the main command's one-paragraph error and exit 2.
    return run_command(lambda: bench(args, parser))


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--eval-images", type=int, default=1000,
                        help="test images of each timed and profiled evaluation pass (default 1000)")
    parser.add_argument("--precisions", default="32,bf16",
                        help="comma-separated perf.precision values to measure side by side (default 32,bf16)")
    return parser


def bench(args, parser) -> None:
    started = time.perf_counter()
    quiet_third_party()
    # One process compiles the network for each precision, in training, standard-evaluation and
    # article-evaluation mode, twice (the timed steps and the measured epoch): more variants than
    # dynamo's default cache keeps per function, past which it would silently run eager.
    # dynamo's config is its documented tuning surface, though under a private-looking name.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    cfg = compose_config(args.overrides)
    device = run_device(cfg)
    torch.set_float32_matmul_precision(str(cfg.perf.matmul_precision))
    switches = full_run_switches(cfg)
    arrays = load_cifar10(cfg.data.root, cfg.data.download, cfg.data.verify_digests)
    bs = int(cfg.data.batch_size)
    mean = float(arrays.train_images.mean(dtype="float64") / 255.0)
    x = (torch.from_numpy(arrays.train_images[:bs]).float() / 255 - mean).to(device)
    y = torch.from_numpy(arrays.train_labels[:bs]).to(device)
    results: dict = {"config": {"overrides": args.overrides, "record": cfg.record.name,
                                "precision": switches["precision"], "batch_size": bs},
                     "environment": {**environment(device), "cpu": cpu_capability()},
                     "perf": switches, "by_precision": {}}
    wanted = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PRECISIONS]
    if unknown or not wanted:
        parser.error(f"--precisions takes a comma-separated list of {', '.join(PRECISIONS)}; got {args.precisions!r}")
    bf16_ok, why = bf16_support(device.type)
    if "bf16" in wanted and not bf16_ok:
        wanted.remove("bf16")
        results["bf16_unavailable"] = why
        print(f"bf16 not measured: {why}", file=sys.stderr)
    precisions = [PRECISIONS[p] for p in wanted]

    # 1. training throughput: per precision the configured network (fast-path switches as a full
    # run of this config resolves them), the same network eager, and the plain-ReLU network eager
    contenders, modules, eager_steps = {}, {}, {}
    for p in precisions:
        ctx = precision_context(device, p)
        r = results["by_precision"][p] = {}
        module, _ = build(cfg)
        modules[p] = module
        step, r["warmup_s"] = training_step_fn(module, (x, y), device, ctx)
        contenders[(p, "train_images_per_s")] = (step, ctx)
        if switches["compile"] or switches["channels_last"]:
            eager, _ = build(cfg, compile_net=False, channels_last=False)
            eager_steps[p], _ = training_step_fn(eager, (x, y), device, ctx)
            contenders[(p, "train_images_per_s_eager")] = (eager_steps[p], ctx)
        else:
            eager_steps[p] = step
        relu, _ = build(cfg, activation="relu", compile_net=False, channels_last=False)
        contenders[(p, "train_images_per_s_relu_eager")] = (training_step_fn(relu, (x, y), device, ctx)[0], ctx)
    for (p, key), value in interleaved_rates(contenders, bs, args.windows, args.steps, device).items():
        results["by_precision"][p][key] = value

    # 2. evaluation throughput in both validation modes; 3. the convolutions' share (CPU)
    eb, ab = switches["eval_batch_size"], int(cfg.data.article_eval_batch_size)
    if args.eval_images < 1 or args.windows < 1 or args.steps < 1:
        parser.error("--eval-images, --windows and --steps take positive numbers")
    n_eval = max(eb, ab, args.eval_images)
    results["config"]["eval_images"] = n_eval
    xe = (torch.from_numpy(arrays.test_images[:n_eval]).float() / 255 - mean).to(device)
    for p in precisions:
        ctx, r = precision_context(device, p), results["by_precision"][p]
        r["eval_images_per_s_standard"], eval_std = eval_rates(modules[p], xe, eb, False, args.windows, device, ctx)
        r["eval_images_per_s_article"], eval_art = eval_rates(modules[p], xe, ab, True, args.windows, device, ctx)
        if device.type == "cpu":
            with ctx():
                r["convolution_floor"] = convolution_floor(eager_steps[p], bs, (eval_std, eval_art), n_eval,
                                                           len(arrays.test_labels), calls=args.windows)

    # 4. augmentation throughput (uint8 -> centred float -> one resampling per batch; fp32 always)
    aug = KerasAugment(build_augment(cfg) or KerasAugmentConfig())
    raw = torch.from_numpy(arrays.train_images[:1000]).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    results["augment_images_per_s"] = rates(lambda: aug(raw.float().div(255).sub(mean), g), 1000,
                                            args.windows, 5, device)

    # 5. a real Lightning epoch per precision
    for p, name in zip(precisions, wanted):
        results["by_precision"][p]["epoch"] = measured_epoch(cfg, arrays, args.epoch_subset,
                                                             args.epoch_test_subset, name)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    results["peak_memory_mb"] = round(peak / 2 ** 20, 1)
    results["ratios"] = ratios(results["by_precision"])
    results["fast_probe"] = fast_choice(cfg)
    results["bench_wall_s"] = time.perf_counter() - started

    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(results)
    print(f"\nwritten: {args.out}")
    # What `records replay --plan` estimates from on this machine.
    kept = record_bench(results, network_multiply_adds(cfg.model))
    if kept:
        print(f"kept this device's epoch rates for estimates: {kept}")


if __name__ == "__main__":
    sys.exit(main())
