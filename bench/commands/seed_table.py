"""``bench seed-table``: the seed's comparison table (fixed, grid, Bayes, BiT, multi-fidelity) from finished searches."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "seed-table"
HELP = "the seed's table for one dataset (val and test top-1 per strategy, search times) from finished searches"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of ``bench seed-table``."""
    parser.add_argument("--grid", metavar="RUN_DIR", help="the grid search's run directory")
    parser.add_argument("--fixed", nargs="+", default=[], metavar="RUN_DIR", help="fixed-scheme run directories")
    parser.add_argument("--bayes", nargs="+", default=[], metavar="RUN_DIR",
                        help="Bayesian searches (several search seeds make one mean row)")
    parser.add_argument("--bit", nargs="+", default=[], metavar="RUN_DIR", help="BiT-HyperRule run directories")
    parser.add_argument("--multi-fidelity", nargs="+", default=[], metavar="RUN_DIR",
                        help="multi-fidelity searches (asha, bohb)")
    parser.add_argument("--dataset", default="", help="dataset name for the heading")
    parser.add_argument("--out", metavar="JSON", help="also write the table as JSON to this file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")


def run(args: argparse.Namespace) -> int:
    """Read the runs and print the table."""
    from common.errors import ConfigError

    from bench.seed_table import build_table

    runs = {"grid": [args.grid] if args.grid else [], "fixed": args.fixed, "bayes": args.bayes, "bit": args.bit,
            "multi_fidelity": args.multi_fidelity}
    if not any(runs.values()):
        raise ConfigError("give at least one run directory (--grid, --fixed, --bayes, --bit, --multi-fidelity)")
    table = build_table(runs, dataset=args.dataset)
    text = json.dumps(table, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if args.json else "\n".join(table["markdown"]))
    return 0
