"""``bench export``: turn a training run into a Paddle Inference model directory."""

from __future__ import annotations

import argparse
import json

NAME = "export"
HELP = "export a training run to exported_models/<run> (Paddle Inference + inference.yml + manifest)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench export``."""
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="training run directory (holds config.yaml, metrics.json, model.pdparams)")
    parser.add_argument("--out-dir", default=None, help="export directory (default: exported_models/<run name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export directory")
    parser.add_argument("--parity-backend", default=None, choices=("cpu", "cpu-plain", "gpu", "trt"),
                        help="predictor backend of the dygraph parity check (default: gpu if available, else cpu)")
    parser.add_argument("--json", action="store_true", help="print the manifest summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Export, check parity against dygraph, print where the model went."""
    from harness.export import export

    exported = export(args.run, args.out_dir, overwrite=args.overwrite, parity_backend=args.parity_backend)
    manifest = exported.manifest or {}
    parity = manifest.get("parity", {})
    summary = {
        "model_dir": str(exported.model_dir),
        "model_name": exported.model_name,
        "num_classes": exported.num_classes,
        "image_size": exported.preprocess.crop_size,
        "files": sorted(manifest.get("files", {})),
        "parity": parity,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    console.print(f"[green]exported[/green] {exported.model_name} ({exported.num_classes} classes, "
                  f"{exported.preprocess.crop_size} px) to [bold]{exported.model_dir}[/bold]")
    console.print(f"files: {', '.join(summary['files'])}")
    console.print(
        f"parity vs dygraph on {parity.get('backend')}: max |logit diff| {parity.get('max_abs_diff', float('nan')):.3g} "
        f"(tolerance {parity.get('tolerance', float('nan')):.3g}), argmax {parity.get('argmax_agree')}/{parity.get('num_inputs')}"
    )
    return 0
