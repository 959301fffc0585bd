"""``bench export``: turn a training run into a Paddle Inference model directory."""

from __future__ import annotations

import argparse
import contextlib
import json

from common.errors import ConfigError
from harness.quantize import ALGOS

NAME = "export"
HELP = "export a training run to exported_models/<run> (Paddle Inference + inference.yml + manifest)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench export``."""
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="training run directory (holds config.yaml, metrics.json, model.pdparams)")
    parser.add_argument("--out-dir", default=None, help="export directory (default: exported_models/<run name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export directory")
    parser.add_argument("--parity-backend", default=None, choices=("cpu", "cpu-plain", "gpu", "trt"),
                        help="predictor backend of the dygraph parity check (default: gpu if available, else cpu)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                        help="fp32 (default), or int8: calibrate on training images for oneDNN int8 on CPU "
                             "(writes exported_models/<run>-int8)")
    g = parser.add_argument_group("int8 (--precision int8)")
    g.add_argument("--calibration-images", type=int, default=None, metavar="N",
                   help="training images to calibrate on (default 64)")
    g.add_argument("--calibration-algo", default=None, choices=ALGOS,
                   help="activation-scale algorithm (default hist)")
    g.add_argument("--check-images", type=int, default=None, metavar="N",
                   help="validation images on which int8 is checked against float32 (default 128)")
    g.add_argument("--min-agreement", type=float, default=None,
                   help="smallest accepted fraction of check images keeping the float32 top-1 class (default 0.9)")
    parser.add_argument("--json", action="store_true", help="print the manifest summary as JSON")


@contextlib.contextmanager
def _flag_hint():
    """Name the flags that resolve an existing target (the harness speaks in parameters)."""
    from harness.artifact import TargetExistsError

    try:
        yield
    except TargetExistsError as exc:
        raise TargetExistsError(f"{exc} (on the command line: --overwrite, or another --out-dir)") from None


def run(args: argparse.Namespace) -> int:
    """Export (float32, or int8 after calibration), check it against dygraph, print where it went."""
    int8_flags = {"--calibration-images": args.calibration_images, "--calibration-algo": args.calibration_algo,
                  "--check-images": args.check_images, "--min-agreement": args.min_agreement}
    if args.precision == "int8":
        from harness import quantize

        if args.parity_backend not in (None, "cpu"):
            raise ConfigError(f"--precision int8 is checked on --parity-backend cpu (oneDNN int8), got {args.parity_backend!r}")
        with _flag_hint():
            exported = quantize.quantize_int8(
                args.run, args.out_dir, overwrite=args.overwrite,
                num_calibration=quantize.DEFAULT_CALIBRATION_IMAGES if args.calibration_images is None else args.calibration_images,
                num_check=quantize.DEFAULT_CHECK_IMAGES if args.check_images is None else args.check_images,
                algo=args.calibration_algo or quantize.DEFAULT_ALGO,
                min_agreement=quantize.DEFAULT_MIN_AGREEMENT if args.min_agreement is None else args.min_agreement,
            )
    else:
        given = [flag for flag, value in int8_flags.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --precision int8")
        from harness.export import export

        with _flag_hint():
            exported = export(args.run, args.out_dir, overwrite=args.overwrite, parity_backend=args.parity_backend)
    manifest = exported.manifest or {}
    parity = manifest.get("parity", {})
    summary = {
        "model_dir": str(exported.model_dir),
        "model_name": exported.model_name,
        "num_classes": exported.num_classes,
        "image_size": exported.preprocess.crop_size,
        "files": sorted(manifest.get("files", {})),
        "precision": manifest.get("precision", "fp32"),
        "parity": parity,
    }
    if "quantization" in manifest:
        summary["quantization"] = manifest["quantization"]
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    console.print(f"[green]exported[/green] {exported.model_name} ({exported.num_classes} classes, "
                  f"{exported.preprocess.crop_size} px) to [bold]{exported.model_dir}[/bold]")
    console.print(f"files: {', '.join(summary['files'])}")
    if args.precision == "int8":
        quant = manifest.get("quantization", {})
        accuracy = ""
        if parity.get("top1_fp32") is not None:
            accuracy = f"; top-1 on them float32 {parity['top1_fp32']:.3f} vs int8 {parity['top1_int8']:.3f}"
        console.print(
            f"int8 ({quant.get('algo')}, {quant.get('calibration_images')} calibration images, "
            f"{quant.get('calibration_seconds')} s): keeps the float32 top-1 class on {parity.get('argmax_agree')}/"
            f"{parity.get('num_inputs')} check images (min {parity.get('min_agreement', 0):.0%}){accuracy}"
        )
        console.print(f"run it with: bench eval --model {exported.model_dir} --backend cpu --precision int8 ...")
        return 0
    console.print(
        f"parity vs dygraph on {parity.get('backend')}: max |logit diff| {parity.get('max_abs_diff', float('nan')):.3g} "
        f"(tolerance {parity.get('tolerance', float('nan')):.3g}), argmax {parity.get('argmax_agree')}/{parity.get('num_inputs')}"
    )
    return 0
