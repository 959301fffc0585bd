"""``bench``: the tlbench command line.

Each subcommand lives in its own module under ``bench/commands/`` with ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. ``main(argv)``
returns the exit status so tests can call it in-process.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.util
import logging
import signal
import sys
import threading
from typing import Optional, Sequence

from common.errors import Terminated, TlbenchError

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
    "bench.commands.seed_table",
    "bench.commands.preprocess",
    "bench.commands.export",
    "bench.commands.eval",
    "bench.commands.predict",
    "bench.commands.eval_bench",
    "bench.commands.int8_bench",
    "bench.commands.throughput",
    "bench.commands.deploy",
    "bench.commands.serve",
    "bench.commands.serve_abuse",
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


class _PaddleThreadNotice:
    """A stderr wrapper that drops the two lines Paddle prints at import when OMP_NUM_THREADS > 1.

    They warn about data-parallel training, which tlbench does not do; ``bench`` sets the
    thread count on purpose (``--threads``), so they would appear on every run.
    """

    _LINES = ("WARNING: OMP_NUM_THREADS set to ", "PLEASE USE OMP_NUM_THREADS WISELY.")

    def __init__(self, stream) -> None:
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        # print() writes the message and its newline separately.
        if text.startswith(self._LINES) or (self._dropped and text == "\n"):
            self._dropped = text != "\n"
            return len(text)
        self._dropped = False
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


class _ReclaimSignalsAfterPaddle(importlib.abc.MetaPathFinder):
    """Re-installs Python's SIGTERM handler once ``paddle`` has been imported.

    Paddle's C++ core installs its own SIGTERM handler at import (it prints a native stack and
    kills the process), which silently replaces ours; the commands import Paddle lazily, so the
    handler is put back right after that import, wherever it happens.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "paddle":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_reclaim(module) -> None:
            exec_module(module)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGTERM))

        loader.exec_module = exec_then_reclaim
        return spec


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``bench`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    A user error exits 2, Ctrl-C 130 and SIGTERM 143 (128 + 15, as a shell reports a process
    it terminated), after the command has cleaned up.
    """
    # Thread and MKL settings only take full effect before Paddle is imported (parsing does not import it).
    from harness.runtime import prepare_environment

    parser = build_parser()
    args = parser.parse_args(argv)
    threads = getattr(args, "threads", None)
    prepare_environment(threads if isinstance(threads, int) and threads >= 1 and "paddle" not in sys.modules else None)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _setup_logging(args.debug, args.quiet)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    finder = _ReclaimSignalsAfterPaddle() if in_main_thread and "paddle" not in sys.modules else None
    if finder is not None:
        sys.meta_path.insert(0, finder)
    stderr = sys.stderr
    if not isinstance(stderr, _PaddleThreadNotice):
        sys.stderr = _PaddleThreadNotice(stderr)  # type: ignore[assignment]
    try:
        return int(args._run(args) or 0)
    except TlbenchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        sys.stderr = stderr
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
