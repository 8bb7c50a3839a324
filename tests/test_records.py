"""The tuning log as configs: lineage, diffs, budgets, and every record trains."""
import pytest
from inprocess import run_module

from aprelu_exp.compose import CONF_DIR as CONF, compose_record, record_names
from aprelu_exp.records.lineage import lineage
from aprelu_exp.report.article import article_results, reported_epochs
from aprelu_exp.settings import config_diff
from aprelu_exp.training.schedule import scale_milestones, step_milestones

RECORDS = ["github_final", "record_01", "record_14", "record_15", "record_16", "record_17"]


def records_cli(*args):
    return run_module("aprelu_exp.records", args)


def test_all_known_records_exist_with_provenance():
    assert record_names() == RECORDS
    recs = lineage()
    assert {n: r["provenance"] for n, r in recs.items()} == {
        "record_01": "reconstructed", "record_14": "reconstructed", "record_15": "derived",
        "record_16": "exact", "github_final": "exact", "record_17": "searched"}
    assert [recs[n]["parent"] for n in ("record_14", "record_15", "record_16", "github_final", "record_17")] == [
        "record_01", "record_14", "record_15", "record_16", "record_16"]
    assert all(r["source"] and r["change"] for r in recs.values())


def test_diff_record15_record16_is_the_articles_two_changes():
    out = records_cli("diff", "record_15", "record_16")
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stdout.splitlines() if not l.startswith("#")]
    assert sorted(lines) == ["model.reduction: 1 -> 16", "model.stages[0].channels: 16 -> 32"]


def test_record16_is_the_seed_script():
    cfg = compose_record("record_16")
    assert [dict(s) for s in cfg.model.stages] == [
        {"blocks": 1, "channels": 32, "downsample": False},
        {"blocks": 1, "channels": 32, "downsample": True},
        {"blocks": 1, "channels": 64, "downsample": True}]
    assert (cfg.model.stem_channels, cfg.model.reduction, cfg.model.activation) == (16, 16, "aprelu")
    assert (cfg.schedule.epochs, cfg.schedule.every, cfg.schedule.gamma) == (5000, 1500, 0.1)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.model.l2) == (0.1, 0.9, True, 1e-4)
    assert cfg.optim._target_ == "torch.optim.SGD" and cfg.schedule._target_.endswith("KerasStepLR")
    assert cfg.data.batch_size == 100 and cfg.trainer.max_epochs == 5000


def test_github_final_diff_against_record16():
    rows = {k: (a, b) for k, a, b in config_diff(compose_record("record_16"), compose_record("github_final"))}
    assert rows["model.activation"] == ("aprelu", "aprelu_shared")
    assert rows["model.stem_channels"] == (16, 64)
    assert rows["schedule.every"] == (1500, 300) and rows["schedule.epochs"] == (5000, 1000)
    assert rows["model.stages[4].blocks"] == ("<absent>", 19)


def test_list_and_show_commands():
    out = records_cli("list")
    assert out.returncode == 0 and out.stdout.index("record_01") < out.stdout.index("record_16")
    assert "[derived]" in out.stdout and "github_final" in out.stdout
    shown = records_cli("show", "record_14")
    assert "name: record_14" in shown.stdout and "reduction: 1" in shown.stdout
    bad = records_cli("show", "record_99")
    assert bad.returncode == 2 and "No record named 'record_99'" in bad.stderr


def test_list_draws_the_tree_with_a_glyph_per_sibling_position():
    # The parents as the files state them; each record's glyph is ├── when a sibling follows it,
    # └── when it is its parent's last child, and the lines between siblings carry the │.
    import yaml

    parents = {p.stem: yaml.safe_load(p.read_text())["record"]["parent"]
               for p in (CONF / "experiment").glob("*.yaml")}
    lines = records_cli("list").stdout.splitlines()
    heads = {}
    for row, line in enumerate(lines):
        name = line.lstrip("│├└─ ").split("  [", 1)[0]
        if "  [" in line and name in parents:
            heads[name] = (row, len(line) - len(line.lstrip("│├└─ ")))
    assert set(heads) == set(parents)
    for name, parent in parents.items():
        row, col = heads[name]
        if parent is None:
            assert col == 0
            continue
        siblings = sorted(n for n, p in parents.items() if p == parent)
        glyph = "└── " if name == siblings[-1] else "├── "
        assert lines[row][col - 4:col] == glyph, lines[row]
        assert col == heads[parent][1] + 4  # one level under its parent
        if glyph == "├── ":
            next_row = heads[siblings[siblings.index(name) + 1]][0]
            assert all(ln[col - 4] == "│" for ln in lines[row + 1:next_row]), lines[row:next_row]
    # Record 16's two children, as a person reads them.
    assert sorted(n for n, p in parents.items() if p == "record_16")[:2] == ["github_final", "record_17"]
    assert any(ln.endswith("├── github_final  [exact]  parent: record_16") for ln in lines)


@pytest.mark.parametrize("full, every, budget, expected", [
    (5000, 1500, 50, [15, 30, 45]),       # the example, by hand: 1500*50/5000 = 15 ...
    (5000, 1500, 5000, [1500, 3000, 4500]),
    (1000, 300, 100, [30, 60, 90]),       # github_final at 1/10
    (1000, 300, 10, [3, 6, 9]),
    (5000, 1500, 10, [3, 6, 9]),
    (5000, 1500, 3, [1, 2, 3]),           # 0.9, 1.8, 2.7 round to 1, 2, 3
])
def test_budget_scaling_against_hand_computed_milestones(full, every, budget, expected):
    assert scale_milestones(step_milestones(full, every), full, budget) == expected


def test_budget_is_recorded_in_the_plan(make_cfg):
    from aprelu_exp.training.build import check_optimization

    plan = check_optimization(make_cfg("budget=50", small=False)).as_dict()
    assert plan == {"full_epochs": 5000, "max_epochs": 50, "budget": 50,
                    "milestones": [15, 30, 45], "gamma": 0.1, "kind": "budget"}
    truncated = check_optimization(make_cfg("trainer.max_epochs=3", small=False)).as_dict()
    assert truncated["kind"] == "truncated" and truncated["milestones"] == [1500, 3000, 4500]


def test_article_numbers_ship_with_their_eval_mode():
    assert len(reported_epochs("record_16")) == 11
    assert reported_epochs("record_16")[-1] == {"epoch": 3345, "loss": 0.3940, "acc": 0.8945,
                                                "val_loss": 0.4138, "val_acc": 0.8890}
    assert article_results()["record_16"]["eval_mode"] == "article"
    assert article_results()["github_final"]["final"]["test_acc"] == 0.9577


@pytest.mark.parametrize("record", RECORDS)
def test_every_record_composes_builds_and_trains_a_few_steps(record, make_cfg, cifar, tmp_path):
    from aprelu_exp.train import train

    overrides = [f"experiment={record}", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                 "data.train_subset=200", "data.test_subset=100"]
    if record == "github_final":
        # 60 blocks of up to 256 kernels: a few images per batch keep this a check that it trains,
        # not a benchmark (batches of 100 take over a minute on 2 cores).
        overrides += ["data.batch_size=10", "data.eval_batch_size=10", "data.article_eval_batch_size=10"]
    cfg = make_cfg(*overrides)
    summary = train(cfg, tmp_path / record, arrays=cifar)
    assert summary["status"] == "finished" and summary["epochs_completed"] == 1
    assert summary["record"]["name"] == record
    import math
    assert math.isfinite(summary["final"]["train_loss"])
