"""Export a fine-tuned checkpoint to a Paddle Inference model directory.

:func:`export` loads a training run's checkpoint, writes the static graph with
``paddle.jit.save`` beside ``inference.yml``, ``label_list.txt`` and ``manifest.json``
(the layout is described in :mod:`harness.artifact`), and checks the Paddle Inference
predictor against the dygraph model. It writes into a temporary sibling directory and
renames it into place only after the parity check passed, so a failed export leaves
nothing half-written. :class:`~harness.artifact.ExportedModel` reads an export back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from common.errors import ConfigError, DivergenceError, ExportError, TlbenchError
from common.validate import positive_int
from .artifact import (
    INPUT_NAME,
    LEGACY_MODEL_FILE,
    MODEL_PREFIX,
    PARAMS_FILE,
    PIR_MODEL_FILE,
    ExportedModel,
    build_manifest,
    check_target,
    find_model_file,
    publish,
    write_side_files,
)
from .parity import DEFAULT_PARITY_ATOL, DEFAULT_PARITY_RTOL, GPU_PARITY_RTOL, ParityReport, compare_logits
from .preprocess_spec import PreprocessSpec
from .results import TrainResult

log = logging.getLogger(__name__)

DEFAULT_EXPORT_ROOT = "exported_models"
PARITY_RANDOM_BATCH = 4
PARITY_SEED = 20240601

PathLike = Union[str, "os.PathLike[str]"]


def resolve_run(source: Union[TrainResult, PathLike]) -> TrainResult:
    """The :class:`TrainResult` of ``source``: itself, or read from a run directory (or a checkpoint file in one).

    Raises:
        ConfigError: ``source`` is neither, or the directory does not exist.
        ExportError: the run directory's ``metrics.json`` is malformed.
    """
    if isinstance(source, TrainResult):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"export source must be a TrainResult or a run directory path, got {type(source).__name__}")
    path = Path(source)
    if path.is_file():
        # A checkpoint file inside its run directory.
        path = path.parent
    if not path.is_dir():
        raise ConfigError(f"run directory {path} does not exist; expected a training run directory (runs/<name>)")
    try:
        return TrainResult.from_run_dir(path)
    except ConfigError:
        raise
    except TlbenchError as exc:
        raise ExportError(str(exc)) from None
    except (KeyError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: malformed metrics.json ({exc})") from None


def load_trained_model(result: TrainResult, into=None):
    """The dygraph model of ``result`` with its checkpoint loaded, in eval mode.

    ``into`` is a model of the same architecture to load the checkpoint into (default: a new one).

    Raises:
        ExportError: the checkpoint cannot be read or does not fit the model.
    """
    from .models import create_model
    from .models.pdparams import read_paddle_state

    model = into if into is not None else create_model(result.config.model, result.num_classes)
    try:
        # Restricted unpickling: a checkpoint handed in runs no code while it is read.
        state = read_paddle_state(result.checkpoint)
    except Exception as exc:  # unreadable, truncated, or a pickle that names other globals
        raise ExportError(f"cannot read checkpoint {result.checkpoint}: {exc}") from exc
    if not isinstance(state, dict):
        raise ExportError(f"checkpoint {result.checkpoint} does not hold a state dict")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if list(expected[k].shape) != list(state[k].shape))
    if missing or unexpected or wrong_shape:
        raise ExportError(
            f"checkpoint {result.checkpoint} does not fit {result.config.model} with {result.num_classes} classes: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}"
        )
    model.set_state_dict(state)
    model.eval()
    return model


# Translating a forward to a static program (paddle.jit.to_static) takes 1-3 s of Python AST
# work, the same for every checkpoint of one architecture. A search exports one model per trial:
# a layer traced once per (model, classes, input spec) is loaded with each checkpoint and saved
# again, which writes the same program with the new parameters. The parity check still compares
# every export against the dygraph forward of its own checkpoint (to_static switched off).
_TRACED: "OrderedDict[tuple, Any]" = OrderedDict()
_TRACED_MAX = 2


def _traced_layer(model_name: str, num_classes: int, input_spec: list):
    """A layer of ``model_name`` whose forward is static for ``input_spec``, reused per process;
    None with ``TLBENCH_FAST_TRIALS=0`` (then ``jit.save`` traces the loaded model anew)."""
    import paddle

    from . import runtime

    if not runtime.fast_trials_enabled():
        return None
    from .models import create_model

    key = (model_name, num_classes, tuple((tuple(s.shape), str(s.dtype), s.name) for s in input_spec))
    layer = _TRACED.get(key)
    if layer is None:
        layer = create_model(model_name, num_classes)
        layer.eval()
        layer.forward = paddle.jit.to_static(layer.forward, input_spec=input_spec, full_graph=True)
        _TRACED[key] = layer
        while len(_TRACED) > _TRACED_MAX:
            _TRACED.popitem(last=False)
    _TRACED.move_to_end(key)
    return layer


def _parity_batch(spec: PreprocessSpec, parity_inputs: Any) -> tuple[np.ndarray, str]:
    """The NCHW float32 batch to compare on, and a word saying what it is."""
    size = spec.crop_size
    if parity_inputs is None:
        rng = np.random.default_rng(PARITY_SEED)
        # Normalised pixels are roughly standard normal, so this exercises the usual range.
        return rng.standard_normal((PARITY_RANDOM_BATCH, 3, size, size)).astype(np.float32), "random"
    if isinstance(parity_inputs, np.ndarray) and parity_inputs.ndim == 4:
        if parity_inputs.shape[1:] != (3, size, size):
            raise ConfigError(f"parity_inputs must be [N, 3, {size}, {size}], got {list(parity_inputs.shape)}")
        return np.ascontiguousarray(parity_inputs, np.float32), "tensor"
    images = list(parity_inputs)
    if not images:
        raise ConfigError("parity_inputs is empty; pass RGB images, an NCHW batch, or None for random input")
    import kernels

    batch = kernels.preprocess(
        images, resize_short=spec.resize_short, crop_size=size, mean=spec.mean, std=spec.std, scale=spec.scale
    )
    return batch, "images"


def default_out_dir(result: TrainResult, root: PathLike = DEFAULT_EXPORT_ROOT) -> Path:
    """``exported_models/<run-name>`` where the run name is the run directory's basename."""
    return Path(root) / Path(result.run_dir).name


