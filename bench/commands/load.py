"""``bench load``: throughput and latency percentiles of an inference server per concurrency level."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

NAME = "load"
HELP = "load-test a /predict server: throughput and p50/p90/p95/p99 latency per concurrency level"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench load``."""
    parser.add_argument("--url", required=True, help="server URL, e.g. http://127.0.0.1:8000 (/predict is appended)")
    parser.add_argument("--images", required=True, help="a JPEG/PNG file or a directory searched recursively")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated in-flight request counts (default 1,4,16)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per level (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level (default 1)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    parser.add_argument("--max-images", type=int, default=256, help="images read from --images (default 256)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--out", default=None, help="also write the JSON report to this file")


def run(args: argparse.Namespace) -> int:
    """Run every level; exit 1 when any request failed."""
    from bench.perf.load import load_images, parse_concurrency, run_load
    from common.validate import at_least

    # httpx logs every request at INFO; thousands of lines would bury the table.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    at_least(args.max_images, "--max-images", 1)
    levels = parse_concurrency(args.concurrency)
    images = load_images(args.images, args.max_images)
    report = run_load(args.url, images, levels, args.duration, warmup_s=args.warmup, timeout_s=args.timeout)
    data = report.to_dict()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{report.url}: {report.images} images, {args.duration:g} s per level", title_justify="left")
        for column in ("conc.", "req/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "ok", "errors", "mean batch"):
            table.add_column(column, justify="left" if column == "errors" else "right")
        for lv in report.levels:
            lat = lv.latency_ms
            errors = ", ".join(f"{k}: {v}" for k, v in lv.errors.items()) or "0"
            counts = {int(k): v for k, v in lv.server_batch_sizes.items()}
            batches = f"{sum(k * v for k, v in counts.items()) / sum(counts.values()):.2f}" if counts else "-"
            table.add_row(str(lv.concurrency), f"{lv.throughput_rps:.1f}", f"{lat['p50_ms']:.1f}", f"{lat['p90_ms']:.1f}",
                          f"{lat['p95_ms']:.1f}", f"{lat['p99_ms']:.1f}", str(lv.ok), errors, batches)
        Console().print(table)
    return 1 if any(lv.errors for lv in report.levels) else 0
