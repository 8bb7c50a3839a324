"""Write docs/performance.md from the measurements committed under results/.

    .venv/bin/python scripts/perf_tables.py            # rewrite docs/performance.md
    .venv/bin/python scripts/perf_tables.py --check    # exit 1 when docs/performance.md is stale

Sources, each row naming its machine, commit and date:

* the bench, `results/*/bench*.json` (`python -m aprelu_exp.bench --out ...`): its `environment`
  holds the device, the CPU's capability and the commit; it records no date, so the date is the
  folder's (`results/<date>_<what>/`);
* CI runs, `results/<date>_ci/<label>/phases.json` (machine, commit, date, each phase's wall time in
  seconds, the suites' pytest counts) and `<suite>.durations.txt` beside it (what pytest prints under
  "slowest durations" with `--durations=0`), suite = default, slow, cluster;
* the GPU check, `results/*_gpu*/gpu_check.json` (`bash scripts/gpu_check.sh`).

Nothing here is measured: the page is a function of results/, so `--check` can tell when it is stale.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
PAGE = REPO / "docs" / "performance.md"
SUITES = ("default", "slow", "cluster")
PHASES = ("setup", *SUITES, "total")
SLOWEST = 15
NOT_RECORDED = "not recorded"
FOLDER_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})")
# `12.34s call     tests/test_x.py::test_y[param]` (pytest's --durations lines)
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(setup|call|teardown)\s+(\S.*?)\s*$")

INTRO = """\
# Performance

What the project's measurements say, per machine. This page is generated from `results/` by
`scripts/perf_tables.py` (edit that script's template, not this file); a test fails when it is
stale. Every row names the machine, the commit and the date it was measured on: the project's
machines differ (an AVX2-only AMD EPYC, an AMD EPYC Zen 4 and an Intel Xeon with AVX512_BF16,
shared 2-core machines), so compare figures only within one machine.

## Measuring

```bash
python -m aprelu_exp.bench                             # record 16, fp32 and bf16 side by side; writes bench.json
python -m aprelu_exp.bench experiment=record_15 perf.compile=false --out b.json
python -m aprelu_exp.bench --precisions 32             # fp32 only
python -m aprelu_exp.bench --windows 2 --steps 1 --epoch-subset 200 --eval-images 200   # a quick check, not a measurement
python -m aprelu_exp.bench cli --repeats 3 --baseline ../other-checkout   # start-up time of the commands that train nothing
python -m aprelu_exp.bench packed --runs 1,4,16 --out packed.json   # N runs packed into one network vs N solo, N processes
bash scripts/gpu_check.sh                              # with CUDA: under 10 minutes, into results/<date>_gpu/
bash scripts/gpu_check.sh --cpu-sized                  # the same steps CPU-sized (what runs without CUDA)
.venv/bin/python scripts/perf_tables.py                # this page again, after a result was added
```

The bench measures, in one process, for fp32 and (where the hardware has it) bf16: training
images/s of the configured network, of the same network eager and of the plain-ReLU network eager,
timed in interleaved windows whose order rotates (a busy spell of a shared machine hits all alike);
evaluation images/s in both validation modes; an end-to-end Lightning epoch (data, augmentation,
training, both evaluations, scaled to 50,000 + 2 x 10,000 images); compile/warm-up time apart; the
time the convolutions alone take per epoch (profiled, CPU); the bf16/fp32 ratios; augmentation
images/s, peak memory, versions, device and the CPU's capability (torch's vector level, oneDNN bf16,
AVX-512, AVX512_BF16, AMX), and what `perf=fast` picks here (`fast_probe`). Rates are medians over
the windows, with min and max. Where bf16 would be emulated (no oneDNN bf16 kernels, as on an
AVX2-only CPU) it measures fp32 alone and says why (`bf16_unavailable`). A cold compile cache
(a fresh machine) adds the compilation of each precision to the bench's wall time; the compiled
kernels are kept in `TORCHINDUCTOR_CACHE_DIR` for later runs. `bench cli` times `--help`, `--cfg`,
`--info`, a completion query, a refused override and the records commands as new processes, this
checkout and `--baseline` interleaved.

The GPU check is one prepared command for the minutes a lent GPU gives: the bench with
`trainer=gpu` in fp32 and bf16, compiled as now and with CUDA graphs
(`perf.compile_mode=reduce-overhead`); record 16 with `budget=20`; and 1, 2, 4 and 8 runs at once
on the one GPU (their training images/s summed); and 1, 4, 16 and 64 runs packed into one network
against as many solo networks in turn and (up to 16) processes. Each step is a child process with its own time box;
one that fails or runs over is stopped, its error and log tail recorded, and the next step runs.
`gpu_check.json` and `gpu_check.md` hold every step's result or error, beside each step's log, the
bench JSONs and the run directories, in `results/<date>_gpu/` (CPU-sized: `results/<date>_gpu_cpu-sized/`,
tiny subsets, not compiled, fp32, 1 and 2 runs at once; a slow test runs that version).

