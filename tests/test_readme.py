"""The lists and examples of the docs (README.md and docs/*.md) against the files they describe."""
import re
import shutil

import yaml

from aprelu_exp import compose
from aprelu_exp.compose import CONF_DIR
from aprelu_exp.training.build import build_net
from aprelu_exp.settings import config_diff
from inprocess import REPO

CONFIGURATION = (REPO / "docs" / "configuration.md").read_text()
RECORDS = (REPO / "docs" / "records.md").read_text()


def _groups_table() -> dict[str, list[str]]:
    """`| `group` | `a`, `b` (note) | what |` rows of docs/configuration.md's "Config groups" table:
    group -> options."""
    section = CONFIGURATION.split("## Config groups", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = re.findall(r"`([^`]+)`", cells[1].split("(", 1)[0])
    return rows


def test_the_config_groups_table_lists_each_groups_files():
    rows = _groups_table()
    assert "experiment" in rows and "model/activation" in rows
    for group, options in rows.items():
        files = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        assert sorted(options) == files, (group, options, files)


def test_the_adding_a_record_example_is_free_and_composes(tmp_path, monkeypatch):
    name = re.search(r"Adding a record is one small file.*?`conf/experiment/(\w+)\.yaml`", RECORDS, re.S).group(1)
    example = RECORDS.split(f"`conf/experiment/{name}.yaml`", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert not (CONF_DIR / "experiment" / f"{name}.yaml").exists(), f"{name} is a record already"
    assert f"experiment={name} " in RECORDS  # the command that trains it names the same file
    data = yaml.safe_load(example)
    assert data["record"]["name"] == name and data["defaults"][0] == data["record"]["parent"]
    # Written into a copy of conf/, never the checkout's: it composes and changes what it says.
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / f"{name}.yaml").write_text(example)
    monkeypatch.setattr(compose, "CONF_DIR", conf)
    parent, child = compose.compose_record(data["record"]["parent"]), compose.compose_record(name)
    build_net(child, check_only=True)
    changed = {k for k, _, _ in config_diff(parent, child)} - {f"record.{k}" for k in data["record"]}
    assert changed == {"model.stages[1].channels", "model.stages[2].channels"}
