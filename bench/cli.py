"""``bench``: the tlbench command line.

Each subcommand lives in its own module under ``bench/commands/`` with ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. ``main(argv)``
returns the exit status so tests can call it in-process.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from common.errors import TlbenchError

# Subcommand modules, in the order ``bench --help`` lists them.
COMMAND_MODULES = [
    "bench.commands.train",
    "bench.commands.search",
    "bench.commands.train_speed",
    "bench.commands.trial_speed",
    "bench.commands.train_profile",
    "bench.commands.loader_bench",
    "bench.commands.report",
    "bench.commands.replay",
    "bench.commands.preprocess",
    "bench.commands.export",
    "bench.commands.eval",
    "bench.commands.predict",
    "bench.commands.eval_bench",
    "bench.commands.int8_bench",
    "bench.commands.throughput",
    "bench.commands.deploy",
    "bench.commands.serve",
    "bench.commands.load",
]

log = logging.getLogger("bench")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Fine-tune, search, export and measure image classifiers.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=Console(stderr=True), show_path=debug, rich_tracebacks=True, markup=False)],
        force=True,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``bench`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    # Thread and MKL settings only take full effect before Paddle is imported.
    from harness.runtime import prepare_environment

    prepare_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _setup_logging(args.debug, args.quiet)
    try:
        return int(args._run(args) or 0)
    except TlbenchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
