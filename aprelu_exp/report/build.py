"""One entry point used by the CLI and the sweep callback: run dirs in, report files out."""
from __future__ import annotations

from pathlib import Path

from aprelu_exp.report.collect import attach_changes, find_runs, label_runs, load_run
from aprelu_exp.report.render import plot_curves, table_row, write_csv, write_markdown


def build_report(paths: list[Path], out_dir: Path, title: str = "aprelu-exp report") -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [load_run(p) for p in find_runs(paths)]
    attach_changes(runs)
    label_runs(runs)
    rows = [table_row(r) for r in runs]
    write_csv(rows, out_dir / "runs.csv")
    plots = plot_curves(runs, out_dir) if runs else []
    write_markdown(runs, rows, plots, out_dir / "report.md", title)
    return {"runs": len(runs), "rows": rows, "files": ["report.md", "runs.csv", *plots]}
