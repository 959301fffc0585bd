"""Post-training int8 quantization of a training run, for Paddle Inference on CPU (oneDNN).

Paddle 3.x inference calibrates int8 only through TensorRT; for oneDNN it runs programs
whose quantization scales are already in the graph, and a PIR program quantized with
``paddle.quantization.PTQ`` fails in ``create_predictor`` (paddlepaddle 3.3.1). The legacy
static-graph route works, so :func:`quantize_int8`

1. loads the run's checkpoint and exports it as a legacy program (``inference.pdmodel``,
   written under ``paddle.pir_utils.OldIrGuard``);
2. calibrates it with ``paddle.static.quantization.PostTrainingQuantization`` on a few
   training images, preprocessed exactly as at deployment (the export's
   :class:`~harness.preprocess_spec.PreprocessSpec` through :mod:`kernels`), which stores
   per-channel weight scales and per-tensor activation scales as fake-quantize ops;
3. writes an export directory like :func:`harness.export.export` (``inference.yml``,
   ``label_list.txt``, ``manifest.json`` with ``"precision": "int8"`` and the calibration
   settings), which :class:`harness.predictor.Predictor` runs with ``--backend cpu
   --precision int8`` (``Config.enable_mkldnn_int8``: oneDNN int8 kernels with VNNI/AMX);
4. checks it: the int8 predictor against the float32 dygraph model on held-out images
   (validation split by default). Agreement of the top-1 class below ``min_agreement`` is
   an :class:`~common.errors.ExportError` and nothing is left at ``out_dir``; the
   agreement, the largest logit difference and, with labels, both top-1 accuracies go into
   the manifest.

Calibration algorithm ``hist`` (activation ranges at the 99.999th percentile of a
histogram of absolute values) is the default. Measured here on flowers12 test photos (240),
64 calibration images, fine-tuned runs:

==================================== ======= ============ ============ ============ ============
run                                  float32 int8 ``hist`` int8 ``avg`` int8 ``mse`` ``abs_max``
==================================== ======= ============ ============ ============ ============
ResNet18_vd, 64 px, 10 epochs        77.9 %  77.5 %       75.0 %       78.3 %       77.1 %
EfficientNet-Lite0 (ImageNet), 128   90.4 %  90.8 %       90.8 %       --           90.0 %
==================================== ======= ============ ============ ============ ============

``hist`` kept the float32 top-1 class on 100 % / 98.6 % of the validation images and
calibrated in 2 / 7 s; ``mse`` took 3× longer and was worse with 256 images; ``KL`` took
166 s on Lite0 and kept only 62 % of its ImageNet top-1 classes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from common.errors import ConfigError, ExportError, ImageDecodeError
from common.validate import positive_int
from .artifact import (
    INPUT_NAME,
    LEGACY_MODEL_FILE,
    MODEL_PREFIX,
    PARAMS_FILE,
    ExportedModel,
    build_manifest,
    check_target,
    publish,
    write_side_files,
)
from .export import DEFAULT_EXPORT_ROOT, load_trained_model, resolve_run
from .preprocess_spec import PreprocessSpec
from .results import TrainResult

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

ALGOS = ("avg", "abs_max", "hist", "mse", "KL")
DEFAULT_ALGO = "hist"
DEFAULT_CALIBRATION_IMAGES = 64
DEFAULT_CHECK_IMAGES = 128
DEFAULT_MIN_AGREEMENT = 0.9
CALIBRATION_SEED = 0
# Weights of these ops get per-output-channel int8 scales; their inputs per-tensor scales.
QUANTIZABLE_OPS = ("conv2d", "depthwise_conv2d", "mul", "matmul", "matmul_v2")


@dataclass(frozen=True)
class Int8Check:
    """The int8 predictor against the float32 dygraph model on the same held-out images."""

    input_kind: str
    num_inputs: int
    argmax_agree: int
    min_agreement: float
    max_abs_diff: float
    max_abs_logit: float
    top1_fp32: Optional[float]
    top1_int8: Optional[float]

    @property
    def agreement(self) -> float:
        """Fraction of inputs on which both give the same top-1 class."""
        return self.argmax_agree / self.num_inputs if self.num_inputs else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for the manifest's ``parity`` entry."""
        return {
            "backend": "cpu",
            "precision": "int8",
            "input_kind": self.input_kind,
            "num_inputs": self.num_inputs,
            "argmax_agree": self.argmax_agree,
            "agreement": self.agreement,
            "min_agreement": self.min_agreement,
            "max_abs_diff": self.max_abs_diff,
            "max_abs_logit": self.max_abs_logit,
            "top1_fp32": self.top1_fp32,
            "top1_int8": self.top1_int8,
        }


