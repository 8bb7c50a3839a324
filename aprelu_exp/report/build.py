"""One entry point used by the CLI and the sweep callback: run dirs in, report files out."""
from __future__ import annotations

from pathlib import Path

from aprelu_exp.report.collect import read_runs
from aprelu_exp.report.evidence import COMPARISON_COLUMNS, GROUP_COLUMNS, comparison_rows, group_rows, group_runs
from aprelu_exp.report.render import (evidence_markdown, plot_curves, plot_group_curves, table_row, write_csv,
                                      write_markdown, write_rows)
from aprelu_exp.search.report import study_section
from aprelu_exp.search.storage import read_search_ref


def build_report(paths: list[Path], out_dir: Path, title: str = "aprelu-exp report",
                 baseline: str | None = None, paired: bool | None = None, strict: bool = False) -> dict:
    """strict (a comparison the user asked for, e.g. --baseline): a group of fewer than 2 runs or an
    impossible paired comparison is a UserError before anything is written; otherwise (a sweep's own
    report) such groups are left out with a note."""
    out_dir = Path(out_dir)
    runs = read_runs(paths, changes=True)
    groups = group_runs(runs)
    comparisons, notes = comparison_rows(groups, baseline, paired, strict=strict)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [table_row(r) for r in runs]
    write_csv(rows, out_dir / "runs.csv")
    summary = group_rows(groups)
    write_rows(summary, GROUP_COLUMNS, out_dir / "groups.csv")
    write_rows(comparisons, COMPARISON_COLUMNS, out_dir / "comparisons.csv")
    plots = (plot_curves(runs, out_dir) + plot_group_curves(groups, out_dir)) if runs else []
    study_lines, study_files = study_sections(paths, out_dir)
    write_markdown(runs, rows, plots, out_dir / "report.md", title,
                   evidence_markdown(summary, comparisons, notes) + study_lines)
    return {"runs": len(runs), "rows": rows, "groups": summary, "comparisons": comparisons,
            "files": ["report.md", "runs.csv", "groups.csv", "comparisons.csv", *plots, *study_files]}


def study_sections(paths: list[Path], out_dir: Path) -> tuple[list[str], list[str]]:
    """A search's sweep directory names its study (search.json): its section is read from the
    study's storage, which also holds the trials of other sweeps and machines."""
    lines, files, seen = [], [], set()
    for p in map(Path, paths):
        ref = read_search_ref(p) if p.is_dir() else None
        if not ref or (ref["study"], ref["storage"]) in seen:
            continue
        seen.add((ref["study"], ref["storage"]))

        try:
            part, written = study_section(ref["study"], ref["storage"], out_dir)
        except Exception as exc:  # storage unreachable from here: the runs' report still stands
            part, written = [f"## Study `{ref['study']}`", "", f"Not readable from {ref['storage']}: {exc}"], []
        lines += ["", *part]
        files += written
    return lines, files
