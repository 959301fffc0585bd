"""``bench throughput``: img/s and latency percentiles of an exported model, end to end and model-only,
beside the naive PaddleClas-style pipeline, over a grid of batch sizes and concurrencies.

Writes ``throughput.json`` (one record per point plus the environment), ``throughput.md`` and two
PNG plots; prints a table. The measurement itself lives in :mod:`bench.perf.throughput`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common.errors import ConfigError

NAME = "throughput"
HELP = ("throughput and latency (mean, p50-p99, max) of an exported model over batch sizes and concurrency, "
        "JPEG end to end and model-only, against the naive baseline pipeline")


def _int_list(flag: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes comma-separated integers, e.g. 1,8,32; got {text!r}") from None
        if not values or any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"{flag} takes positive integers, got {text!r}")
        return values

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench throughput``."""
    parser.add_argument("--model", required=True, help="export directory (exported_models/X) or a PaddleClas inference dir")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "cpu-plain", "gpu", "trt"),
                        help="cpu = oneDNN, cpu-plain = Paddle's native CPU kernels, gpu = CUDA, trt = TensorRT")
    parser.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16", "int8"),
                        help="fp32 everywhere; bf16 on CPUs with AVX512-BF16; fp16 on gpu/trt; int8 on trt, and on cpu "
                             "for int8 exports (default: int8 for an int8 export, else fp32)")
    parser.add_argument("--batch-sizes", type=_int_list("--batch-sizes"), default=(1, 8), metavar="B1,B2,...",
                        help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--concurrency", type=_int_list("--concurrency"), default=(1,), metavar="C1,C2,...",
                        help="comma-separated client-thread counts, each client with its own predictor (default 1)")
    parser.add_argument("--duration", type=float, default=5.0, metavar="SECONDS",
                        help="seconds measured per point and round (default 5)")
    parser.add_argument("--requests", type=int, default=None,
                        help="measure this many requests per client instead of --duration")
    parser.add_argument("--warmup", type=float, default=1.0, metavar="SECONDS",
                        help="untimed seconds before each point, at least one request per client (default 1)")
    parser.add_argument("--repetitions", type=int, default=3,
                        help="rounds; each measures every point once, in a rotating order (default 3)")
    parser.add_argument("--input", default="both", choices=("jpeg", "tensor", "both"),
                        help="jpeg = end to end from JPEG bytes, tensor = the model alone, both (default)")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="folder of JPEGs (searched recursively; default ../shared/datasets/flowers12 "
                             "relative to the repository)")
    parser.add_argument("--max-images", type=int, default=256, help="JPEGs held in memory (default 256)")
    parser.add_argument("--threads", type=int, default=None,
                        help="math-library threads per predictor (default cores // concurrency)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive baseline pipeline")
    parser.add_argument("--out-dir", default=None, metavar="DIR",
                        help="where throughput.json/.md and the plots go (default <model>/throughput)")
    parser.add_argument("--json", action="store_true", help="print throughput.json to stdout instead of the table")


def config_from_args(args: argparse.Namespace):
    """The validated :class:`bench.perf.throughput.ThroughputConfig` of the parsed flags."""
    from bench.commands.eval import resolve_precision
    from bench.perf.schema import INPUT_MODES
    from bench.perf.throughput import ThroughputConfig

    resolve_precision(args)

    return ThroughputConfig(
        model_dir=args.model,
        backend=args.backend,
        precision=args.precision,
        batch_sizes=tuple(args.batch_sizes),
        concurrency=tuple(args.concurrency),
        duration_s=float(args.duration),
        warmup_s=float(args.warmup),
        requests=args.requests,
        repetitions=args.repetitions,
        inputs=INPUT_MODES if args.input == "both" else (args.input,),
        images_dir=args.images,
        max_images=args.max_images,
        baseline=not args.no_baseline,
        threads=args.threads,
    )


def _ratio(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _tables(report: dict[str, Any]) -> list:
    """Two rich tables (throughput and latency; time split and ratios), fitting 120 columns."""
    from rich.table import Table

    from bench.perf.schema import LATENCY_KEYS, STAGES

    env = report["environment"]
    speed = Table(title=f"{env['model_name']} @ {env['image_size']} px, {env['backend']}/{env['precision']}: "
                        "throughput and latency per request (ms)", title_justify="left")
    split = Table(title="time split per request (ms) and ratios", title_justify="left")
    for table in (speed, split):
        table.add_column("pipeline")
        table.add_column("batch", justify="right")
        table.add_column("conc", justify="right")
    speed.add_column("thr", justify="right")
    speed.add_column("img/s", justify="right")
    speed.add_column("min–max", justify="right")
    for key in LATENCY_KEYS:
        speed.add_column(key.replace("_ms", ""), justify="right")
    for stage in STAGES:
        split.add_column(stage, justify="right")
    split.add_column("pipeline ms/img", justify="right")
    split.add_column("e2e/model", justify="right")
    split.add_column("ours/baseline", justify="right")
    split.add_column("pipeline speed-up", justify="right")
    for p in report["points"]:
        head = (f"{p['pipeline']}/{p['input']}", str(p["batch_size"]), str(p["concurrency"]))
        lat = p["latency_ms"]
        speed.add_row(*head, str(p["threads_per_predictor"]), f"{p['images_per_sec']:.1f}",
                      f"{p['images_per_sec_min']:.1f}–{p['images_per_sec_max']:.1f}",
                      *(f"{lat[k]:.1f}" for k in LATENCY_KEYS))
        ratios = p["ratios"]
        split.add_row(*head, *(f"{p['split_ms'][s]:.2f}" for s in STAGES), f"{p['pipeline_ms_per_image']:.2f}",
                      _ratio(ratios["e2e_over_model"]), _ratio(ratios["ours_over_baseline"]),
                      _ratio(ratios["pipeline_speedup_vs_baseline"]))
    return [speed, split]


def run(args: argparse.Namespace) -> int:
    """Measure, write the outputs, print the table (or the JSON)."""
    from rich.console import Console

    from bench.perf.outputs import write_outputs
    from bench.perf.throughput import run_throughput

    cfg = config_from_args(args)
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.model) / "throughput"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out-dir {out_dir} exists and is not a directory")
    report = run_throughput(cfg)
    paths = write_outputs(report, out_dir)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from bench.perf.outputs import machine_line

    console = Console(width=max(120, Console().width))
    for table in _tables(report):
        console.print(table)
    console.print(f"machine: {machine_line(report['environment'])}")
    agreement = report["agreement"]
    if agreement:
        console.print(f"ours vs baseline: same top-1 on {agreement['top1_agree']}/{agreement['images']} images "
                      f"({agreement['near_ties']} near-ties, max |logit diff| {agreement['max_abs_logit_diff']:.3g})")
    console.print(f"wrote {paths['json']}, {paths['markdown'].name}, {paths['plot_latency'].name}, "
                  f"{paths['plot_split'].name}")
    return 0
