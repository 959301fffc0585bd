"""ONNX conversion of an exported model, onnxruntime parity, and a Triton model repository.

``deploy_onnx(model_dir, repo_dir)`` turns a tlbench export (or a PaddleClas inference
directory) into a model that runs without Paddle:

- ``paddle2onnx`` converts the Paddle program (PIR ``inference.json`` or legacy
  ``inference.pdmodel``) to ONNX; the batch dimension stays dynamic and the output is
  renamed ``logits``;
- onnxruntime runs the ONNX model on real images next to Paddle Inference (same
  preprocessing, same batch): the top-1 class must agree on every image and the logits
  within ``atol + rtol * max|logit|``, otherwise :class:`~common.errors.ExportError`;
- a Triton Inference Server model repository entry is written::

      <repo>/<name>/config.pbtxt        platform onnxruntime_onnx, dynamic batching
      <repo>/<name>/1/model.onnx
      <repo>/<name>/labels.txt          Triton label file: one class name per line
      <repo>/<name>/preprocess.json     what a client must do to an image first
      <repo>/<name>/deploy.json         parity report, versions, checksums

``config.pbtxt`` is generated from, and parsed back with, Triton's own model-config
protobuf (``tritonclient.grpc.model_config_pb2``), so a field Triton does not know fails
here rather than in the server. The same ``model.onnx`` runs under onnxruntime directly or
is built into a TensorRT engine (``trtexec --onnx``), with ``preprocess.json`` as the
contract for the client side.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from common.errors import ConfigError, ExportError, ModelError, TlbenchError
from common.validate import int_at_least, optional_positive_int, positive_int
from .data.files import IMAGE_EXTENSIONS, list_images
from .artifact import ExportedModel, TargetExistsError, open_permissions, sha256_file, swap_into_place
from .parity import DEFAULT_PARITY_ATOL, DEFAULT_PARITY_RTOL, ParityReport, compare_logits
from .runtime import captured_output

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# Opset 13 is supported by every onnxruntime and TensorRT release of the last years and
# covers every op a ResNet/MobileNet/EfficientNet classifier needs; paddle2onnx raises it
# on its own when an op needs a newer one.
DEFAULT_OPSET = 13
MIN_OPSET = 7
ONNX_MODEL_FILE = "model.onnx"
ONNX_OUTPUT_NAME = "logits"
ONNX_BATCH_DIM = "batch"
TRITON_CONFIG_FILE = "config.pbtxt"
TRITON_PLATFORM = "onnxruntime_onnx"
TRITON_LABEL_FILE = "labels.txt"
PREPROCESS_FILE = "preprocess.json"
DEPLOY_REPORT_FILE = "deploy.json"
MODEL_VERSION = "1"
DEFAULT_MAX_BATCH = 32
DEFAULT_QUEUE_DELAY_US = 2000
DEFAULT_PARITY_IMAGES = 32

TRITON_INSTALL_HINT = "install Triton's Python client with `pip install 'tritonclient[grpc]'`"
ONNX_INSTALL_HINT = "install them with `pip install paddle2onnx onnx onnxruntime`"


# -- ONNX conversion ---------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxModelInfo:
    """What :func:`convert_to_onnx` wrote."""

    path: Path
    opset: int
    input_name: str
    output_name: str
    input_shape: tuple[Optional[int], ...]
    output_shape: tuple[Optional[int], ...]
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = asdict(self)
        d["path"] = str(self.path)
        d["input_shape"] = list(self.input_shape)
        d["output_shape"] = list(self.output_shape)
        return d


def _require(module: str, hint: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"ONNX deployment needs the Python package {module.split('.')[0]!r} ({exc}); {hint}") from None


def _tensor_shape(value_info: Any) -> tuple[Optional[int], ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in dims)


def _rename_output(graph: Any, old: str, new: str) -> None:
    # An ONNX tensor name is referenced by its producer, its consumers and the graph
    # output; all three must change together.
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for out in graph.output:
        if out.name == old:
            out.name = new


def _used_names(graph: Any) -> set[str]:
    """Tensor names consumed by the nodes of ``graph`` and its subgraphs, and its outputs."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _used_names(sub)
    return names


