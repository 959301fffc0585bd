"""``bench serve-abuse``: a normal request's latency on ``bench serve`` alone, behind huge PNGs,
and beside slow uploads (engine: ``bench/perf/serve_abuse.py``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "serve-abuse"
HELP = "measure /predict latency while other clients send huge PNGs or trickle their uploads"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench serve-abuse``."""
    parser.add_argument("--model", required=True, help="export directory to serve")
    parser.add_argument("--images", required=True, help="folder of normal JPEG/PNG images to send")
    parser.add_argument("--requests", type=int, default=100, help="normal requests per phase (default 100)")
    parser.add_argument("--big-clients", type=int, default=4, help="clients posting the huge PNG (default 4)")
    parser.add_argument("--big-size", type=int, default=6000, help="side of the huge 16-bit RGBA PNG (default 6000)")
    parser.add_argument("--slow-clients", type=int, default=100, help="connections trickling their body (default 100)")
    parser.add_argument("--slow-interval", type=float, default=2.0, help="seconds between their bytes (default 2)")
    parser.add_argument("--server-args", default="", help="extra `bench serve` flags, space-separated")
    parser.add_argument("--out", default=None, help="write the JSON result to this file")
    parser.add_argument("--json", action="store_true", help="print the JSON result")


def run(args: argparse.Namespace) -> int:
    """Run the phases and print a table (or JSON)."""
    from bench.perf.serve_abuse import run_abuse
    from common.errors import ConfigError
    from common.validate import at_least
    from harness.data import list_images

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    for flag in ("requests", "big_clients", "big_size", "slow_clients"):
        at_least(getattr(args, flag), f"--{flag.replace('_', '-')}", 1)
    paths = [p for p in list_images(args.images) if p.suffix.lower() in (".jpg", ".jpeg", ".png")][:64]
    if not paths:
        raise ConfigError(f"--images {args.images}: no JPEG or PNG files found")
    result = run_abuse(args.model, [p.read_bytes() for p in paths], requests=args.requests,
                       big_clients=args.big_clients, big_size=args.big_size, slow_clients=args.slow_clients,
                       slow_interval_s=args.slow_interval, server_args=args.server_args.split())
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'phase':<12} {'p50 ms':>8} {'p99 ms':>8} {'x unloaded':>10}  normal status / load status")
    for name, ph in result["phases"].items():
        ratio = ph.get("p99_vs_unloaded")
        print(f"{name:<12} {ph['p50_ms']:8.1f} {ph['p99_ms']:8.1f} {'' if ratio is None else f'{ratio:10.2f}'}"
              f"  {ph['status']} / {ph['load_status']}")
    print(f"cpu: {result['environment'].get('cpu_model')}")
    return 0
