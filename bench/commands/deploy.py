"""``bench deploy``: ONNX conversion, onnxruntime parity and a Triton model repository."""

from __future__ import annotations

import argparse
import json

NAME = "deploy"
HELP = "convert an exported model to ONNX, check it against Paddle, and write a Triton model repository"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench deploy``."""
    from harness.onnx_export import DEFAULT_MAX_BATCH, DEFAULT_OPSET, DEFAULT_PARITY_IMAGES, DEFAULT_QUEUE_DELAY_US

    parser.add_argument("--model", required=True, help="export directory (exported_models/X)")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="target format (onnx)")
    parser.add_argument("--out", required=True, help="Triton model repository; the model goes to OUT/NAME")
    parser.add_argument("--name", default=None, help="model name in the repository (default: the export's directory name)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"Triton max_batch_size (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--preferred-batch", default=None,
                        help="comma-separated preferred batch sizes for Triton's dynamic batcher (default: 4,8,16,.. up to --max-batch)")
    parser.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US,
                        help=f"Triton dynamic batching max_queue_delay_microseconds (default {DEFAULT_QUEUE_DELAY_US})")
    parser.add_argument("--images", default=None,
                        help="directory of real images for the parity check (default: the model's dataset test split)")
    parser.add_argument("--parity-images", type=int, default=DEFAULT_PARITY_IMAGES,
                        help=f"how many images the parity check uses (default {DEFAULT_PARITY_IMAGES})")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT/NAME if it exists")
    parser.add_argument("--json", action="store_true", help="print the deploy report as JSON")


def run(args: argparse.Namespace) -> int:
    """Deploy and print where the files went and how the parity check came out."""
    from common.errors import ConfigError
    from harness.artifact import TargetExistsError
    from harness.onnx_export import deploy_onnx

    preferred = None
    if args.preferred_batch:
        try:
            preferred = [int(x) for x in args.preferred_batch.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--preferred-batch must be comma-separated integers, got {args.preferred_batch!r}") from None
    try:
        result = deploy_onnx(
            args.model, args.out, name=args.name, opset=args.opset, max_batch=args.max_batch,
            preferred_batch_sizes=preferred, max_queue_delay_us=args.max_queue_delay_us, images=args.images,
            parity_images=args.parity_images, overwrite=args.overwrite,
        )
    except TargetExistsError as exc:
        raise TargetExistsError(f"{exc} (on the command line: --overwrite, or another --name or --out)") from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    p = result.parity
    table = Table(title=f"deployed {args.model} → {result.triton_dir}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("ONNX model", f"{result.onnx.path} (opset {result.onnx.opset}, input {result.onnx.input_name} "
                  f"{list(result.onnx.input_shape)}, output {result.onnx.output_name} {list(result.onnx.output_shape)})")
    table.add_row("parity", f"onnxruntime vs Paddle Inference ({p.backend}) on {p.num_inputs} {p.input_kind} from {p.source}: "
                  f"top-1 {p.argmax_agree}/{p.num_inputs}, max |logit diff| {p.max_abs_diff:.3g} "
                  f"(tolerance {p.tolerance:.3g}, max |logit| {p.max_abs_logit:.3g})")
    table.add_row("Triton", f"platform onnxruntime_onnx, max_batch_size {result.max_batch}, preferred "
                  f"{list(result.preferred_batch_sizes)}, max_queue_delay {result.max_queue_delay_us} µs")
    table.add_row("files", "config.pbtxt, 1/model.onnx, labels.txt, preprocess.json, deploy.json")
    Console().print(table)
    return 0
