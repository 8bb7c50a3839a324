"""The docs against the code: every command shown in README.md and docs/*.md parses (a main command
composes, point by point, and passes the checks a run makes before it starts; a sub-command's
arguments pass that module's own parser), and docs/performance.md is what scripts/perf_tables.py
makes of results/. Nothing here trains or reads data."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import OmegaConf

from aprelu_exp import cli_help, compose, evaluate
from aprelu_exp.bench import __main__ as bench_main
from aprelu_exp.bench import cli as bench_cli
from aprelu_exp.bench import gpu_check
from aprelu_exp.bench import packed as bench_packed
from aprelu_exp.records.replay import plan_replay
from aprelu_exp.overrides import refuse_contradictions
from aprelu_exp.records import __main__ as records_main
from aprelu_exp.report import __main__ as report_main
from aprelu_exp.search import __main__ as search_main
from aprelu_exp.training import build
from inprocess import REPO

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Programs that are not this project's: their commands are shown, not checked.
OTHER_TOOLS = {"mlflow", "tensorboard", "pip", "git", "source", "eval", "mkdir", "cat", "cd", "export",
               "squeue", "scancel", "sbatch", "srun", "sinfo", "scontrol"}
# Records a command of the docs writes before the next one uses them (`records promote --name
# record_18`), and the file docs/records.md's "Adding a record" shows (record_16b): given to the
# commands as a folder of their own records, as a reader would have them by then.
PROMOTED = "# @package _global_\ndefaults:\n  - record_16\n  - _self_\nrecord:\n  name: {0}\n  parent: record_16\n"
PLACEHOLDER = re.compile(r"<([A-Za-z_][\w.-]*)>")  # <run>, <sweep>: a name the reader fills in
INLINE = re.compile(r"`((?:\.venv/bin/)?(?:python -m aprelu_exp|aprelu-exp|bash scripts/)[^`]*)`")
MENTION = re.compile(r"^python -m aprelu_exp\.[\w.]+$")  # `python -m aprelu_exp.report` names a tool, runs nothing
HEREDOC = re.compile(r"cat > (\S+) <<'?(\w+)'?")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
SUB_COMMANDS = ("records", "report", "search", "evaluate", "bench", "bench.gpu_check")


@dataclass
class Command:
    path: Path
    line: int
    text: str
    files: list[tuple[str, str]] = field(default_factory=list)  # heredocs written before it in that file

    @property
    def where(self) -> str:
        name = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path.name
        return f"{name}:{self.line}"


def collect(path: Path) -> list[Command]:
    """The commands of a Markdown file: every line of a fenced bash block (continuations joined,
    heredoc bodies kept as files), and inline `python -m aprelu_exp ...` spans outside blocks."""
    commands, files = [], []
    lines = path.read_text().splitlines()
    fence, i = None, 0
    while i < len(lines):
        line, number = lines[i], i + 1
        i += 1
        if line.lstrip().startswith("```"):
            fence = None if fence is not None else line.strip()[3:].strip()
            continue
        if fence is None:
            commands += [Command(path, number, m.group(1), list(files)) for m in INLINE.finditer(line)
                         if not MENTION.match(m.group(1))]
            continue
        if fence != "bash" or not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.rstrip().endswith("\\") and i < len(lines):
            line = line.rstrip()[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        heredoc = HEREDOC.search(line)
        if heredoc:
            body = []
            while i < len(lines) and lines[i].strip() != heredoc.group(2):
                body.append(lines[i])
                i += 1
            i += 1
            files.append((heredoc.group(1), "\n".join(body) + "\n"))
            continue  # `mkdir -p DIR && cat > FILE <<'TAG'`: the file, written for what follows
        for part in line.split("&&"):
            commands.append(Command(path, number, part.strip(), list(files)))
    return commands


ALL_COMMANDS = [c for path in DOC_FILES for c in collect(path)]


# -- the checks --------------------------------------------------------------------------------------
def _tokens(text: str) -> list[str]:
    tokens = [t for t in shlex.split(PLACEHOLDER.sub(r"\1", text), comments=True) if t != "..."]
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    return tokens


def _points(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The points to compose: the first of every sweep, then each other value of one sweep at a time
    (an interval by both ends, as the search checks its space)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    values = []
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            values.append([o.input_line])
            continue
        if not multirun:
            raise ValueError(f"{o.input_line} is a sweep: it needs -m")
        sweep = o.value()
        if isinstance(sweep, IntervalSweep):
            ends = [sweep.start, sweep.end]
            if "int" in sweep.tags:
                ends = [int(e) for e in ends]
            values.append([f"{key}={e}" for e in ends])
        else:
            values.append([f"{key}={v}" for v in o.sweep_string_iterator()])
    first = [v[0] for v in values]
    points = [first]
    for n, options in enumerate(values):
        points += [first[:n] + [other] + first[n + 1:] for other in options[1:]]
    return points


def _check_config(overrides: list[str], multirun: bool = False) -> None:
    """Compose every point and run the checks a run makes before it takes its directory."""
    for point in _points(overrides, multirun):
        cfg = compose.compose_config(point, hydra_config=True)
        refuse_contradictions(point)
        if not multirun and int(cfg.get("replicates") or 1) != 1:
            raise ValueError("replicates=N without -m is refused by the command")
        build.preflight(cfg)


def records_the_docs_write() -> dict[str, str]:
    page = (REPO / "docs" / "records.md").read_text()
    example = page.split("## Adding a record", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    return {yaml.safe_load(example)["record"]["name"]: example, "record_18": PROMOTED.format("record_18")}


def _with_config_dir(config_dir: str | None, tmp: Path) -> None:
    folder = Path(config_dir) if config_dir else tmp / "docs_conf"
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    for name, text in records_the_docs_write().items():
        if not (folder / "experiment" / f"{name}.yaml").exists():
            (folder / "experiment" / f"{name}.yaml").write_text(text)
    compose.use_config_dir(folder)


def check_main(argv: list[str], tmp: Path) -> None:
    args = get_args_parser().parse_args(argv)  # Hydra's own command line
    if args.shell_completion:
        return
    if args.help:
        cli_help.register()  # the resolver the help template reads (the command registers it at start-up)
        cli_help.render(args.overrides, [args.config_dir] if args.config_dir else [])
        return
    _with_config_dir(args.config_dir, tmp)
    _check_config(args.overrides, multirun=args.multirun)


def _is_placeholder(ref: str) -> bool:
    return ref.isupper() or "/" in ref  # RECORD, STUDY; a run or sweep directory


def check_sub(module: str, argv: list[str], tmp: Path) -> None:
    if module == "records":
        args = records_main.parse_args(argv)
        _with_config_dir(args.config_dir, tmp)
        refs = {"show": ["ref"], "diff": ["a", "b"], "confirm": ["record"]}.get(args.cmd, [])
        for ref in (getattr(args, r) for r in refs):
            if not _is_placeholder(ref) and ref not in compose.record_names():
                raise ValueError(f"no record named {ref!r}")
        if args.cmd == "confirm":
            _check_config([f"experiment={args.record}", *args.overrides], multirun=True)
        elif args.cmd == "promote":
            _check_config(args.overrides, multirun=True)
        elif args.cmd == "replay":  # the command's own checks: records, seeds, overrides, every record composed
            names = [r for r in args.records if "=" not in r]
            overrides = [r for r in args.records if "=" in r] + list(args.overrides)
            plan_replay([n for n in names if not _is_placeholder(n)], args.seeds, args.seed, overrides, args.metric)
    elif module == "report":
        report_main.parse_args(argv)
    elif module == "search":
        search_main.parse_args(argv)
    elif module == "evaluate":
        args = evaluate.parse_args(argv)
        _, overrides = evaluate._split_arguments(args.overrides, args.checkpoint)
        run = tmp / "a_run"  # a run directory as the main command writes it, for evaluate's own check
        run.mkdir(exist_ok=True)
        OmegaConf.save(compose.compose_config([]), run / "config.yaml")
        evaluate.run_config(run, overrides)
    elif module == "bench":
        if argv[:1] == ["cli"]:
            bench_cli.build_parser().parse_args(argv[1:])
        elif argv[:1] == ["packed"]:
            _check_config(bench_packed.parse_args(argv[1:]).overrides)
        else:
            _check_config(bench_main.build_parser().parse_args(argv).overrides)
    elif module == "bench.gpu_check":
        gpu_check.parse_args(argv)


def check_pytest(argv: list[str]) -> None:
    markers = {m.split(":")[0] for m in _pyproject()["tool"]["pytest"]["ini_options"]["markers"]}
    words = iter(argv)
    for word in words:
        if word == "-m":
            expression = next(words)
            unknown = set(re.findall(r"\w+", expression)) - {"and", "or", "not"} - markers
            if unknown:
                raise ValueError(f"-m {expression}: no such marker {sorted(unknown)}")
        elif word == "-p":
            next(words)
        elif not word.startswith("-") and not (REPO / word.split("::")[0]).exists():
            raise ValueError(f"{word}: no such test file")


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _perf_tables():
    spec = importlib.util.spec_from_file_location("perf_tables", REPO / "scripts" / "perf_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_script(script: str, argv: list[str], tmp: Path) -> None:
    name = Path(script).name
    if not (REPO / script).is_file():
        raise ValueError(f"{script}: no such script")
    if name == "train.sh":
        check_main(argv, tmp)
    elif name == "test.sh":
        check_pytest(argv)
    elif name == "gpu_check.sh":
        gpu_check.parse_args(argv)
    elif name == "local_cluster.sh":
        cases = re.findall(r"^\s*([\w|-]+)\)", (REPO / script).read_text(), re.M)
        if argv[:1] and argv[0] not in {c for case in cases for c in case.split("|")}:
            raise ValueError(f"local_cluster.sh has no sub-command {argv[0]!r} (it has {cases})")
    elif name == "perf_tables.py":
        _perf_tables().parse_args(argv)
    elif argv:
        raise ValueError(f"{script} takes no arguments here")


def check(command: Command, tmp: Path) -> None:
    """Raise with the reason when the command would not parse; return quietly when it does."""
    tokens = _tokens(command.text)
    if not tokens or tokens[0] in OTHER_TOOLS:
        return
    program, rest = tokens[0], tokens[1:]
    if program in ("python", ".venv/bin/python") and rest[:1] == ["-m"]:
        module, argv = rest[1], rest[2:]
        if module == "aprelu_exp":
            check_main(argv, tmp)
        elif module.startswith("aprelu_exp.") and module[len("aprelu_exp."):] in SUB_COMMANDS:
            check_sub(module[len("aprelu_exp."):], argv, tmp)
        elif module == "pytest":
            check_pytest(argv)
        else:
            raise ValueError(f"python -m {module}: not a command of this project; add it to the checks")
    elif program in ("aprelu-exp", ".venv/bin/aprelu-exp"):
        check_main(rest, tmp)
    elif program in ("aprelu-exp-records", ".venv/bin/aprelu-exp-records"):
        check_sub("records", rest, tmp)
    elif program == "bash" and rest[:1] and rest[0].startswith("scripts/"):
        check_script(rest[0], rest[1:], tmp)
    elif program in ("python", ".venv/bin/python") and rest[:1] and rest[0].startswith("scripts/"):
        check_script(rest[0], rest[1:], tmp)
    else:
        raise ValueError(f"{program}: neither a command of this project nor in OTHER_TOOLS")


def failure(command: Command, tmp: Path, monkeypatch) -> str | None:
    """None, or `file:line: command` and the error, as a failing test prints it."""
    monkeypatch.chdir(tmp)
    for rel, text in command.files:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    # The docs show GPU commands; this machine may have none (a run refuses those where CUDA is missing).
    monkeypatch.setattr(build, "check_accelerator", lambda cfg: None)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            check(command, tmp)
    except SystemExit as exc:  # argparse: its message went to stderr
        return f"{command.where}: {command.text}\n  {err.getvalue().strip() or exc}"
    except Exception as exc:  # noqa: BLE001 - any error is the command's failure to parse
        return f"{command.where}: {command.text}\n  {type(exc).__name__}: {exc}"
    finally:
        compose.use_config_dir(None)
    return None


# -- the tests ---------------------------------------------------------------------------------------
def test_the_docs_show_commands_of_every_kind():
    texts = [c.text for c in ALL_COMMANDS]
    assert len(ALL_COMMANDS) > 80, len(ALL_COMMANDS)
    for start in ("python -m aprelu_exp ", "python -m aprelu_exp -m ", "aprelu-exp --config-dir",
                  "python -m aprelu_exp.records ", "python -m aprelu_exp.report ", "python -m aprelu_exp.search ",
                  "python -m aprelu_exp.evaluate ", "python -m aprelu_exp.bench", "bash scripts/train.sh",
                  "bash scripts/test.sh", "bash scripts/local_cluster.sh"):
        assert any(t.startswith(start) for t in texts), start


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=[c.where for c in ALL_COMMANDS])
def test_every_command_in_the_docs_parses(command, tmp_path, monkeypatch):
    problem = failure(command, tmp_path, monkeypatch)
    assert problem is None, problem


@pytest.mark.parametrize("line, says", [
    ("python -m aprelu_exp model.reducton=16 trainer.max_epochs=2", "Did you mean model.reduction"),
    ("python -m aprelu_exp -m model.reduction=1,4,1000", "reduction"),   # a later point that cannot run
    ("python -m aprelu_exp model.reduction=1,4", "needs -m"),
    ("python -m aprelu_exp.records diff record_15 record_99", "no record named 'record_99'"),
    ("python -m aprelu_exp.records show", "the following arguments are required: ref"),
    ("python -m aprelu_exp.report runs/x --baseline", "expected one argument"),
    ("python -m aprelu_exp.evaluate runs/x data.val_split=5000", "data.val_split fixes the images"),
    ("bash scripts/test.sh -m slwo", "no such marker"),
    ("bash scripts/local_cluster.sh restart", "no sub-command 'restart'"),
    ("rsync -a runs/ elsewhere/", "neither a command of this project nor in OTHER_TOOLS"),
])
def test_a_broken_command_fails_naming_the_file_the_line_and_the_error(line, says, tmp_path, monkeypatch):
    doc = tmp_path / "docs" / "broken.md"
    doc.parent.mkdir()
    doc.write_text(f"# Broken\n\nIntro.\n\n```bash\npython -m aprelu_exp.records list\n{line}   # a comment\n```\n")
    good, bad = collect(doc)
    assert failure(good, tmp_path, monkeypatch) is None
    problem = failure(bad, tmp_path, monkeypatch)
    assert problem is not None and problem.startswith(f"broken.md:7: {line}"), problem
    assert says in problem, problem


def test_collect_joins_continuations_keeps_heredocs_and_reads_inline_commands(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("Run `python -m aprelu_exp budget=5` or `aprelu-exp --help`; not `pip install x`.\n\n"
                   "```bash\nmkdir -p c/optim && cat > c/optim/o.yaml <<'YAML'\nlr: 1\nYAML\n"
                   "python -m aprelu_exp -m a=1,2 \\\n    b=3   # note\ngit status && python -m aprelu_exp\n```\n"
                   "```yaml\nnot: a command\n```\n")
    found = collect(doc)
    assert [(c.line, c.text) for c in found] == [
        (1, "python -m aprelu_exp budget=5"), (1, "aprelu-exp --help"),
        (7, "python -m aprelu_exp -m a=1,2 b=3   # note"), (9, "git status"), (9, "python -m aprelu_exp")]
    assert found[2].files == [("c/optim/o.yaml", "lr: 1\n")] and found[0].files == []
    assert _points(["a=1,2,3", "b=x", "c=tag(log, interval(0.1, 1.0))"], True) == [
        ["a=1", "b=x", "c=0.1"], ["a=2", "b=x", "c=0.1"], ["a=3", "b=x", "c=0.1"], ["a=1", "b=x", "c=1.0"]]


# -- docs/performance.md -----------------------------------------------------------------------------
def test_performance_md_is_what_the_script_makes_of_results():
    perf = _perf_tables()
    assert perf.main(["--check"]) == 0, "docs/performance.md is stale: run .venv/bin/python scripts/perf_tables.py"
    text = (REPO / "docs" / "performance.md").read_text()
    # Every bench JSON under results/ has its rows, naming its machine, commit and date.
    for path in sorted((REPO / "results").glob("*/bench*.json")):
        data = json.loads(path.read_text())
        if data.get("kind") == "bench_packed":  # the packed bench names its commit and date itself
            commit, date = data["commit"], data["date"]
        elif "environment" in data:
            commit, date = data["environment"]["git_commit"], path.parent.name[:10]
        else:
            continue  # another tool's JSON (bench cli)
        rows = [ln for ln in text.splitlines() if f"`{path.relative_to(REPO).as_posix()}`" in ln]
        assert rows, path
        for row in rows:
            assert commit[:7] in row and date in row, row


def _sample_results(root: Path) -> Path:
    """A made-up results/ tree in the layout the CI runs and the bench leave (not real figures)."""
    results = root / "results"
    run = results / "2030-01-02_ci" / "fresh-clone"
    run.mkdir(parents=True)
    (run / "phases.json").write_text(json.dumps({
        "machine": "Sample CPU, 2 cores", "commit": "abcdef0123456789", "date": "2030-01-02",
        "phases": {"setup": 60.0, "default": 300.4, "slow": 1100.0, "cluster": 900.0, "total": 2400.0},
        "counts": {"default": "10 passed, 1 skipped", "slow": "3 passed", "cluster": "2 passed"}}))
    lines = ["============================= slowest durations =============================="]
    for n in range(20):  # test_{n} takes n + 1 s of call, plus setup and teardown for test_3
        lines.append(f"{n + 1:.2f}s call     tests/test_sample.py::test_{n}[x-1]")
    lines += ["30.00s setup    tests/test_sample.py::test_3[x-1]", "1.50s teardown tests/test_sample.py::test_3[x-1]",
              "(3 durations < 0.005s hidden.  Use -vv to show these durations.)"]
    (run / "default.durations.txt").write_text("\n".join(lines) + "\n")
    (run / "slow.durations.txt").write_text("5.00s call     tests/test_slow.py::test_only\n")
    bench = results / "2030-01-03_bench_sample"
    bench.mkdir()
    rate = {"median": 100.0, "min": 90.0, "max": 110.0, "windows": 3}
    figures = {"warmup_s": 5.0, "train_images_per_s": rate, "train_images_per_s_eager": rate,
               "train_images_per_s_relu_eager": rate, "eval_images_per_s_standard": rate,
               "eval_images_per_s_article": rate, "epoch": {"end_to_end_epoch_s": 500.0},
               "convolution_floor": {"epoch_conv_s": 250.0}}
    (bench / "bench.json").write_text(json.dumps({
        "config": {"overrides": [], "record": "record_16", "precision": "32-true"},
        "environment": {"device": "cpu", "device_name": "Sample CPU", "cpu_count": 2},
        "by_precision": {"32-true": figures}, "bf16_unavailable": "no bf16 here", "bench_wall_s": 60.0}))
    return results


def test_the_generator_tables_a_packed_bench(tmp_path):
    results = tmp_path / "results"
    (results / "2030-01-04_bench_packed").mkdir(parents=True)
    mode = lambda rate, n: {"summed_images_per_s": rate, "min": rate, "max": rate,  # noqa: E731
                            "per_run_images_per_s": rate / n, "record16_5000_epochs_h_per_run": 1.5}
    (results / "2030-01-04_bench_packed" / "bench_packed.json").write_text(json.dumps({
        "kind": "bench_packed", "device": "cpu: Sample CPU", "commit": "fedcba9876543210", "date": "2030-01-04",
        "precision": "fp32", "batch_per_run": 100,
        "runs": {"4": {"packed": mode(200.0, 4), "solo": mode(400.0, 4), "processes": mode(500.0, 4),
                       "packed_over_solo": 0.5, "packed_over_processes": 0.4}}}))
    text = _perf_tables().render(results)
    (row,) = [ln for ln in text.split("## Packed runs", 1)[1].splitlines() if "bench_packed.json" in ln]
    assert row == ("| cpu: Sample CPU | fedcba9 | 2030-01-04 | fp32, 100/run | 4 | 200 | 400 | 500 | 0.50x | 0.40x | "
                   "1.5 h | `results/2030-01-04_bench_packed/bench_packed.json` |")


def test_the_generator_names_machine_commit_and_date_on_every_row(tmp_path):
    perf = _perf_tables()
    results = _sample_results(tmp_path)
    text = perf.render(results)
    ci = [ln for ln in text.split("## CI runs", 1)[1].splitlines() if "fresh-clone" in ln]
    assert ci == ["| Sample CPU, 2 cores | abcdef0 | 2030-01-02 | 60 s | 300 s (10 passed, 1 skipped) | "
                  "1,100 s (3 passed) | 900 s (2 passed) | 2,400 s |  | `results/2030-01-02_ci/fresh-clone` |"]
    # The 15 slowest of the default suite, setup + call + teardown summed per test id: test_3 first.
    section = text.split("### The 15 slowest tests of `default`: Sample CPU, 2 cores, abcdef0, 2030-01-02", 1)[1]
    rows = [ln for ln in section.split("###", 1)[0].splitlines() if ln.startswith("| `")]
    assert len(rows) == 15
    assert rows[0] == "| `tests/test_sample.py::test_3[x-1]` | 35.5 s | 4.0 s | 31.5 s |"
    assert rows[1].startswith("| `tests/test_sample.py::test_19[x-1]` | 20.0 s")
    assert "of `slow`: Sample CPU, 2 cores, abcdef0, 2030-01-02" in text and "of `cluster`" not in text
    # The bench: no commit and no date in its JSON -> "not recorded" and the folder's date.
    (bench_row,) = [ln for ln in text.splitlines() if "bench_sample/bench.json`" in ln and "32-true" in ln]
    assert bench_row.startswith("| Sample CPU, 2 cores, CPU flags not recorded | not recorded | 2030-01-03 |")
    assert "100 (90-110)" in bench_row and "500 s" in bench_row
    assert "bf16 not measured (no bf16 here)" in text
    assert "No GPU check under `results/` yet" in text
    # --check: stale until written, then current.
    out = tmp_path / "performance.md"
    assert perf.main(["--results", str(results), "--out", str(out), "--check"]) == 1
    assert perf.main(["--results", str(results), "--out", str(out)]) == 0
    assert perf.main(["--results", str(results), "--out", str(out), "--check"]) == 0


def test_the_generator_tables_a_gpu_check(tmp_path):
    perf = _perf_tables()
    results = _sample_results(tmp_path)
    check = results / "2030-01-04_gpu"
    check.mkdir()
    (check / "gpu_check.json").write_text(json.dumps({
        "plan": "gpu", "started": "2030-01-04T10:00:00+00:00", "wall_s": 400.0,
        "environment": {"device": "Sample GPU", "torch": "9.9", "cuda": "99.0"},
        "steps": {"record16_run": {"ok": True, "wall_s": 100.0, "result": {
            "epochs": 20, "train_images_per_s": 9000.0, "epoch_time_s": 6.0, "val_acc": 0.8,
            "precision": "bf16-mixed"}}, "concurrent_8": {"ok": False, "wall_s": 55.0, "error": "timed out after 55 s"}}}))
    text = perf.render(results)
    rows = [ln for ln in text.split("## The GPU check", 1)[1].splitlines() if ln.startswith("| Sample GPU")]
    assert rows[0].startswith("| Sample GPU (torch 9.9, CUDA 99.0) | not recorded | 2030-01-04 | gpu | record16_run | ok |")
    assert "train 9,000 img/s" in rows[0] and "failed: timed out after 55 s" in rows[1]


def test_the_readme_keeps_its_first_screen_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    head = readme.split("\n## ", 2)
    assert head[1].startswith("The two commands") and "bash scripts/train.sh" in head[1] and "bash scripts/test.sh" in head[1]
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in readme, page.name
        first = page.read_text().splitlines()
        assert first[0].startswith("# ") and first[2], page.name  # a title, then what the page covers
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.(?:md|png))(?:#[\w-]+)?\)", readme):
        assert (REPO / link).is_file(), link
    for page in sorted((REPO / "docs").glob("*.md")):
        for link in re.findall(r"\]\(([\w./-]+\.(?:md|png))(?:#[\w-]+)?\)", page.read_text()):
            assert (page.parent / link).is_file(), (page.name, link)


def test_the_yaml_examples_of_the_docs_load():
    for path in DOC_FILES:
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S):
            assert isinstance(yaml.safe_load(block), dict), path