def default_int8_dir(result: TrainResult, root: PathLike = DEFAULT_EXPORT_ROOT) -> Path:
    """``exported_models/<run-name>-int8``."""
    return Path(root) / f"{Path(result.run_dir).name}-int8"


def dataset_images(
    result: TrainResult, split: str, count: int, *, seed: int = CALIBRATION_SEED, splits: Any = None
) -> tuple[list[np.ndarray], list[int]]:
    """Up to ``count`` decoded RGB images of ``split`` of the run's dataset, with their labels.

    The split is loaded with the run's own settings (so a carved validation split is the
    one training held out) unless ``splits`` (its :class:`~harness.data.DatasetSplits`)
    is given, and sampled with ``seed``, so every class tends to be present. Unreadable
    images are skipped, counted and logged.
    """
    from .data import read_image_rgb

    if splits is None:
        from .train import load_splits

        splits = load_splits(result.config)
    samples = list(splits.split(split))
    if not samples:
        raise ConfigError(f"split {split!r} of dataset {result.config.dataset!r} is empty; cannot take int8 images from it")
    order = np.random.default_rng(seed).permutation(len(samples))
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped = 0
    for index in order:
        sample = samples[int(index)]
        try:
            images.append(read_image_rgb(sample.path))
        except ImageDecodeError as exc:
            skipped += 1
            log.warning("int8: skipping %s (%s)", sample.path, exc)
            continue
        labels.append(int(sample.label))
        if len(images) >= count:
            break
    if skipped:
        log.warning("int8: %d unreadable image(s) skipped in split %r", skipped, split)
    if not images:
        raise ConfigError(f"no readable image in split {split!r} of dataset {result.config.dataset!r}")
    return images, labels


def _preprocess(spec: PreprocessSpec, images: Sequence[np.ndarray], what: str) -> np.ndarray:
    import kernels

    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1] == 3 and images.dtype == np.float32:
        if images.shape[2:] != (spec.crop_size, spec.crop_size):
            raise ConfigError(f"{what} must be [N, 3, {spec.crop_size}, {spec.crop_size}], got {list(images.shape)}")
        return np.ascontiguousarray(images)
    images = list(images)
    if not images:
        raise ConfigError(f"{what} is empty; pass a few RGB uint8 images (e.g. {DEFAULT_CALIBRATION_IMAGES} training images)")
    return kernels.preprocess(
        images, resize_short=spec.resize_short, crop_size=spec.crop_size, mean=spec.mean, std=spec.std, scale=spec.scale
    )


@contextlib.contextmanager
def _legacy_static_graph():
    """Legacy (non-PIR) static-graph mode for the duration of the block, restored after."""
    import paddle

    try:
        from paddle.pir_utils import OldIrGuard
    except ImportError:  # Paddle 2.x: the legacy IR is the only one
        guard: Any = contextlib.nullcontext()
    else:
        guard = OldIrGuard()
    with guard:
        yield paddle


def _feed_batches(paddle: Any, batches: list[np.ndarray]) -> Any:
    """The calibration batches as the ``data_loader`` PostTrainingQuantization reads.

    The quantizer only calls ``data_loader()`` for an iterable of feed dicts and ``len()``;
    Paddle 2.6 also insists on an ``io.DataLoader`` instance, whose own constructor wants a
    dataset and places for no gain here, hence a subclass that skips it.
    """

    class FeedBatches(paddle.io.DataLoader):
        def __init__(self) -> None:  # noqa: D107 - deliberately not DataLoader.__init__
            self.batches = batches

        def __call__(self):
            return ({INPUT_NAME: batch} for batch in self.batches)

        def __iter__(self):
            return self()

        def __len__(self) -> int:
            return len(self.batches)

    return FeedBatches()