To add a CI run's figures, run `.ci/run` with `PYTEST_ADDOPTS=--durations=0`, keep its output,
turn it into figures with `python scripts/ci_figures.py ci.log results/<date>_ci/<label> --commit SHA`
and commit them: `results/<date>_ci/<label>/phases.json`
(`{"machine", "commit", "date", "phases": {"setup", "default", "slow", "cluster", "total"} in
seconds, "counts": {suite: pytest's summary}}`) and the `<suite>.durations.txt` files pytest's
`--durations=0` printed, then run the script.
"""


# -- reading ---------------------------------------------------------------------------------------
def folder_date(path: Path, results: Path) -> str | None:
    """The date a results folder is named by (results/<date>_<what>/...)."""
    top = path.relative_to(results).parts[0]
    found = FOLDER_DATE.match(top)
    return found.group(1) if found else None


def _commit(env: dict) -> str:
    commit = env.get("git_commit") or env.get("commit")
    if not commit:
        return NOT_RECORDED
    return f"{commit[:7]}{' + uncommitted changes' if env.get('git_dirty') else ''}"


def _machine(env: dict) -> str:
    name = env.get("device_name") or env.get("device") or NOT_RECORDED
    parts = [name]
    if env.get("cpu_count") and str(env.get("device", "cpu")) == "cpu":
        parts.append(f"{env['cpu_count']} cores")
    cpu = env.get("cpu")
    if cpu:
        flags = [cpu.get("torch_capability") or "?"]
        flags += [label for key, label in (("avx512_bf16", "AVX512_BF16"), ("amx_bf16", "AMX")) if cpu.get(key)]
        flags.append("oneDNN bf16" if cpu.get("onednn_bf16") else "no oneDNN bf16")
        parts.append(" ".join(flags))
    elif str(env.get("device", "cpu")) == "cpu":
        parts.append("CPU flags not recorded")
    return ", ".join(parts)


def _by_precision(data: dict) -> dict[str, dict]:
    """The bench's figures per precision; older benches measured one precision at the top level."""
    if "by_precision" in data:
        return data["by_precision"]
    keys = ("warmup_s", "train_images_per_s", "train_images_per_s_eager", "train_images_per_s_relu_eager",
            "eval_images_per_s_standard", "eval_images_per_s_article", "convolution_floor", "epoch")
    return {data.get("config", {}).get("precision", NOT_RECORDED): {k: data[k] for k in keys if k in data}}


def bench_runs(results: Path) -> list[dict]:
    runs = []
    for path in sorted(results.glob("*/bench*.json")):
        data = json.loads(path.read_text())
        if "environment" not in data:  # another tool's JSON (bench cli writes bench_cli.json)
            continue
        env = data["environment"]
        runs.append({"path": path.relative_to(results.parent).as_posix(), "machine": _machine(env),
                     "commit": _commit(env), "date": env.get("date") or folder_date(path, results) or NOT_RECORDED,
                     "date_from_folder": not env.get("date"), "record": data.get("config", {}).get("record", "?"),
                     "overrides": data.get("config", {}).get("overrides") or [],
                     "by_precision": _by_precision(data), "ratios": data.get("ratios", {}),
                     "bf16_unavailable": data.get("bf16_unavailable"), "wall_s": data.get("bench_wall_s")})
    return runs


def parse_durations(text: str) -> dict[str, dict[str, float]]:
    """pytest's --durations lines -> test id -> {setup, call, teardown} seconds."""
    tests: dict[str, dict[str, float]] = defaultdict(lambda: {"setup": 0.0, "call": 0.0, "teardown": 0.0})
    for line in text.splitlines():
        found = DURATION.match(line)
        if found:
            seconds, when, test = found.groups()
            tests[test][when] += float(seconds)
    return dict(tests)


def ci_runs(results: Path) -> list[dict]:
    runs = []
    for path in sorted(results.glob("*_ci/*/phases.json")):
        data = json.loads(path.read_text())
        durations = {}
        for suite in SUITES:
            file = path.parent / f"{suite}.durations.txt"
            if file.is_file():
                durations[suite] = parse_durations(file.read_text())
        runs.append({"path": path.parent.relative_to(results.parent).as_posix(), "label": path.parent.name,
                     "machine": data.get("machine") or NOT_RECORDED, "commit": _commit(data),
                     "date": data.get("date") or folder_date(path, results) or NOT_RECORDED,
                     "phases": data.get("phases", {}), "counts": data.get("counts", {}), "durations": durations,
                     "note": data.get("note", "")})
    return runs


