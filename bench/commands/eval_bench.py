"""``bench eval-bench``: our exported evaluation vs the naive PaddleClas-style loop, in one run.

Both pipelines run the same Paddle Inference predictor on the same images; only the
input path differs:

- ours: :func:`harness.evaluate.evaluate` (worker threads decode and preprocess batch
  k+1 with :func:`kernels.preprocess` while the predictor runs batch k);
- naive: what PaddleClas's ``predict_cls.py`` does, one batch at a time on one thread:
  ``cv2.imread`` → BGR→RGB → resize short side → center crop → ``(x * scale - mean) / std``
  → HWC→CHW in numpy, ``np.array`` of the batch, ``copy_from_cpu`` → ``run`` → ``copy_to_cpu``.

Without ``--model`` a randomly initialised ResNet50_vd is exported first (the speed of a
ResNet50_vd does not depend on its weights). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.paths import BENCHMARK_DATASET
from bench.perf.eval_bench import DEFAULT_DATASET, run_benchmark
from common.validate import at_least

from ._args import add_dataset_arguments
from .eval import add_predictor_arguments, predictor_options

NAME = "eval-bench"
HELP = "benchmark exported evaluation: our pipeline vs the naive cv2/numpy loop (img/s and ratio)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench eval-bench``."""
    parser.add_argument("--model", default=None, help="export directory; default: export a random-init ResNet50_vd first")
    parser.add_argument("--arch", default="ResNet50_vd", help="model built when --model is not given (default ResNet50_vd)")
    parser.add_argument("--image-size", type=int, default=224, help="input size of the built model (default 224)")
    add_dataset_arguments(parser, dataset_absent=f"default {DEFAULT_DATASET}",
                          data_root_absent=f"default {BENCHMARK_DATASET}")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images of the split")
    parser.add_argument("--workers", type=int, default=2, help="decode/preprocess threads of our pipeline (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two pipelines this many times; medians reported")
    parser.add_argument("--out-dir", default=None, help="also write eval_bench.json here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_predictor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run both pipelines, check they agree, print img/s and the ratio."""
    for flag, value in (("--limit", args.limit), ("--repeats", args.repeats), ("--workers", args.workers),
                        ("--image-size", args.image_size)):
        if value is not None:
            at_least(value, flag, 1)
    record = run_benchmark(args, predictor_options(args))
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_bench.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    env = record["environment"]
    table = Table(title=f"exported evaluation, {env['model_name']} @ {record['image_size']} px, {record['num_images']} images, "
                        f"{env['backend']}/{env['precision']}, batch {args.batch_size}", title_justify="left")
    table.add_column("pipeline")
    table.add_column("img/s", justify="right")
    table.add_column("top-1", justify="right")
    table.add_row(f"ours (evaluate, {args.workers} workers, {env['kernels_backend']} preprocessing)",
                  f"{record['ours_images_per_sec']:.1f}", f"{record['ours_top1']:.4f}")
    table.add_row("naive (cv2 + numpy, one batch at a time)", f"{record['naive_images_per_sec']:.1f}",
                  f"{record['naive_top1']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"ratio ours / naive: [bold]{record['ratio']:.2f}x[/bold]; same argmax on {record['argmax_agreement']:.1%} of images; "
                  f"{env['cpu_model']}, {env['cpu_cores']} cores, Paddle {env['paddle_version']}")
    return 0