def _default_parity_backend() -> str:
    import paddle

    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return "gpu"
    return "cpu"


def export(
    source: Union[TrainResult, PathLike],
    out_dir: Optional[PathLike] = None,
    *,
    overwrite: bool = False,
    parity_inputs: Any = None,
    parity_rtol: Optional[float] = None,
    parity_atol: float = DEFAULT_PARITY_ATOL,
    parity_backend: Optional[str] = None,
    topk: int = 5,
) -> ExportedModel:
    """Export a training run to a Paddle Inference directory and check it against dygraph.

    Args:
        source: a :class:`TrainResult` or the path of its run directory (or checkpoint file).
        out_dir: target directory; default ``exported_models/<run-name>``.
        overwrite: replace an existing non-empty ``out_dir`` (otherwise ExportError).
        parity_inputs: what to compare predictor and dygraph on: a list of RGB uint8 images
            (preprocessed with the run's spec), an ``[N, 3, H, W]`` float32 batch, or None for
            a seeded random batch.
        parity_rtol, parity_atol: logits must agree within ``atol + rtol * max|logit|``
            and give the same argmax on every input (rows whose dygraph top-2 margin is
            within that tolerance are ties and are only counted). ``rtol`` defaults to
            1e-4 on CPU backends and 5e-3 on GPU ones (TF32 convolutions).
        parity_backend: predictor backend for the check; default ``gpu`` when Paddle has a
            CUDA device, else ``cpu`` (oneDNN).
        topk: ``PostProcess.Topk.topk`` written to ``inference.yml``.

    Returns:
        The :class:`ExportedModel` at ``out_dir``.

    Raises:
        ConfigError: bad arguments or a missing run directory.
        ExportError: the target exists (without ``overwrite``), the checkpoint does not fit
            the model, or the parity check fails. Nothing is left at ``out_dir`` then.
    """
    return _export(source, out_dir, overwrite=overwrite, parity_inputs=parity_inputs, parity_rtol=parity_rtol,
                   parity_atol=parity_atol, parity_backend=parity_backend, topk=topk)[0]


def export_with_predictor(source: Union[TrainResult, PathLike], out_dir: PathLike, options, **kwargs):
    """:func:`export`, plus a :class:`~harness.predictor.Predictor` of the export built with ``options``.

    Building a oneDNN predictor takes about a second, so when ``options`` asks for float32 on
    the parity backend, the parity check runs through that predictor and it is returned
    instead of being built twice (a search scores every trial's export right after exporting).
    ``kwargs`` are :func:`export`'s.
    """
    from .predictor import Predictor

    exported, predictor = _export(source, out_dir, keep=options, **kwargs)
    return exported, predictor if predictor is not None else Predictor(exported, options)