def _calibrate(model: Any, spec: PreprocessSpec, calibration: np.ndarray, staging: Path, *, algo: str, batch_size: int) -> None:
    """Export ``model`` as a legacy program and write its calibrated int8 version into ``staging``."""
    from paddle.static import InputSpec

    float_dir = staging / "_float"
    input_spec = [InputSpec([None, 3, spec.crop_size, spec.crop_size], "float32", name=INPUT_NAME)]
    batches = [calibration[i : i + batch_size] for i in range(0, len(calibration), batch_size)]
    with _legacy_static_graph() as paddle:
        try:
            paddle.jit.save(model, str(float_dir / MODEL_PREFIX), input_spec=input_spec)
        except Exception as exc:
            raise ExportError(f"legacy-program export (for int8) failed: {exc}") from exc
        if not (float_dir / LEGACY_MODEL_FILE).is_file():
            raise ExportError(
                f"paddle.jit.save wrote {sorted(p.name for p in float_dir.iterdir())} under the legacy IR; "
                f"int8 calibration needs {LEGACY_MODEL_FILE}"
            )
        from paddle.static.quantization import PostTrainingQuantization

        # The quantizer and the legacy model loader log every step (and a deprecation notice
        # about the loading call the quantizer makes); keep their errors only.
        quiet = [logging.getLogger(name)
                 for name in ("paddle.static.quantization.post_training_quantization", "paddle.static.io")]
        levels = [logger.level for logger in quiet]
        paddle.enable_static()
        # The quantizer draws progress bars on stderr; they are shown only if it fails.
        noise = io.StringIO()
        try:
            for logger in quiet:
                logger.setLevel(logging.ERROR)
            # A scope of its own (the loader fills the current one), so nothing leaks into global_scope().
            scope = paddle.static.Scope()
            with contextlib.redirect_stderr(noise), contextlib.redirect_stdout(noise), paddle.static.scope_guard(scope):
                ptq = PostTrainingQuantization(
                    executor=paddle.static.Executor(paddle.CPUPlace()),
                    scope=scope,
                    model_dir=str(float_dir),
                    model_filename=LEGACY_MODEL_FILE,
                    params_filename=PARAMS_FILE,
                    data_loader=_feed_batches(paddle, batches),
                    batch_size=batch_size,
                    batch_nums=len(batches),
                    algo=algo,
                    quantizable_op_type=list(QUANTIZABLE_OPS),
                    weight_quantize_type="channel_wise_abs_max",
                    onnx_format=False,
                )
                ptq.quantize()
                ptq.save_quantized_model(str(staging), model_filename=LEGACY_MODEL_FILE, params_filename=PARAMS_FILE)
        except Exception as exc:
            tail = noise.getvalue().strip().splitlines()[-3:]
            raise ExportError(f"int8 calibration ({algo}) failed: {exc}" + (f" [{' | '.join(tail)}]" if tail else "")) from exc
        finally:
            paddle.disable_static()
            for logger, level in zip(quiet, levels):
                logger.setLevel(level)
    shutil.rmtree(float_dir, ignore_errors=True)
    for extra in staging.iterdir():
        # The quantizer may leave side files (e.g. .pdiparams.info) that inference does not need.
        if extra.name in (LEGACY_MODEL_FILE, PARAMS_FILE):
            continue
        if extra.is_dir():
            shutil.rmtree(extra, ignore_errors=True)
        else:
            extra.unlink()