def _drop_dead_code(graph: Any) -> int:
    """Remove nodes whose outputs nothing uses, then unused initializers; returns how many."""
    # paddle2onnx leaves a few constants behind; onnxruntime (and Triton's log) warns about
    # each of them at every load.
    removed = 0
    while True:
        used = _used_names(graph)
        dead = [node for node in graph.node if not any(name in used for name in node.output if name)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
        removed += len(dead)
    used = _used_names(graph)
    unused = [init for init in graph.initializer if init.name not in used]
    names = {init.name for init in unused}
    for init in unused:
        graph.initializer.remove(init)
    for value in [i for i in graph.input if i.name in names]:
        graph.input.remove(value)
    return removed + len(unused)


def convert_to_onnx(
    model: Union[ExportedModel, PathLike],
    out_file: PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    output_name: str = ONNX_OUTPUT_NAME,
) -> OnnxModelInfo:
    """Convert an exported Paddle model to ONNX with paddle2onnx and write ``out_file``.

    The batch dimension of input and output is named ``batch`` (dynamic), the output is
    renamed ``output_name``, and the result must pass ``onnx.checker`` (full check).

    Raises:
        ConfigError: ``opset`` out of range or an empty ``output_name``.
        ExportError: paddle2onnx/onnx are missing, the model is an int8 export, the conversion
            fails, or the graph is not a single-input, single-output ``[N, 3, H, W] -> [N, C]``
            classifier.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ConfigError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    if not output_name:
        raise ConfigError("output_name must be a non-empty string")
    if not isinstance(model, ExportedModel):
        model = ExportedModel.load(model)
    if model.quantized:
        # paddle2onnx aborts the whole process (SIGABRT) on fake-quantize ops.
        raise ExportError(
            f"{model.model_dir} is an int8 export (fake-quantize ops), which paddle2onnx cannot convert; "
            "deploy the run's float32 export instead"
        )
    paddle2onnx = _require("paddle2onnx", ONNX_INSTALL_HINT)
    onnx = _require("onnx", ONNX_INSTALL_HINT)

    # paddle2onnx reports through print() and its C++ core through printf; keep both out of
    # the CLI's stdout (``bench deploy --json`` must print JSON only) but in the debug log,
    # and use its last error line when it fails (it logs the exception instead of raising).
    with captured_output(1) as captured:
        try:
            onnx_bytes = paddle2onnx.export(
                str(model.model_file),
                str(model.params_file),
                save_file=None,
                opset_version=opset,
                auto_upgrade_opset=True,
                enable_onnx_checker=True,
                enable_optimize=True,
            )
        except Exception as exc:  # paddle2onnx swallows the cause, then fails on an unbound result
            failure: Optional[Exception] = exc
        else:
            failure = None
    if captured.text.strip():
        log.debug("paddle2onnx output:\n%s", captured.text.rstrip())
    if failure is not None:
        lines = [ln for ln in captured.text.splitlines() if "ERROR" in ln or "Error" in ln]
        detail = lines[-1].strip() if lines else str(failure)
        raise ExportError(f"paddle2onnx could not convert {model.model_file}: {detail}") from failure
    if not onnx_bytes:
        raise ExportError(f"paddle2onnx returned an empty model for {model.model_file}")

    proto = onnx.load_from_string(onnx_bytes)
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(
            f"the ONNX graph of {model.model_file} has inputs {[i.name for i in inputs]} and outputs "
            f"{[o.name for o in graph.output]}; an image classifier has exactly one of each"
        )
    dropped = _drop_dead_code(graph)
    if dropped:
        log.debug("removed %d unused nodes and initializers from the ONNX graph", dropped)
    old_output = graph.output[0].name
    if old_output != output_name:
        _rename_output(graph, old_output, output_name)
    for value in (inputs[0], graph.output[0]):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = ONNX_BATCH_DIM
    input_shape = _tensor_shape(inputs[0])
    output_shape = _tensor_shape(graph.output[0])
    size = model.preprocess.crop_size
    if input_shape[1:] != (3, size, size) or len(output_shape) != 2:
        raise ExportError(
            f"ONNX model has input shape {list(input_shape)} and output shape {list(output_shape)}; "
            f"expected [batch, 3, {size}, {size}] -> [batch, classes]"
        )
    if model.num_classes is not None and output_shape[1] not in (None, model.num_classes):
        raise ExportError(f"ONNX model outputs {output_shape[1]} classes but {model.model_dir} lists {model.num_classes}")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"the converted ONNX model fails onnx.checker: {exc}") from exc
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(proto.SerializeToString())
    opset_used = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    log.info("converted %s to %s (opset %d)", model.model_file.name, out_file, opset_used)
    return OnnxModelInfo(
        path=out_file,
        opset=int(opset_used),
        input_name=inputs[0].name,
        output_name=output_name,
        input_shape=input_shape,
        output_shape=output_shape,
        sha256=sha256_file(out_file),
    )


class OnnxRunner:
    """An onnxruntime CPU session for a classifier: ``run([N, 3, H, W] float32) -> [N, C] logits``."""

    def __init__(self, path: PathLike, *, threads: Optional[int] = None):
        """Open ``path`` with the CPU execution provider and ``threads`` intra-op threads (default: ORT's)."""
        ort = _require("onnxruntime", ONNX_INSTALL_HINT)
        optional_positive_int(threads, "threads")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ExportError(f"onnxruntime cannot load {path}: {exc}") from exc
        (inp,) = self._session.get_inputs()
        self.input_name: str = inp.name
        self.output_name: str = self._session.get_outputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of an NCHW float32 batch."""
        batch = np.ascontiguousarray(batch, np.float32)
        return np.asarray(self._session.run([self.output_name], {self.input_name: batch})[0], np.float32)


# -- parity ------------------------------------------------------------------------------
def find_images(source: Union[PathLike, Sequence[PathLike]], limit: int = DEFAULT_PARITY_IMAGES) -> list[Path]:
    """Up to ``limit`` image files from a directory (searched recursively) or a list of paths.

    From a directory the files are taken evenly spaced in sorted order, so that a
    ``<class>/<image>`` tree contributes images of many classes rather than the first one.

    Raises:
        ConfigError: the directory does not exist or holds no images, or ``limit`` < 1.
    """
    positive_int(limit, "limit")
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.is_dir():
            raise ConfigError(f"images directory {root} is not a directory")
        paths = list_images(root)
        if not paths:
            raise ConfigError(f"images directory {root} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        if len(paths) > limit:
            step = len(paths) / limit
            paths = [paths[int(i * step)] for i in range(limit)]
        return paths
    paths = [Path(p) for p in source]
    if not paths:
        raise ConfigError("no images given for the parity check")
    return paths[:limit]


def _dataset_images(model: ExportedModel, limit: int) -> list[Path]:
    """Test (else val) images of the dataset the model was trained on, when it can be found."""
    manifest = model.manifest or {}
    name = manifest.get("dataset")
    if not name:
        return []
    from .data import load_dataset

    hyper = manifest.get("hyperparameters") or {}
    try:
        splits = load_dataset(
            name, hyper.get("data_root"), train_list=hyper.get("train_list"), val_list=hyper.get("val_list"),
            test_list=hyper.get("test_list"), val_fraction=hyper.get("val_fraction", 0.1),
            test_fraction=hyper.get("test_fraction"), seed=hyper.get("split_seed", 0),
        )
    except TlbenchError as exc:
        log.info("dataset %r of %s not available for the parity check (%s)", name, model.model_dir, exc)
        return []
    samples = list(splits.test or ())
    if not samples:
        return []
    step = max(1, len(samples) // limit)
    return [Path(s.path) for s in samples[::step][:limit]]


def check_onnx_parity(
    model: Union[ExportedModel, PathLike],
    onnx_file: PathLike,
    images: Union[None, PathLike, Sequence[PathLike]] = None,
    *,
    paddle_backend: str = "cpu",
    rtol: float = DEFAULT_PARITY_RTOL,
    atol: float = DEFAULT_PARITY_ATOL,
    batch_size: int = 8,
    limit: int = DEFAULT_PARITY_IMAGES,
) -> ParityReport:
    """Run ``onnx_file`` with onnxruntime and ``model`` with Paddle Inference on the same images.

    ``images``: a directory, a list of image files, or None for the test split of the
    dataset in the model's manifest (a seeded random batch when that cannot be found,
    which is reported as ``input_kind='random'`` and logged as a warning). Images are
    preprocessed once, with the model's spec and the fused kernel, and both runtimes get
    the identical batch, so the comparison isolates the graph conversion.

    The report is returned whether or not it passed; :func:`deploy_onnx` raises on failure.
    """
    from .data import read_image_rgb
    from .predictor import Predictor, PredictorOptions

    if rtol < 0 or atol < 0:
        raise ConfigError(f"parity tolerances must be >= 0, got rtol={rtol!r} atol={atol!r}")
    if not isinstance(model, ExportedModel):
        model = ExportedModel.load(model)
    predictor = Predictor(model, PredictorOptions(backend=paddle_backend, batch_size=batch_size))
    if images is not None:
        paths = find_images(images, limit)
        source = str(images) if isinstance(images, (str, os.PathLike)) else f"{len(paths)} given files"
    else:
        paths = _dataset_images(model, limit)
        source = f"dataset {(model.manifest or {}).get('dataset')!r} (test split)" if paths else "random"
    if paths:
        batch = predictor.preprocess([read_image_rgb(p) for p in paths])
        kind = "images"
    else:
        log.warning("no images for the ONNX parity check of %s: comparing on random inputs (pass images)",
                    model.model_dir)
        size = model.preprocess.crop_size
        batch = np.random.default_rng(0).standard_normal((8, 3, size, size)).astype(np.float32)
        kind = "random"
    reference = predictor.predict(batch)
    del predictor
    runner = OnnxRunner(onnx_file)
    candidate = np.concatenate([runner.run(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)])
    diff, tolerance, agree, ties, bad = compare_logits(reference, candidate, rtol=rtol, atol=atol)
    report = ParityReport(
        backend=paddle_backend,
        input_kind=kind,
        num_inputs=int(len(batch)),
        max_abs_diff=diff,
        max_abs_logit=float(np.abs(reference).max()),
        tolerance=tolerance,
        rtol=float(rtol),
        atol=float(atol),
        argmax_agree=agree,
        near_ties=ties,
        argmax_mismatches=tuple(bad),
        source=source,
        images=tuple(str(p) for p in paths),
    )
    log.info("ONNX parity on %d %s: max |logit diff| %.3g (tolerance %.3g), top-1 %d/%d",
             report.num_inputs, kind, diff, tolerance, agree, report.num_inputs)
    return report


# -- Triton model repository ---------------------------------------------------------------
def _model_config_pb2():
    return _require("tritonclient.grpc.model_config_pb2", TRITON_INSTALL_HINT)


def default_preferred_batch_sizes(max_batch: int) -> list[int]:
    """Powers of two from 4 up to ``max_batch`` (and ``max_batch`` itself): the sizes the
    scheduler should try to form, which are also the shapes a TensorRT engine is tuned for."""
    sizes = [b for b in (4, 8, 16, 32, 64, 128, 256) if b < max_batch]
    return sizes + [max_batch]


def triton_model_config(
    name: str,
    *,
    input_name: str,
    output_name: str,
    crop_size: int,
    num_classes: int,
    max_batch: int = DEFAULT_MAX_BATCH,
    preferred_batch_sizes: Optional[Sequence[int]] = None,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    label_filename: Optional[str] = TRITON_LABEL_FILE,
    parameters: Optional[dict[str, str]] = None,
) -> Any:
    """A Triton ``ModelConfig`` protobuf for an ONNX classifier with dynamic batching.

    No ``instance_group`` is set, so Triton places one instance on each GPU it sees, or on
    the CPU when there is none: the same repository serves on either.

    Raises:
        ConfigError: invalid sizes or names.
    """
    mc = _model_config_pb2()
    for flag, value in (("max_batch", max_batch), ("crop_size", crop_size), ("num_classes", num_classes)):
        positive_int(value, flag)
    int_at_least(max_queue_delay_us, "max_queue_delay_us", 0)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"name must be a plain directory name, got {name!r}")
    preferred = list(preferred_batch_sizes) if preferred_batch_sizes is not None else default_preferred_batch_sizes(max_batch)
    bad = [b for b in preferred if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= max_batch]
    if bad:
        raise ConfigError(f"preferred batch sizes must lie in 1..{max_batch} (max_batch), got {bad}")

    config = mc.ModelConfig(name=name, platform=TRITON_PLATFORM, max_batch_size=max_batch)
    config.input.add(
        name=input_name, data_type=mc.TYPE_FP32, format=mc.ModelInput.FORMAT_NCHW, dims=[3, crop_size, crop_size]
    )
    output = config.output.add(name=output_name, data_type=mc.TYPE_FP32, dims=[num_classes])
    if label_filename:
        output.label_filename = label_filename
    config.dynamic_batching.preferred_batch_size.extend(sorted(set(preferred)))
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.version_policy.latest.num_versions = 1
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = str(value)
    return config


def write_triton_config(path: PathLike, config: Any) -> None:
    """Write ``config`` (a ``ModelConfig``) as protobuf text format, Triton's ``config.pbtxt``."""
    from google.protobuf import text_format

    Path(path).write_text(text_format.MessageToString(config), encoding="utf-8")


def load_triton_config(path: PathLike, *, expected_name: Optional[str] = None) -> Any:
    """Parse a ``config.pbtxt`` with Triton's model-config protobuf and check what an ONNX
    classifier with dynamic batching needs. The model name must equal ``expected_name``
    (default: the name of the directory holding the file, as Triton requires).

    Raises:
        ExportError: the file does not parse as a ``ModelConfig`` (an unknown field, a wrong
            type), or the platform, batching, tensors or label file are inconsistent.
    """
    from google.protobuf import text_format

    mc = _model_config_pb2()
    path = Path(path)
    config = mc.ModelConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except (text_format.ParseError, OSError) as exc:
        raise ExportError(f"{path} is not a valid Triton model configuration: {exc}") from None
    problems = []
    if config.platform != TRITON_PLATFORM and config.backend != "onnxruntime":
        problems.append(f"platform {config.platform!r} is not {TRITON_PLATFORM!r}")
    expected_name = expected_name or path.parent.name
    if config.name and config.name != expected_name:
        problems.append(f"name {config.name!r} differs from the model directory {expected_name!r}")
    if config.max_batch_size < 1:
        problems.append("max_batch_size must be >= 1 for a batched model")
    if len(config.input) != 1 or len(config.output) != 1:
        problems.append(f"expected one input and one output, got {len(config.input)} and {len(config.output)}")
    prefs = list(config.dynamic_batching.preferred_batch_size)
    if not config.HasField("dynamic_batching"):
        problems.append("dynamic_batching is not configured")
    elif any(b > config.max_batch_size or b < 1 for b in prefs):
        problems.append(f"preferred_batch_size {prefs} exceeds max_batch_size {config.max_batch_size}")
    for out in config.output:
        if out.label_filename and not (path.parent / out.label_filename).is_file():
            problems.append(f"label_filename {out.label_filename!r} does not exist beside {path.name}")
        elif out.label_filename and len(out.dims) == 1:
            count = len((path.parent / out.label_filename).read_text(encoding="utf-8").splitlines())
            if count != out.dims[0]:
                problems.append(f"{out.label_filename} has {count} labels but output {out.name!r} has {out.dims[0]} classes")
    if problems:
        raise ExportError(f"{path}: " + "; ".join(problems))
    return config


def preprocess_description(model: ExportedModel, *, input_name: str, output_name: str) -> dict[str, Any]:
    """The client-side contract of the deployed model, for runtimes without Paddle.

    Written to ``preprocess.json``: the steps and constants that turn an image file into
    the model input, exactly as the fused kernel and PaddleClas's deploy ops do them.
    """
    spec = model.preprocess
    return {
        "format_version": 1,
        "color_order": "RGB",
        "layout": "NCHW",
        "dtype": "float32",
        "input": {"name": input_name, "shape": [None, 3, spec.crop_size, spec.crop_size]},
        "output": {"name": output_name, "kind": "logits", "shape": [None, model.num_classes],
                   "postprocess": "softmax over classes for probabilities; argmax for the class id"},
        "steps": [
            {"op": "decode", "color_order": "RGB", "note": "8-bit, 3 channels; gray is replicated, alpha dropped"},
            {"op": "resize_short", "size": spec.resize_short, "interpolation": "bilinear (cv2.INTER_LINEAR)",
             "rounding": "the other side is int(round(long * size / short)) (round half to even)"},
            {"op": "center_crop", "size": spec.crop_size, "offset": "((w - size) // 2, (h - size) // 2)"},
            {"op": "normalize", "formula": "(pixel * scale - mean) / std, per RGB channel",
             "scale": spec.scale, "mean": list(spec.mean), "std": list(spec.std)},
            {"op": "to_chw"},
        ],
        "resize_short": spec.resize_short,
        "crop": spec.crop_size,
        "scale": spec.scale,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "classes": list(model.classes) if model.classes is not None else None,
    }


@dataclass(frozen=True)
class DeployResult:
    """A finished ``bench deploy``: where the model went and how it compared."""

    model_dir: Path
    repository: Path
    name: str
    onnx: OnnxModelInfo
    parity: ParityReport
    max_batch: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int

    @property
    def triton_dir(self) -> Path:
        """``<repository>/<name>``."""
        return self.repository / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``deploy.json``)."""
        return {
            "source": str(self.model_dir),
            "repository": str(self.repository),
            "name": self.name,
            "onnx": {**self.onnx.to_dict(), "path": f"{MODEL_VERSION}/{ONNX_MODEL_FILE}"},
            "parity": self.parity.to_dict(),
            "triton": {
                "platform": TRITON_PLATFORM,
                "max_batch_size": self.max_batch,
                "preferred_batch_size": list(self.preferred_batch_sizes),
                "max_queue_delay_microseconds": self.max_queue_delay_us,
            },
        }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("paddlepaddle", "paddlepaddle-gpu", "paddle2onnx", "onnx", "onnxruntime", "tritonclient"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def deploy_onnx(
    model_dir: Union[ExportedModel, PathLike],
    repository: PathLike,
    *,
    name: Optional[str] = None,
    opset: int = DEFAULT_OPSET,
    max_batch: int = DEFAULT_MAX_BATCH,
    preferred_batch_sizes: Optional[Sequence[int]] = None,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    images: Union[None, PathLike, Sequence[PathLike]] = None,
    parity_images: int = DEFAULT_PARITY_IMAGES,
    parity_backend: str = "cpu",
    parity_rtol: float = DEFAULT_PARITY_RTOL,
    parity_atol: float = DEFAULT_PARITY_ATOL,
    overwrite: bool = False,
) -> DeployResult:
    """Convert ``model_dir`` to ONNX, check it against Paddle Inference, and write a Triton
    model repository entry ``<repository>/<name>`` (name defaults to the export's directory name).

    Args:
        model_dir: the export (``exported_models/X``) or its :class:`ExportedModel`.
        repository: the Triton model repository; created if missing.
        name: model name (directory) in the repository.
        opset: ONNX opset requested from paddle2onnx (raised by it where an op needs more).
        max_batch, preferred_batch_sizes, max_queue_delay_us: Triton's ``max_batch_size``
            and ``dynamic_batching`` settings (preferred default: 4, 8, 16, .. ``max_batch``).
        images, parity_images: what the parity check runs on and how many (see
            :func:`check_onnx_parity`).
        parity_backend, parity_rtol, parity_atol: the Paddle side and the logit tolerance.
        overwrite: replace an existing ``<repository>/<name>``.

    Everything is written to a staging directory and renamed into place only after the
    parity check passed and ``config.pbtxt`` parsed back, so a failure leaves no partial
    model where Triton would try to load it. Other models in ``repository`` are kept.

    Raises:
        ConfigError: invalid arguments.
        ExportError: the target exists (without ``overwrite``), conversion fails, the parity
            check fails (top-1 differs, or logits beyond tolerance), or the config is invalid.
    """
    model = model_dir if isinstance(model_dir, ExportedModel) else ExportedModel.load(model_dir)
    if model.classes is None:
        raise ModelError(f"{model.model_dir} has no class names (label_list.txt); Triton's label file needs them")
    name = name or model.model_dir.resolve().name
    repository = Path(repository)
    target = repository / name
    if target.exists() and not overwrite:
        raise TargetExistsError(f"{target} already exists; pass overwrite=True or choose another name or repository")
    # Validate the Triton settings before the (slow) conversion.
    probe = triton_model_config(
        name, input_name="x", output_name=ONNX_OUTPUT_NAME, crop_size=model.preprocess.crop_size,
        num_classes=len(model.classes), max_batch=max_batch, preferred_batch_sizes=preferred_batch_sizes,
        max_queue_delay_us=max_queue_delay_us,
    )
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.deploy-", dir=repository))
    # A Triton container often runs as another user than the one deploying.
    open_permissions(staging)
    try:
        onnx_info = convert_to_onnx(model, staging / MODEL_VERSION / ONNX_MODEL_FILE, opset=opset)
        parity = check_onnx_parity(
            model, onnx_info.path, images, paddle_backend=parity_backend, rtol=parity_rtol, atol=parity_atol,
            batch_size=min(max_batch, 8), limit=parity_images,
        )
        if not parity.passed:
            raise ExportError(
                f"onnxruntime disagrees with Paddle Inference ({parity_backend}) on {model.model_dir}: "
                f"max |logit diff| {parity.max_abs_diff:.3g} (tolerance {parity.tolerance:.3g}), "
                f"top-1 agrees on {parity.argmax_agree}/{parity.num_inputs} {parity.input_kind} "
                f"(differs on inputs {list(parity.argmax_mismatches)})"
            )
        (staging / TRITON_LABEL_FILE).write_text("".join(f"{c}\n" for c in model.classes), encoding="utf-8")
        config = triton_model_config(
            name, input_name=onnx_info.input_name, output_name=onnx_info.output_name,
            crop_size=model.preprocess.crop_size, num_classes=len(model.classes), max_batch=max_batch,
            preferred_batch_sizes=list(probe.dynamic_batching.preferred_batch_size),
            max_queue_delay_us=max_queue_delay_us,
        )
        write_triton_config(staging / TRITON_CONFIG_FILE, config)
        description = preprocess_description(model, input_name=onnx_info.input_name, output_name=onnx_info.output_name)
        (staging / PREPROCESS_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        result = DeployResult(
            model_dir=model.model_dir, repository=repository, name=name, onnx=onnx_info, parity=parity,
            max_batch=max_batch, preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
            max_queue_delay_us=max_queue_delay_us,
        )
        report = result.to_dict()
        report["versions"] = _versions()
        report["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        report["files"] = {
            str(p.relative_to(staging)): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()
        }
        (staging / DEPLOY_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        # Parse what was written, as Triton will, before it becomes visible in the repository.
        load_triton_config(staging / TRITON_CONFIG_FILE, expected_name=name)
        swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("deployed %s to %s", model.model_dir, target)
    return DeployResult(
        model_dir=result.model_dir, repository=repository, name=name,
        onnx=replace(onnx_info, path=target / MODEL_VERSION / ONNX_MODEL_FILE),
        parity=parity, max_batch=max_batch, preferred_batch_sizes=result.preferred_batch_sizes,
        max_queue_delay_us=max_queue_delay_us,
    )
