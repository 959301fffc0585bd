"""``bench predict``: top-k classes of a few images with an exported model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .eval import add_predictor_arguments, predictor_options

NAME = "predict"
HELP = "classify images with an exported model and print the top-k classes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench predict``."""
    parser.add_argument("--model", required=True, help="export directory (exported_models/X) or a PaddleClas inference dir")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_predictor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Predict every image; unreadable images are reported and make the exit status 1."""
    from harness.data import read_image_rgb
    from common.errors import ImageDecodeError
    from common.validate import at_least
    from harness.metrics import softmax, topk
    from harness.predictor import Predictor

    at_least(args.topk, "--topk", 1)
    predictor = Predictor(args.model, predictor_options(args))
    images, paths, failures = [], [], []
    for path in args.images:
        try:
            images.append(read_image_rgb(path))
            paths.append(path)
        except ImageDecodeError as exc:
            failures.append({"image": path, "error": str(exc)})
    results = []
    if images:
        probs = softmax(np.asarray(predictor.predict_images(images), np.float64))
        classes = predictor.model.classes
        top_ids, top_scores = topk(probs, args.topk)
        for path, top, scores in zip(paths, top_ids, top_scores):
            results.append({
                "image": path,
                "class_ids": [int(i) for i in top],
                "scores": [float(s) for s in scores],
                "label_names": [classes[i] if classes is not None else str(int(i)) for i in top],
            })
    if args.json:
        print(json.dumps({"model": str(args.model), "results": results, "errors": failures}, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        for r in results:
            table = Table(title=Path(r["image"]).name, title_justify="left")
            table.add_column("rank", justify="right")
            table.add_column("class id", justify="right")
            table.add_column("label")
            table.add_column("probability", justify="right")
            for rank, (cid, name, score) in enumerate(zip(r["class_ids"], r["label_names"], r["scores"]), 1):
                table.add_row(str(rank), str(cid), name, f"{score:.4f}")
            console.print(table)
        for f in failures:
            console.print(f"[red]error[/red]: {f['error']}")
    return 1 if failures else 0