def quantize_int8(
    source: Union[TrainResult, PathLike],
    out_dir: Optional[PathLike] = None,
    *,
    calibration_images: Optional[Sequence[np.ndarray]] = None,
    num_calibration: int = DEFAULT_CALIBRATION_IMAGES,
    check_images: Optional[Sequence[np.ndarray]] = None,
    check_labels: Optional[Sequence[int]] = None,
    num_check: int = DEFAULT_CHECK_IMAGES,
    algo: str = DEFAULT_ALGO,
    batch_size: int = 16,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    threads: Optional[int] = None,
    overwrite: bool = False,
    topk: int = 5,
    splits: Any = None,
) -> ExportedModel:
    """Quantize a training run to int8 for oneDNN and write it as an export directory.

    Args:
        source: a :class:`TrainResult` or its run directory (or checkpoint file).
        out_dir: target directory; default ``exported_models/<run-name>-int8``.
        calibration_images: RGB uint8 images (or a preprocessed ``[N, 3, H, W]`` float32
            batch) to calibrate on; default ``num_calibration`` images of the run's train split.
        check_images, check_labels: held-out images for the int8-vs-float32 check (labels
            optional, they add top-1 accuracies to the report); default ``num_check`` images
            of the run's validation split.
        algo: activation-scale algorithm of ``PostTrainingQuantization`` (one of ``ALGOS``).
        batch_size: calibration batch size.
        min_agreement: smallest accepted fraction of check images whose top-1 class is the
            float32 model's.
        threads: CPU threads of the check predictor (default: all cores).
        overwrite: replace an existing non-empty ``out_dir``.
        topk: ``PostProcess.Topk.topk`` of ``inference.yml``.
        splits: the run's already loaded :class:`~harness.data.DatasetSplits`, to take the
            default images from without loading the dataset again.

    Raises:
        ConfigError: bad arguments, or no images to calibrate or check on.
        ExportError: the target exists (without ``overwrite``), calibration fails, or the
            int8 model agrees with float32 on fewer than ``min_agreement`` of the check images.
        BackendUnavailableError: this Paddle or CPU cannot run oneDNN int8.
    """
    result = resolve_run(source)
    if algo not in ALGOS:
        raise ConfigError(f"algo must be one of {', '.join(ALGOS)}, got {algo!r}")
    for name, value in (("num_calibration", num_calibration), ("num_check", num_check), ("batch_size", batch_size), ("topk", topk)):
        positive_int(value, name)
    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError(f"min_agreement must be in [0, 1], got {min_agreement!r}")
    out = check_target(Path(out_dir) if out_dir is not None else default_int8_dir(result), overwrite)

    from .predictor import Predictor, PredictorOptions, check_backend

    check_backend("cpu", "int8")
    spec = result.preprocess
    if calibration_images is None:
        calibration_images, _ = dataset_images(result, "train", num_calibration, splits=splits)
    calibration = _preprocess(spec, calibration_images, "calibration_images")
    if check_images is None:
        check_images, check_labels = dataset_images(result, "val", num_check, seed=CALIBRATION_SEED + 1, splits=splits)
    check = _preprocess(spec, check_images, "check_images")
    if check_labels is not None and len(check_labels) != len(check):
        raise ConfigError(f"check_labels has {len(check_labels)} entries for {len(check)} check images")

    import paddle

    model = load_trained_model(result)
    with paddle.no_grad():
        reference = model(paddle.to_tensor(check)).numpy().astype(np.float32)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.int8-", dir=out.parent))
    try:
        start = time.perf_counter()
        _calibrate(model, spec, calibration, staging, algo=algo, batch_size=batch_size)
        seconds = time.perf_counter() - start
        write_side_files(staging, result, topk)
        staged = ExportedModel(
            model_dir=staging, model_file=staging / LEGACY_MODEL_FILE, params_file=staging / PARAMS_FILE,
            preprocess=spec, classes=tuple(result.classes), model_name=result.config.model,
        )
        predictor = Predictor(staged, PredictorOptions(backend="cpu", precision="int8", batch_size=batch_size, threads=threads))
        candidate = predictor.predict(check)
        del predictor
        labels = None if check_labels is None else np.asarray(list(check_labels))
        report = Int8Check(
            input_kind="images" if not isinstance(check_images, np.ndarray) or check_images.dtype != np.float32 else "tensor",
            num_inputs=len(check),
            argmax_agree=int(np.sum(reference.argmax(1) == candidate.argmax(1))),
            min_agreement=float(min_agreement),
            max_abs_diff=float(np.abs(reference - candidate).max()),
            max_abs_logit=float(np.abs(reference).max()),
            top1_fp32=None if labels is None else float(np.mean(reference.argmax(1) == labels)),
            top1_int8=None if labels is None else float(np.mean(candidate.argmax(1) == labels)),
        )
        log.info("int8 check on %d images: top-1 class kept on %d (%.1f %%), max |logit diff| %.3g",
                 report.num_inputs, report.argmax_agree, 100 * report.agreement, report.max_abs_diff)
        if report.agreement < min_agreement:
            raise ExportError(
                f"int8 {result.config.model} keeps the float32 top-1 class on only {report.argmax_agree}/{report.num_inputs} "
                f"check images ({report.agreement:.1%} < min_agreement {min_agreement:.1%}); try more calibration images "
                f"or another algo ({', '.join(ALGOS)}), or serve float32/bf16"
            )
        manifest = build_manifest(result, spec, LEGACY_MODEL_FILE, report.to_dict(), precision="int8")
        manifest["quantization"] = {
            "method": "post-training (paddle.static.quantization.PostTrainingQuantization)",
            "algo": algo,
            "weights": "per-channel abs-max, int8",
            "activations": "per-tensor, int8",
            "quantized_ops": list(QUANTIZABLE_OPS),
            "calibration_images": int(len(calibration)),
            "calibration_batch_size": batch_size,
            "calibration_seconds": round(seconds, 2),
            "runs_on": "--backend cpu --precision int8 (oneDNN)",
        }
        publish(staging, out, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("int8 export of %s written to %s", result.config.model, out)
    return ExportedModel.load(out)
