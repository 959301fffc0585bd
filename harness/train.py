"""Fine-tuning: ``fine_tune(TrainConfig) -> TrainResult``.

Momentum SGD with L2 decay, cosine (or step) schedule with linear warm-up,
label smoothing and mixup as soft targets, optional AMP on GPU, evaluation on
val after every epoch with the deploy preprocessing. A run directory receives
``config.yaml`` at the start, ``metrics.json`` after every epoch and the
checkpoint at the end.

Continuation (a multi-fidelity search pauses and continues trials): with ``keep_state=True``
the training state is saved after every epoch (:mod:`harness.train_state`) and a run whose
directory holds one continues from it; ``stop_after_epochs`` ends the run early. The schedule
is always defined over ``cfg.epochs``, so a run stopped after k epochs is exactly the first k
epochs of the full run, and continuing it ends with the same weights. Without these options
nothing is saved or restored and training computes what it always did.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from .runtime import prepare_environment

prepare_environment()

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

from . import runtime  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .data import DataLoader, DatasetSplits, EvalTransform, TrainTransform, load_dataset, mixup_batch  # noqa: E402
from .data.image_cache import shared_cache  # noqa: E402
from common.errors import ConfigError, DivergenceError, TlbenchError  # noqa: E402
from .metrics import classification_metrics  # noqa: E402
from .models import create_model, freeze_stages  # noqa: E402
from .prefix import FrozenPrefix, frozen_prefix, val_features  # noqa: E402
from .results import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, TrainResult  # noqa: E402
from .train_state import TrainStateError, latest_state_epoch, load_train_state, save_train_state  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class StepInfo:
    """What a progress callback receives after every optimisation step."""

    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    lr: float
    images_per_s: float


@dataclass
class EpochInfo:
    """What a progress callback receives after every epoch."""

    epoch: int
    epochs: int
    record: dict[str, Any]


def default_run_name(cfg: TrainConfig) -> str:
    """``<dataset>-<model>-<UTC timestamp>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{cfg.dataset}-{cfg.model}-{stamp}"


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """Create the run directory; refuses one that already holds a finished run."""
    run_dir = run_dir_of(cfg)
    if (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(f"run directory {run_dir} already holds a trained model; pick another run_name or out_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_dir_of(cfg: TrainConfig) -> Path:
    """The run directory ``cfg`` trains into (``out_dir/run_name``, or a timestamped name)."""
    return Path(cfg.out_dir) / (cfg.run_name or default_run_name(cfg))


def _state_identity(cfg: TrainConfig) -> dict[str, Any]:
    """What a saved training state must have been trained with to be continued (the resolved config)."""
    data = json.loads(json.dumps(cfg.to_dict(), default=str))
    for key in ("out_dir", "run_name", "threads", "workers"):  # where and how fast, not what is computed
        data.pop(key, None)
    return data


def load_splits(cfg: TrainConfig) -> DatasetSplits:
    """Load the dataset named by ``cfg`` with its train/val/test splits."""
    return load_dataset(
        cfg.dataset,
        cfg.data_root,
        train_list=cfg.train_list,
        val_list=cfg.val_list,
        test_list=cfg.test_list,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
        strict=cfg.strict_data,
        download=cfg.download,
    )


def build_lr_schedule(cfg: TrainConfig, steps_per_epoch: int) -> paddle.optimizer.lr.LRScheduler:
    """Per-step schedule: cosine to zero (or ×0.1 steps at 30/60/90 %), after linear warm-up."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    decay_steps = max(1, total - warmup)
    if cfg.schedule == "cosine":
        schedule = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=cfg.lr, T_max=decay_steps)
    else:
        boundaries = sorted({max(1, int(decay_steps * f)) for f in (0.3, 0.6, 0.9)})
        values = [cfg.lr * (0.1**i) for i in range(len(boundaries) + 1)]
        schedule = paddle.optimizer.lr.PiecewiseDecay(boundaries=boundaries, values=values)
    if warmup > 0:
        schedule = paddle.optimizer.lr.LinearWarmup(
            learning_rate=schedule, warmup_steps=warmup, start_lr=0.0, end_lr=cfg.lr
        )
    return schedule


def soft_targets(labels: np.ndarray, num_classes: int, epsilon: float) -> np.ndarray:
    """One-hot targets with label smoothing ``epsilon`` spread uniformly over all classes."""
    targets = np.full((len(labels), num_classes), epsilon / num_classes, dtype=np.float32)
    targets[np.arange(len(labels)), labels] += 1.0 - epsilon
    return targets


def soft_cross_entropy(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """Mean over the batch of ``-sum(targets * log_softmax(logits))``."""
    log_probs = F.log_softmax(logits.astype("float32"), axis=-1)
    return -(targets * log_probs).sum(axis=-1).mean()


def predict_logits(model: paddle.nn.Layer, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every sample that ``loader`` yields, in eval mode."""
    model.eval()
    all_logits, all_labels = [], []
    with paddle.no_grad():
        for images, labels in loader:
            logits = model(paddle.to_tensor(images))
            all_logits.append(logits.astype("float32").numpy())
            all_labels.append(labels)
    if not all_logits:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(all_logits), np.concatenate(all_labels)


def predict_suffix_logits(model: paddle.nn.Layer, features: np.ndarray, n: int, batch_size: int) -> np.ndarray:
    """Logits of ``model.forward_suffix`` over precomputed prefix ``features``, in eval mode."""
    model.eval()
    chunks = []
    with paddle.no_grad():
        for start in range(0, len(features), batch_size):
            logits = model.forward_suffix(paddle.to_tensor(features[start : start + batch_size]), n)
            chunks.append(logits.astype("float32").numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def _check_finite(loss_value: float, epoch: int, step: int, lr: float) -> None:
    if not math.isfinite(loss_value):
        raise DivergenceError(
            f"training diverged: loss is {loss_value} at epoch {epoch + 1}, step {step + 1} (lr {lr:g})"
        )


def fine_tune(
    cfg: TrainConfig,
    *,
    on_step: Optional[Callable[[StepInfo], None]] = None,
    on_epoch: Optional[Callable[[EpochInfo], None]] = None,
    splits: Optional[DatasetSplits] = None,
    stop_after_epochs: Optional[int] = None,
    keep_state: bool = False,
) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.dataset``'s train split, evaluating on val after each epoch.

    ``splits`` may be passed to reuse an already loaded dataset (a search does).
    ``keep_state``: save the training state after every epoch and continue from the newest one
    the run directory holds (see the module docstring). ``stop_after_epochs``: stop after that
    many epochs (1..``cfg.epochs``); the schedule still runs over ``cfg.epochs``. A run stopped
    before ``cfg.epochs`` writes no ``model.pdparams`` (its result's ``checkpoint`` is empty).
    Raises DivergenceError as soon as the loss is NaN or infinite.
    """
    if stop_after_epochs is not None and (isinstance(stop_after_epochs, bool) or not isinstance(stop_after_epochs, int)
                                          or not 1 <= stop_after_epochs <= cfg.epochs):
        raise ConfigError(f"stop_after_epochs must be an integer in [1, epochs={cfg.epochs}], got {stop_after_epochs!r}")
    last_epoch = cfg.epochs if stop_after_epochs is None else stop_after_epochs
    runtime.set_paddle_threads(cfg.threads)
    device = runtime.select_device(cfg.device)
    if cfg.amp and not device.startswith("gpu"):
        raise ConfigError(f"amp={cfg.amp!r} needs a GPU; this run is on {device}")
    paddle.seed(cfg.seed)
    np.random.seed(cfg.seed)

    splits = splits or load_splits(cfg)
    if not splits.train:
        raise TlbenchError(f"dataset {splits.name!r} has no training images")
    if not splits.val:
        raise TlbenchError(f"dataset {splits.name!r} has no validation images")
    num_classes = len(splits.classes)
    # The model (and its weights) first: a bad name or weights file leaves no run directory.
    model = create_model(cfg.model, num_classes, pretrained=cfg.pretrained)
    if cfg.freeze:
        freeze_stages(model, cfg.freeze)
    resume_epoch = latest_state_epoch(run_dir_of(cfg)) if keep_state else None
    run_dir = prepare_run_dir(cfg)
    cfg.write_yaml(run_dir / CONFIG_NAME)
    log.info("run directory %s (%d train / %d val images, %d classes, device %s)",
             run_dir, len(splits.train), len(splits.val), num_classes, device)

    spec = cfg.preprocess
    cache = shared_cache()
    train_loader = DataLoader(
        splits.train, TrainTransform(spec), batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
        workers=cfg.workers, drop_last=len(splits.train) > cfg.batch_size, report=splits.report,
        strict=cfg.strict_data, cache=cache, split="train",
    )
    val_loader = DataLoader(
        splits.val, EvalTransform(spec), batch_size=cfg.batch_size, shuffle=False, seed=cfg.seed,
        workers=cfg.workers, report=splits.report, strict=cfg.strict_data, cache=cache, split="val",
    )
    # The frozen prefix runs as inference (harness.prefix); the model trains from its output.
    prefix: Optional[FrozenPrefix] = None
    if cfg.freeze and device == "cpu" and runtime.fast_trials_enabled():
        prefix = frozen_prefix(model, cfg.freeze, cfg.image_size, threads=cfg.threads)
    steps_per_epoch = len(train_loader)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)

    schedule = build_lr_schedule(cfg, steps_per_epoch)
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    optimizer = paddle.optimizer.Momentum(
        learning_rate=schedule,
        momentum=cfg.momentum,
        parameters=trainable,
        weight_decay=paddle.regularizer.L2Decay(cfg.l2_decay) if cfg.l2_decay > 0 else None,
    )
    scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if cfg.amp == "fp16" else None
    epsilon = cfg.label_smoothing_epsilon if cfg.label_smoothing else 0.0
    rng = np.random.default_rng(cfg.seed + 7919)

    history: list[dict[str, Any]] = []
    val_metrics: dict[str, float] = {}
    first_epoch = 0
    if resume_epoch is not None:
        if resume_epoch > last_epoch:
            raise TrainStateError(f"{run_dir} holds a training state after epoch {resume_epoch}, beyond the "
                                  f"{last_epoch} epoch(s) this run should stop after")
        history = load_train_state(run_dir, resume_epoch, identity=_state_identity(cfg), model=model,
                                   optimizer=optimizer, schedule=schedule, mixup_rng=rng, scaler=scaler)
        first_epoch = resume_epoch
        val_metrics = {k[len("val_"):]: v for k, v in history[-1].items() if k.startswith("val_") and k != "val_seconds"}
    for epoch in range(first_epoch, last_epoch):
        model.train()
        if cfg.freeze:
            freeze_stages(model, cfg.freeze)  # keeps frozen BatchNorm layers in eval mode
        train_loader.set_epoch(epoch)
        start = time.perf_counter()
        seen, loss_sum, lr = 0, 0.0, optimizer.get_lr()
        for step, (images, labels) in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            lr = optimizer.get_lr()
            targets = soft_targets(labels, num_classes, epsilon)
            if cfg.mixup:
                images, idx_a, idx_b, lam = mixup_batch(images, np.arange(len(labels)), cfg.mixup_alpha, rng)
                targets = lam * targets[idx_a] + (1.0 - lam) * targets[idx_b]
            t = paddle.to_tensor(targets.astype(np.float32))
            if prefix is not None:
                loss = soft_cross_entropy(model.forward_suffix(paddle.to_tensor(prefix(images)), cfg.freeze), t)
            elif cfg.amp:
                with paddle.amp.auto_cast(level="O1", dtype="float16" if cfg.amp == "fp16" else "bfloat16"):
                    loss = soft_cross_entropy(model(paddle.to_tensor(images)), t)
            else:
                loss = soft_cross_entropy(model(paddle.to_tensor(images)), t)
            loss_value = float(loss.item())
            _check_finite(loss_value, epoch, step, lr)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.minimize(optimizer, loss)
            else:
                loss.backward()
                optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            seen += len(labels)
            loss_sum += loss_value * len(labels)
            if on_step is not None:
                on_step(StepInfo(epoch, step, steps_per_epoch, loss_value, lr, seen / (time.perf_counter() - start)))
        train_seconds = time.perf_counter() - start
        eval_start = time.perf_counter()
        if prefix is not None:
            # Val images are not augmented: their prefix features are computed once per process.
            identity = (tuple((str(sample.path), sample.label) for sample in splits.val), spec)
            features, labels = val_features(prefix, val_loader, identity)
            logits = predict_suffix_logits(model, features, cfg.freeze, max(cfg.batch_size, 64))
        else:
            logits, labels = predict_logits(model, val_loader)
        if len(labels) and not np.isfinite(logits).all():
            # The loss can stay finite while the weights blow up (batch statistics hide it in
            # training mode); val logits in eval mode show it. Without this check the run would
            # "finish" and fail later as an export parity error.
            raise DivergenceError(
                f"training diverged: validation logits are not finite after epoch {epoch + 1} "
                f"(lr {cfg.lr:g}, last step's rate {lr:g})"
            )
        val_metrics = classification_metrics(logits, labels, num_classes) if len(labels) else {}
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, seen),
            "lr": float(lr),  # the rate of the epoch's last step
            "train_images_per_s": seen / train_seconds if train_seconds > 0 else 0.0,
            "train_seconds": train_seconds,
            "val_seconds": time.perf_counter() - eval_start,
            **{f"val_{k}": v for k, v in val_metrics.items()},
        }
        history.append(record)
        _write_metrics(run_dir, cfg, splits, history, val_metrics, finished=False)
        if keep_state:
            save_train_state(run_dir, epoch=epoch + 1, identity=_state_identity(cfg), model=model, optimizer=optimizer,
                             schedule=schedule, mixup_rng=rng, history=history, scaler=scaler)
        if on_epoch is not None:
            on_epoch(EpochInfo(epoch, cfg.epochs, record))
        log.info(
            "epoch %d/%d: loss %.4f, val top1 %.4f top5 %.4f mean/class %.4f, %.1f img/s",
            epoch + 1, cfg.epochs, record["train_loss"], val_metrics.get("top1", float("nan")),
            val_metrics.get("top5", float("nan")), val_metrics.get("mean_per_class", float("nan")),
            record["train_images_per_s"],
        )

    if last_epoch < cfg.epochs:
        # Paused: the state file holds the weights; metrics.json says the run is not finished.
        return TrainResult(config=cfg, run_dir=str(run_dir), checkpoint="", classes=tuple(splits.classes),
                           history=tuple(history), val_metrics=val_metrics, metric=splits.metric,
                           data_report=splits.report.to_dict())
    checkpoint = run_dir / CHECKPOINT_NAME
    tmp = checkpoint.with_suffix(".tmp")
    paddle.save(model.state_dict(), str(tmp))
    tmp.replace(checkpoint)
    _write_metrics(run_dir, cfg, splits, history, val_metrics, finished=True)
    splits.report.write(run_dir / "data_report.json")
    return TrainResult(
        config=cfg,
        run_dir=str(run_dir),
        checkpoint=str(checkpoint),
        classes=tuple(splits.classes),
        history=tuple(history),
        val_metrics=val_metrics,
        metric=splits.metric,
        data_report=splits.report.to_dict(),
    )


def _write_metrics(run_dir: Path, cfg: TrainConfig, splits: DatasetSplits, history, val_metrics, *, finished: bool) -> None:
    payload = {
        "finished": finished,
        "model": cfg.model,
        "dataset": splits.name,
        "metric": splits.metric,
        "classes": list(splits.classes),
        "num_images": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "history": history,
        "val": val_metrics,
        "data_report": splits.report.to_dict(),
        "paddle_version": paddle.__version__,
    }
    tmp = run_dir / (METRICS_NAME + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(run_dir / METRICS_NAME)
