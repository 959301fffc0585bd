"""``bench replay GRID_RUN``: compare strategies over many seeds on a finished (grid) search, at no cost."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.validate import at_least

NAME = "replay"
HELP = ("cost (trials, or full-trial equivalents for asha/bohb) each strategy needs to come within X points of a "
        "finished grid search's best (replayed)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of ``bench replay``."""
    parser.add_argument("journal", metavar="RUN_DIR_OR_JOURNAL", help="finished search run directory (or its journal.jsonl)")
    parser.add_argument("--strategies", nargs="+", default=["random", "bayes"], metavar="SPEC",
                        help="strategies to compare, each NAME[:key=value,...], e.g. bayes:acq_func=EI,n_initial_points=5 "
                             "or asha:min_epochs=2,eta=2 or bohb (multi-fidelity: lower rungs are read from each trial's "
                             "per-epoch history) (default: random bayes)")
    parser.add_argument("--seeds", type=int, default=50, help="seeds per strategy (default 50)")
    parser.add_argument("--within", type=float, default=0.4,
                        help="target: within this many accuracy points (percent) of the journal's best; when the "
                             "journal's values are fractions in [0, 1], 0.4 means 0.004 (default 0.4)")
    parser.add_argument("--max-trials", type=int, default=None, help="give up after this many trials (default: grid size)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 12, 20], metavar="N",
                        help="report the share of seeds within each of these many trials (default 8 12 20); the "
                             "best-so-far curves run to the largest")
    parser.add_argument("--plot", default=None, metavar="PNG", help="also draw best-so-far vs cost to this PNG")
    parser.add_argument("--restrict", nargs="+", default=[], metavar="NAME=V[,V...]",
                        help="replay over a sub-grid, e.g. lr=0.03: what a strategy costs when it knows part of "
                             "the answer (the target stays the whole journal's best)")
    parser.add_argument("--out", default=None, help="also write the JSON result to this file")
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of a table")


def run(args: argparse.Namespace) -> int:
    """Replay every strategy over the seeds and print the table (or JSON)."""
    from search.replay import ReplayObjective, compare_strategies, parse_strategy_configs, restrict_space

    at_least(args.seeds, "--seeds", 1)
    at_least(args.within, "--within", 0)
    if args.max_trials is not None:
        at_least(args.max_trials, "--max-trials", 1)
    for budget in args.budgets:
        at_least(budget, "--budgets", 1)
    objective = ReplayObjective(args.journal)
    values = [t.value for t in objective.trials if t.value is not None]
    fractions = all(0.0 <= v <= 1.0 for v in values)
    within = args.within / 100.0 if fractions else args.within
    space = restrict_space(objective.space, args.restrict) if args.restrict else None
    result = compare_strategies(objective, parse_strategy_configs(args.strategies), seeds=args.seeds,
                                within=within, max_trials=args.max_trials, budgets=args.budgets, space=space)
    result["within_points"] = args.within
    if args.restrict:
        result["restrict"] = list(args.restrict)
    if args.plot:
        from bench.replay_plot import plot_best_so_far

        plot_best_so_far(result, args.plot, percent=fractions)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
        return 0
    from rich.console import Console
    from rich.table import Table

    scale = 100.0 if fractions else 1.0
    table = Table(title=f"Cost in full-trial equivalents (FTE = epochs / max epochs) to come within {args.within:g} points of the best "
                        f"({result['best'] * scale:.2f}) of {result['journal']}, {args.seeds} seeds"
                        + (f", sub-grid {' '.join(args.restrict)}" if args.restrict else ""))
    budgets = [str(b) for b in result["budgets"]]
    for column in ("strategy", "median FTE", "IQR (q1-q3)", "median trials", "reached",
                   *(f"within {b} FTE" for b in budgets), "median search time"):
        table.add_column(column)
    for row in result["strategies"]:
        time_s = row["median_time_s"]
        table.add_row(row["label"], f"{row['median_fte']:.1f}", f"{row['iqr']:.1f} ({row['q1']:.1f}-{row['q3']:.1f})",
                      f"{row['median_trials']:.1f}", f"{row['reached']}/{args.seeds}", *(f"{row['reached_share'][b]:.0%}" for b in budgets),
                      "-" if time_s is None else f"{time_s / 60:.1f} min")
    Console().print(table)
    if result.get("missing_points"):
        Console().print(f"[yellow]warning: {result['missing_points']} of {result['grid_size']} grid points are "
                        "missing from the journal; they replay as failed trials[/yellow]")
    for written in (args.out, args.plot):
        if written:
            Console().print(f"wrote {written}")
    return 0