def gpu_checks(results: Path) -> list[dict]:
    runs = []
    for path in sorted(results.glob("*_gpu*/gpu_check.json")):
        data = json.loads(path.read_text())
        env = data.get("environment", {})
        # gpu_check.json has no commit; the bench JSONs it wrote beside it do.
        commit = NOT_RECORDED
        for bench in sorted(path.parent.glob("bench*.json")):
            commit = _commit(json.loads(bench.read_text()).get("environment", {}))
            if commit != NOT_RECORDED:
                break
        machine = env.get("device") or NOT_RECORDED
        if env.get("torch"):
            machine += f" (torch {env['torch']}, CUDA {env.get('cuda') or 'none'})"
        runs.append({"path": path.relative_to(results.parent).as_posix(), "plan": data.get("plan", "?"),
                     "machine": machine, "commit": commit,
                     "date": (data.get("started") or "")[:10] or folder_date(path, results) or NOT_RECORDED,
                     "wall_s": data.get("wall_s"), "steps": data.get("steps", {})})
    return runs


# -- rendering -------------------------------------------------------------------------------------
def _rate(figure: dict | None) -> str:
    if not figure:
        return "-"
    return f"{figure['median']:,.0f} ({figure['min']:,.0f}-{figure['max']:,.0f})"


def _s(value) -> str:
    return "-" if value is None else f"{float(value):,.0f} s"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def bench_section(runs: list[dict]) -> list[str]:
    lines = ["## The bench", ""]
    if not runs:
        return lines + ["No bench result under `results/` yet (`results/<date>_<what>/bench*.json`).", ""]
    lines += ["One row per bench file and precision; rates in images/s, median (min-max) over the timed windows.",
              "\"epoch\" is the end-to-end Lightning epoch (50,000 augmented training images and both",
              "evaluations of the 10,000 test images); \"convolutions\" what the convolutions alone take of it.", ""]
    rows = []
    for r in runs:
        for precision, b in r["by_precision"].items():
            epoch = b.get("epoch", {})
            conv = b.get("convolution_floor", {})
            overrides = " ".join(r["overrides"]) or "(none)"
            rows.append([r["machine"], r["commit"], r["date"], f"{r['record']} {overrides}", precision,
                         _rate(b.get("train_images_per_s")), _rate(b.get("train_images_per_s_eager")),
                         _rate(b.get("train_images_per_s_relu_eager")),
                         f"{_rate(b.get('eval_images_per_s_standard'))} / {_rate(b.get('eval_images_per_s_article'))}",
                         _s(epoch.get("end_to_end_epoch_s")), _s(conv.get("epoch_conv_s")), _s(b.get("warmup_s")),
                         _s(r["wall_s"]), f"`{r['path']}`"])
    lines += _table(["machine", "commit", "date", "config", "precision", "train, configured (compiled)",
                     "train, same net eager", "train, plain ReLU eager", "eval, standard / article", "epoch",
                     "convolutions", "compile", "bench wall", "file"], rows)
    if any(r["date_from_folder"] for r in runs):
        lines += ["", "The bench JSON records no date: the date is its folder's."]
    unavailable = [r for r in runs if r["bf16_unavailable"]]
    for r in unavailable:
        lines += ["", f"`{r['path']}`: bf16 not measured ({r['bf16_unavailable']})."]
    both = [r for r in runs if "bf16_over_fp32[train_images_per_s]" in r["ratios"]]
    if both:
        lines += ["", "### bf16 against fp32, same process", "",
                  "Above 1 is faster for the rates; below 1 is faster for the epoch.", ""]
        rows = [[r["machine"], r["commit"], r["date"],
                 f"{r['ratios']['bf16_over_fp32[train_images_per_s]']:.2f}x",
                 f"{r['ratios'].get('bf16_over_fp32[eval_images_per_s_standard]', float('nan')):.2f}x / "
                 f"{r['ratios'].get('bf16_over_fp32[eval_images_per_s_article]', float('nan')):.2f}x",
                 f"{r['ratios']['bf16_epoch_s_over_fp32_epoch_s']:.2f}x", f"`{r['path']}`"] for r in both]
        lines += _table(["machine", "commit", "date", "train rate", "eval rate, standard / article",
                         "epoch time", "file"], rows)
    return lines + [""]


