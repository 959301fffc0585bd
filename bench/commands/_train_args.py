"""Training flags shared by ``bench train`` and ``bench search``.

Precedence: TrainConfig defaults < dataset preset (demo only) < ``--config`` YAML < flags
(resolved by :func:`bench.pipeline.presets.resolve_train_config`).
"""

from __future__ import annotations

import argparse

from harness.config import TrainConfig

from ._args import add_dataset_arguments

# flag dest → TrainConfig field (same name unless listed).
_FIELDS = [
    "dataset", "data_root", "train_list", "val_list", "test_list", "model", "pretrained", "lr", "l2_decay",
    "label_smoothing", "mixup", "mixup_alpha", "epochs", "batch_size", "image_size", "resize_short", "crop_scale_min",
    "warmup_epochs", "schedule", "momentum", "freeze", "max_steps_per_epoch", "val_fraction", "test_fraction", "seed",
    "device", "amp", "workers", "threads", "strict_data", "download", "out_dir", "run_name",
]

def add_train_arguments(parser: argparse.ArgumentParser, *, search: bool = False) -> None:
    """Add the TrainConfig flags (every default is None so that unset flags do not override YAML)."""
    g = parser.add_argument_group("data")
    g.add_argument("--config", help="YAML file of TrainConfig fields (flags override it)")
    add_dataset_arguments(g)
    g.add_argument("--train-list", help="PaddleClas list file for --dataset list")
    g.add_argument("--val-list", help="PaddleClas list file for --dataset list")
    g.add_argument("--test-list", help="PaddleClas list file for --dataset list")
    g.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                   help="download the official archives (flowers102, pets, dtd, aircraft, food101) if missing")
    g.add_argument("--val-fraction", type=float, help="share of train carved out as val when the dataset has none (0.1)")
    g.add_argument("--test-fraction", type=float,
                   help="share of each class carved out as test from flat class folders, --data-root/<class>/*.jpg (0.1)")
    g.add_argument("--strict-data", action=argparse.BooleanOptionalAction, default=None,
                   help="stop at the first unreadable image instead of skipping and reporting it")
    g.add_argument("--data-workers", dest="workers", type=int, help="data loading threads (2)")
    g = parser.add_argument_group("model")
    g.add_argument("--model", help="registered model name (ResNet50_vd)")
    g.add_argument("--pretrained", help="weights: local .pdparams path, URL, or a known name (imagenet, ssld)")
    g.add_argument("--freeze", type=int, help="freeze the stem and the first N-1 stages (0: train everything)")
    g = parser.add_argument_group("training")
    if not search:
        g.add_argument("--lr", type=float, help="peak learning rate (0.003)")
        g.add_argument("--l2-decay", type=float, help="L2 weight decay (1e-4)")
        g.add_argument("--label-smoothing", action=argparse.BooleanOptionalAction, default=None, help="label smoothing 0.1")
        g.add_argument("--mixup", action=argparse.BooleanOptionalAction, default=None, help="mixup")
    g.add_argument("--mixup-alpha", type=float, help="mixup Beta(alpha, alpha) (0.2)")
    g.add_argument("--epochs", type=int, help="epochs (10)")
    g.add_argument("--batch-size", type=int, help="batch size (32)")
    g.add_argument("--image-size", type=int, help="crop size in pixels (224)")
    g.add_argument("--resize-short", type=int, help="eval short-side resize (image-size / 0.875)")
    g.add_argument("--crop-scale-min", type=float, help="smallest area fraction of the random resized crop (0.08)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up epochs (0)")
    g.add_argument("--schedule", choices=["cosine", "step"], help="learning-rate schedule (cosine)")
    g.add_argument("--momentum", type=float, help="SGD momentum (0.9)")
    g.add_argument("--max-steps-per-epoch", type=int, help="cap steps per epoch (for smoke tests)")
    g.add_argument("--seed", type=int, help="random seed (0)")
    g = parser.add_argument_group("hardware")
    g.add_argument("--device", help="auto, cpu, gpu or gpu:N (auto)")
    g.add_argument("--amp", choices=["fp16", "bf16"], help="mixed precision on GPU")
    g.add_argument("--threads", type=int, help="CPU threads (all cores)")
    g = parser.add_argument_group("output")
    g.add_argument("--out-dir", help="parent folder of run directories (runs)")
    if not search:
        g.add_argument("--run-name", help="run directory name (<dataset>-<model>-<time>)")

def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Resolve defaults, dataset preset, ``--config`` YAML and flags into one validated TrainConfig."""
    from bench.pipeline.presets import resolve_train_config

    flags = {f: getattr(args, f) for f in _FIELDS if getattr(args, f, None) is not None}
    return resolve_train_config(getattr(args, "config", None), flags)
