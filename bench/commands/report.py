"""``bench report RUN_DIR [RUN_DIR...]``: report.md, report.json and PNG plots of search runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "report"
HELP = "write report.md, report.json and plots for one or more search run directories"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of ``bench report``."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="search run directories (with journal.jsonl)")
    parser.add_argument("--out-dir", default=None,
                        help="where to write the report (default: the run directory when one is given, else ./report)")
    parser.add_argument("--json", action="store_true", help="print report.json to stdout instead of a summary")


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it is."""
    from bench.report import REPORT_JSON, REPORT_MD, write_report

    out_dir = Path(args.out_dir) if args.out_dir else Path(args.run_dirs[0]) if len(args.run_dirs) == 1 else Path("report")
    report = write_report(args.run_dirs, out_dir)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Search report: {out_dir / REPORT_MD}")
    for column in ("run", "strategy", "trials", "best value", "best trial"):
        table.add_column(column)
    for run_summary in report["runs"]:
        best = run_summary["best"]
        table.add_row(run_summary["label"], run_summary["strategy"], str(run_summary["n_finished"]),
                      "-" if best is None else f"{best['value']:.4f}", "-" if best is None else str(best["trial"]))
    console = Console()
    console.print(table)
    console.print(f"wrote {out_dir / REPORT_MD}, {out_dir / REPORT_JSON} and {sum(len(v) for v in report['plots'].values())} plot(s)")
    return 0
