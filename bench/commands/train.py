"""``bench train``: fine-tune one configuration and write its run directory."""

from __future__ import annotations

import argparse
import json

from ._train_args import add_train_arguments, train_config_from_args

NAME = "train"
HELP = "fine-tune a model on a dataset (one configuration)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    cfg = train_config_from_args(args)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.train import fine_tune, load_splits

    console = Console(stderr=True)
    # The dataset is listed and every file checked before anything is drawn, so a data error
    # is one line, not a line under an empty progress bar.
    splits = load_splits(cfg)
    with Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[ips]:.1f} img/s"),
        TimeElapsedColumn(), console=console, transient=False, disable=args.json,
    ) as progress:
        tasks: list = []  # the bar appears with the first training step (the model is built and loaded by then)

        def on_step(info) -> None:
            if not tasks:
                tasks.append(progress.add_task("train", total=info.steps_per_epoch, epoch="-", loss=info.loss,
                                               lr=info.lr, ips=0.0))
            progress.update(tasks[0], total=info.steps_per_epoch, completed=info.step + 1,
                            epoch=f"{info.epoch + 1}/{cfg.epochs}", loss=info.loss, lr=info.lr, ips=info.images_per_s)

        result = fine_tune(cfg, on_step=on_step, splits=splits)  # per-epoch metrics are logged by fine_tune
    summary = {"run_dir": result.run_dir, "checkpoint": result.checkpoint, "metric": result.metric,
               "val": result.val_metrics, "skipped_images": len(result.data_report.get("skipped", []))}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(f"[green]done[/green]: {result.run_dir}  val {result.metric} "
                      f"{result.val_metrics.get(result.metric, float('nan')):.4f}")
        if summary["skipped_images"]:
            console.print(f"[yellow]{summary['skipped_images']} unreadable image(s) skipped: see {result.run_dir}/data_report.json")
    return 0
