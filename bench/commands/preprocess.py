"""``bench preprocess``: the fused preprocessing kernel against the reference op chain.

One run measures, on flowers12 JPEGs and on larger JPEGs generated from them (default
2000×1500), at batch 32 and output 224:

- decode alone: OpenCV (``imdecode`` + BGR→RGB), simplejpeg full size, simplejpeg with DCT-domain
  downscaling (``decode_jpeg(min_side=resize_short)``);
- preprocessing alone (decode excluded): the reference op chain (cv2.resize, crop, numpy
  normalize, transpose) against the fused CPU kernel, with 1 thread and with all threads;
- end to end (decode + preprocessing);
- the bytes-moved bound: what this machine's single-thread copy bandwidth would allow for the
  bytes the fused kernel must read and write per image (the same number on the all-threads row,
  where it is a lower estimate since several cores can draw more bandwidth than one).

Images are read from the dataset folder (never copied); medians over ``--repeats`` after a warm-up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.paths import BENCHMARK_DATASET
from bench.perf.preprocess_bench import run_benchmark

NAME = "preprocess"
HELP = "benchmark the fused preprocessing kernel against the reference op chain (and JPEG decode)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``bench preprocess`` flags."""
    parser.add_argument("--data-root", default=str(BENCHMARK_DATASET),
                        help="folder searched recursively for JPEGs (default ../shared/datasets/flowers12)")
    parser.add_argument("--count", type=int, default=256, help="dataset JPEGs to use (default 256)")
    parser.add_argument("--large-count", type=int, default=32, help="generated large JPEGs (default 32; 0 skips)")
    parser.add_argument("--large-size", default="2000x1500", help="WxH of the generated JPEGs (default 2000x1500)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per preprocessing call (default 32)")
    parser.add_argument("--crop-size", type=int, default=224, help="output side (default 224)")
    parser.add_argument("--resize-short", type=int, default=256, help="short side before the crop (default 256)")
    parser.add_argument("--threads", type=int, default=None, help="'all threads' count (default: usable cores)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions, median reported (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", default=None, help="also write the JSON results to this file")


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    env = result["environment"]
    console = Console()
    if not console.is_terminal:  # keep rows on one line in logs and piped output
        console = Console(width=150)
    table = Table(title=f"bench preprocess — batch {env['batch_size']}, {env['resize_short']}→{env['crop_size']}, "
                        f"{env['cpu_model']}, {env['threads_all']} threads, copy bandwidth {env['memory_bandwidth_gbs']} GB/s")
    for col, justify in (("images", "left"), ("stage", "left"), ("implementation", "left"), ("threads", "right"),
                         ("img/s", "right"), ("ms/batch", "right"), ("CPU ms/img", "right"), ("speed-up", "right"),
                         ("CPU speed-up", "right"), ("bound img/s", "right")):
        table.add_column(col, justify=justify)
    for r in result["rows"]:
        table.add_row(r["images"], r["stage"], r["impl"], str(r["threads"]), f"{r['img_per_s']:,.0f}",
                      f"{r['ms_per_batch']:.2f}", f"{r['cpu_ms_per_image']:.3f}",
                      f"{r['speedup']:.1f}×" if r["speedup"] else "",
                      f"{r['cpu_speedup']:.1f}×" if r["cpu_speedup"] else "",
                      f"{r['bound_img_per_s']:,.0f}" if r["bound_img_per_s"] else "")
    console.print(table)
    console.print("speed-up: wall clock vs the reference row above it; CPU speed-up: the same for process CPU time "
                  "per image. bound img/s: copy bandwidth / bytes the fused kernel must move per image.")
    console.print(f"environment: {json.dumps(env)}")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print a table (or JSON with ``--json``)."""
    result = run_benchmark(args)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0

