"""``bench eval``: accuracy and speed of an exported model on a dataset split, through Paddle Inference."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import ConfigError
from common.validate import at_least

from ._args import add_dataset_arguments

NAME = "eval"
HELP = "evaluate an exported model on a dataset split with Paddle Inference; writes eval.json"
EVAL_FILE = "eval.json"


def add_predictor_arguments(parser: argparse.ArgumentParser, *, batch_size: int = 8) -> None:
    """Add --backend, --precision, --batch-size, --threads, --gpu-id, --trt-cache-dir (shared with predict)."""
    parser.add_argument("--backend", default="cpu", choices=("cpu", "cpu-plain", "gpu", "trt"),
                        help="cpu = oneDNN, cpu-plain = Paddle's native CPU kernels, gpu = CUDA, trt = TensorRT")
    parser.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16", "int8"),
                        help="fp32 everywhere; bf16 on CPUs with AVX512-BF16; fp16 on gpu/trt; int8 on cpu and trt for int8 "
                             "exports (bench export --precision int8) (default: int8 for an int8 export, else fp32)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"images per predictor call (default {batch_size})")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the predictor (default: all cores)")
    parser.add_argument("--gpu-id", type=int, default=0,
                        help="GPU index for gpu/trt (trt on an inference.json model converts on GPU 0: choose the GPU with CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--trt-cache-dir", default=None, help="where TensorRT engines are cached (default: <model>/_trt_cache)")


def resolve_precision(args: argparse.Namespace) -> str:
    """Fill in ``args.precision`` when it was not given: int8 for an int8 export, else fp32."""
    if getattr(args, "precision", None) is None:
        from harness.predictor import default_precision

        args.precision = default_precision(args.model, args.backend)
    return args.precision


def predictor_options(args: argparse.Namespace, **extra):
    """PredictorOptions from the flags of :func:`add_predictor_arguments`."""
    from harness.predictor import PredictorOptions

    resolve_precision(args)
    at_least(args.batch_size, "--batch-size", 1)
    if args.threads is not None:
        at_least(args.threads, "--threads", 1)
    return PredictorOptions(
        backend=args.backend, precision=args.precision, batch_size=args.batch_size, threads=args.threads,
        gpu_id=args.gpu_id, trt_cache_dir=args.trt_cache_dir, **extra,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench eval``."""
    parser.add_argument("--model", required=True, help="export directory (exported_models/X) or a PaddleClas inference dir")
    add_dataset_arguments(parser, required=True)
    parser.add_argument("--train-list", default=None, help="train list file (--dataset list)")
    parser.add_argument("--val-list", default=None, help="val list file (--dataset list)")
    parser.add_argument("--test-list", default=None, help="test list file (--dataset list)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to evaluate (default test)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the split")
    parser.add_argument("--workers", type=int, default=2, help="decode/preprocess threads (default 2)")
    parser.add_argument("--out-dir", default=None, help="where eval.json goes (default: the model directory)")
    parser.add_argument("--json", action="store_true", help="print eval.json to stdout instead of a table")
    add_predictor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a table (or JSON), write eval.json."""
    from harness.data import load_dataset
    from harness.evaluate import evaluate
    from harness.predictor import Predictor, check_backend

    resolve_precision(args)
    check_backend(args.backend, args.precision)  # fail before the dataset is read
    if args.limit is not None:
        at_least(args.limit, "--limit", 1)
    at_least(args.workers, "--workers", 1)
    # A carved val split must be carved as it was for training, or it may hold training images.
    from harness.artifact import ExportedModel

    hyper = (ExportedModel.load(args.model).manifest or {}).get("hyperparameters", {})
    # Flat class folders are carved with the training run's test fraction when it is the same folder.
    same_root = bool(args.data_root and hyper.get("data_root")
                     and Path(args.data_root).resolve() == Path(hyper["data_root"]).resolve())
    splits = load_dataset(args.dataset, args.data_root, train_list=args.train_list, val_list=args.val_list,
                          test_list=args.test_list, val_fraction=hyper.get("val_fraction", 0.1),
                          test_fraction=hyper.get("test_fraction") if same_root else None,
                          seed=hyper.get("split_seed", 0))
    samples = list(splits.split(args.split))
    if args.limit:
        samples = samples[: args.limit]
    if not samples:
        raise ConfigError(f"split {args.split!r} of dataset {args.dataset!r} is empty")
    predictor = Predictor(args.model, predictor_options(args))
    model_classes = predictor.model.classes
    if model_classes is not None and tuple(model_classes) != tuple(splits.classes):
        raise ConfigError(
            f"the model's classes ({len(model_classes)}: {', '.join(model_classes[:4])}, ...) differ from dataset "
            f"{args.dataset!r} ({len(splits.classes)}: {', '.join(splits.classes[:4])}, ...); labels would not match"
        )
    if model_classes is None and predictor.num_outputs != len(splits.classes):
        raise ConfigError(
            f"the model outputs {predictor.num_outputs} class scores but dataset {args.dataset!r} has "
            f"{len(splits.classes)} classes; labels would not match"
        )
    result = evaluate(predictor, samples, splits.classes, batch_size=args.batch_size, workers=args.workers)
    record = {"model": str(args.model), "dataset": args.dataset, "data_root": args.data_root, "split": args.split,
              "metric": splits.metric, "integrity": predictor.model.integrity,
              "predictor": predictor.describe(), **result.to_dict(),
              # Files of this split that load_dataset dropped (missing, empty, not an image) before evaluation.
              "dropped_at_load": splits.report.skipped_in(args.split)}
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / EVAL_FILE
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_path)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{predictor.model.model_name} on {args.dataset}/{args.split} "
                        f"({args.backend}, {args.precision}, batch {args.batch_size})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    lat = result.latency
    rows = [
        ("top-1", f"{result.top1:.4f}"),
        ("top-5", f"{result.top5:.4f}"),
        ("mean per-class", f"{result.mean_per_class:.4f}"),
        ("images", f"{result.num_images}" + (f" ({result.num_skipped} skipped)" if result.num_skipped else "")
         + (f" ({len(record['dropped_at_load'])} dropped at load)" if record["dropped_at_load"] else "")),
        ("img/s (end to end)", f"{result.images_per_sec:.1f}"),
        ("batch latency p50 / p90 / p99 ms", f"{lat['p50_ms']:.1f} / {lat['p90_ms']:.1f} / {lat['p99_ms']:.1f}"),
        ("inference waited for input", f"{result.input_wait_s:.2f} s of {result.wall_s:.2f} s"),
        ("preprocessing", result.preprocess_backend),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print(table)
    console.print(f"wrote {out_path}")
    return 0