def ci_section(runs: list[dict], slowest: int = SLOWEST) -> list[str]:
    lines = ["## CI runs", ""]
    if not runs:
        return lines + ["No CI run recorded under `results/` yet (`results/<date>_ci/<label>/phases.json`).", ""]
    lines += ["Wall time of each phase of `.ci/run` (set-up, the default suite, `-m slow`, `-m cluster`, the whole",
              "run), with pytest's count for each suite. Set-up includes the cluster's start where the run",
              "did it in sequence; where a run has `-m slow` and `-m cluster` side by side (from 2026-12-07),",
              "each is that suite's own wall time and the two overlap in the total.", ""]
    rows = []
    for r in runs:
        cells = []
        for phase in PHASES:
            cell = _s(r["phases"].get(phase))
            if phase in r["counts"]:
                cell += f" ({r['counts'][phase]})"
            cells.append(cell)
        rows.append([r["machine"], r["commit"], r["date"], *cells, r["note"], f"`{r['path']}`"])
    lines += _table(["machine", "commit", "date", *PHASES, "note", "folder"], rows)
    for r in runs:
        for suite in SUITES:
            tests = r["durations"].get(suite)
            if not tests:
                continue
            ranked = sorted(tests.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:slowest]
            lines += ["", f"### The {len(ranked)} slowest tests of `{suite}`: {r['machine']}, {r['commit']}, {r['date']}",
                      "", "Seconds per test id, setup + call + teardown.", ""]
            lines += _table(["test", "total", "call", "setup + teardown"],
                            [[f"`{test}`", f"{sum(t.values()):.1f} s", f"{t['call']:.1f} s",
                              f"{t['setup'] + t['teardown']:.1f} s"] for test, t in ranked])
    return lines + [""]


def _step_figures(result: dict | None) -> str:
    from aprelu_exp.bench.gpu_check import figures_cell  # the check's own summary of a step

    return figures_cell(result)


def gpu_section(runs: list[dict]) -> list[str]:
    lines = ["## The GPU check", ""]
    if not runs:
        return lines + ["No GPU check under `results/` yet (`results/<date>_gpu/gpu_check.json`).", ""]
    rows = []
    for r in runs:
        for name, step in r["steps"].items():
            outcome = "ok" if step.get("ok") else f"failed: {step.get('error', '?')}"
            rows.append([r["machine"], r["commit"], r["date"], r["plan"], name, outcome, _s(step.get("wall_s")),
                         _step_figures(step.get("result")), f"`{r['path']}`"])
    return lines + _table(["machine", "commit", "date", "plan", "step", "outcome", "wall", "figures", "file"], rows) + [""]


def packed_runs(results: Path) -> list[dict]:
    runs = []
    for path in sorted(results.glob("*/bench_packed*.json")):
        data = json.loads(path.read_text())
        if data.get("kind") == "bench_packed":
            runs.append({**data, "path": path.relative_to(results.parent).as_posix(), "commit": _commit(data),
                         "date": data.get("date") or folder_date(path, results) or NOT_RECORDED})
    return runs


def packed_section(runs: list[dict]) -> list[str]:
    lines = ["## Packed runs", ""]
    if not runs:
        return lines + ["No packed bench under `results/` yet (`python -m aprelu_exp.bench packed --out packed.json`).", ""]
    lines += ["`python -m aprelu_exp.bench packed`: training images/s summed over N runs of one network, packed into",
              "one network, as N solo networks in turn in one process, and as N processes at once; the hours a",
              "5000-epoch record 16 (training images only) takes per run at that rate. Above 1, packing is faster.", ""]
    rows = []
    for r in runs:
        for n, m in r["runs"].items():
            cell = lambda mode: f"{m[mode]['summed_images_per_s']:,.0f}" if mode in m else "-"  # noqa: E731
            ratio = lambda key: f"{m[key]:.2f}x" if key in m else "-"  # noqa: E731
            hours = f"{m['packed']['record16_5000_epochs_h_per_run']:,.1f} h" if "packed" in m else "-"
            rows.append([r["device"], r["commit"], r["date"], f"{r['precision']}, {r['batch_per_run']}/run", n,
                         cell("packed"), cell("solo"), cell("processes"), ratio("packed_over_solo"),
                         ratio("packed_over_processes"), hours, f"`{r['path']}`"])
    return lines + _table(["machine", "commit", "date", "precision, batch", "N", "packed img/s", "solo in turn",
                           "N processes", "packed / solo", "packed / processes", "5000 epochs per run", "file"],
                          rows) + [""]


def render(results: Path = RESULTS, slowest: int = SLOWEST) -> str:
    lines = [INTRO.rstrip("\n"), "", *bench_section(bench_runs(results)), *packed_section(packed_runs(results)),
             *ci_section(ci_runs(results), slowest),
             *gpu_section(gpu_checks(results))]
    return "\n".join(lines).rstrip("\n") + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/perf_tables.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default: results/)")
    parser.add_argument("--out", type=Path, default=PAGE, help="the page to write (default: docs/performance.md)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the page is stale")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    text = render(args.results)
    if args.check:
        if not args.out.is_file() or args.out.read_text() != text:
            print(f"{args.out} is stale: run .venv/bin/python scripts/perf_tables.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