def _export(source, out_dir, *, overwrite: bool = False, parity_inputs: Any = None,
            parity_rtol: Optional[float] = None, parity_atol: float = DEFAULT_PARITY_ATOL,
            parity_backend: Optional[str] = None, topk: int = 5, keep=None):
    """:func:`export`; also returns the parity predictor when ``keep`` (PredictorOptions) could build it."""
    result = resolve_run(source)
    positive_int(topk, "topk")
    if (parity_rtol is not None and parity_rtol < 0) or parity_atol < 0:
        raise ConfigError(f"parity tolerances must be >= 0, got rtol={parity_rtol!r} atol={parity_atol!r}")
    out = check_target(Path(out_dir) if out_dir is not None else default_out_dir(result), overwrite)

    import paddle
    from paddle.static import InputSpec

    from .predictor import Predictor, PredictorOptions

    spec = result.preprocess
    input_spec = [InputSpec([None, 3, spec.crop_size, spec.crop_size], "float32", name=INPUT_NAME)]
    model = load_trained_model(result, into=_traced_layer(result.config.model, result.num_classes, input_spec))
    batch, input_kind = _parity_batch(spec, parity_inputs)
    # Dygraph reference first (a traced layer runs its dygraph forward with to_static off).
    translator = getattr(paddle.jit.api, "ProgramTranslator", None)  # its state is not public API
    to_static = translator.get_instance().enable_to_static if translator is not None else True
    paddle.jit.enable_to_static(False)
    try:
        with paddle.no_grad():
            reference = model(paddle.to_tensor(batch)).numpy().astype(np.float32)
    finally:
        paddle.jit.enable_to_static(to_static)
    if reference.ndim != 2 or reference.shape[1] != result.num_classes:
        raise ExportError(
            f"{result.config.model} outputs shape {list(reference.shape)}; expected [N, {result.num_classes}] logits"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        try:
            paddle.jit.save(model, str(staging / MODEL_PREFIX), input_spec=input_spec)
        except Exception as exc:
            raise ExportError(f"paddle.jit.save failed for {result.config.model}: {exc}") from exc
        # jit.save may leave auxiliary files (e.g. .pdiparams.info) that inference does not need.
        for extra in staging.iterdir():
            if extra.name not in (PIR_MODEL_FILE, LEGACY_MODEL_FILE, PARAMS_FILE):
                extra.unlink()
        model_file = find_model_file(staging)
        if model_file is None or not (staging / PARAMS_FILE).is_file():
            raise ExportError(f"paddle.jit.save wrote {sorted(p.name for p in staging.iterdir())}; expected a model and {PARAMS_FILE}")
        write_side_files(staging, result, topk)

        staged = ExportedModel(
            model_dir=staging,
            model_file=model_file,
            params_file=staging / PARAMS_FILE,
            preprocess=spec,
            classes=tuple(result.classes),
            model_name=result.config.model,
        )
        backend = parity_backend or _default_parity_backend()
        rtol = parity_rtol if parity_rtol is not None else (
            GPU_PARITY_RTOL if backend in ("gpu", "trt") else DEFAULT_PARITY_RTOL
        )
        shared = keep is not None and keep.backend == backend and keep.precision == "fp32"
        predictor = Predictor(staged, keep if shared else PredictorOptions(backend=backend, batch_size=max(1, len(batch))))
        candidate = predictor.predict(batch)
        if not shared:
            del predictor
            predictor = None
        if not (np.isfinite(reference).all() and np.isfinite(candidate).all()):
            raise DivergenceError(
                f"{result.run_dir}: the trained {result.config.model} gives non-finite logits "
                f"({int((~np.isfinite(reference)).sum())} in dygraph, {int((~np.isfinite(candidate)).sum())} exported, "
                f"of {reference.size}): training diverged (lr {result.config.lr:g}); there is nothing worth exporting"
            )
        diff, tolerance, agree, ties, bad = compare_logits(reference, candidate, rtol=rtol, atol=parity_atol)
        parity = ParityReport(
            backend=backend,
            input_kind=input_kind,
            num_inputs=len(batch),
            max_abs_diff=diff,
            max_abs_logit=float(np.abs(reference).max()),
            tolerance=tolerance,
            rtol=rtol,
            atol=parity_atol,
            argmax_agree=agree,
            near_ties=ties,
            argmax_mismatches=tuple(bad),
        )
        if not parity.passed:
            raise ExportError(
                f"exported {result.config.model} disagrees with dygraph on {backend}: max |logit diff| {diff:.3g} "
                f"(tolerance {tolerance:.3g}), argmax differs on inputs {bad}"
            )
        log.info("parity %s on %d %s inputs: max |diff| %.3g (tolerance %.3g), argmax %d/%d",
                 backend, len(batch), input_kind, diff, tolerance, agree, len(batch))

        publish(staging, out, build_manifest(result, spec, model_file.name, parity))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s to %s", result.config.model, out)
    exported = ExportedModel.load(out)
    if predictor is not None:
        predictor.model = exported  # it was built from the staging copy, now renamed to ``out``
    return exported, predictor
