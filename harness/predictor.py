"""Paddle Inference predictor over an exported model directory.

``Predictor(exported, PredictorOptions(backend, precision, ...))`` builds a
``paddle.inference`` predictor for one of four backends:

========== ==================================== ===========================
backend    what runs                            precisions
========== ==================================== ===========================
cpu        oneDNN kernels, ``threads`` threads  fp32, bf16, int8
cpu-plain  Paddle's native CPU kernels          fp32
gpu        CUDA kernels                         fp32, fp16
trt        TensorRT subgraphs on CUDA           fp32, fp16, int8
========== ==================================== ===========================

:func:`check_backend` says, before any model is loaded, whether the installed Paddle and
this machine can run a (backend, precision) pair, and raises
:class:`~common.errors.BackendUnavailableError` with one line naming what is missing and
what to install.

Inputs go through the predictor's input handle (``reshape`` + ``copy_from_cpu``, one
memcpy into the predictor's own buffer) and outputs come back with ``copy_to_cpu``;
feed/fetch ops are switched off. ``share_external_data`` works on this Paddle only with a
``paddle.Tensor``, and building one from a numpy batch copies it anyway, so it saves
nothing for numpy input.

TensorRT (``trt``) takes one of two routes (:mod:`harness.trt`): a PIR program
(``inference.json``) is converted once with ``paddle.tensorrt`` into a cached program of
``tensorrt_engine`` ops, a legacy program (``inference.pdmodel``) goes through
``enable_tensorrt_engine``. A trt predictor that holds no engine refuses to start, and
:meth:`Predictor.describe` records the route, the engine count and the TensorRT versions.

Int8: there is no calibrator on either side. TensorRT runs int8 on the legacy int8 export
(scales in the graph, ``use_calib_mode=False``); oneDNN (``cpu``) runs int8 only on a
program that carries its quantization scales: Paddle 3.x inference has no CPU calibrator
(Paddle 2.x's ``enable_mkldnn_quantizer`` is gone). :func:`harness.quantize.quantize_int8`
(``bench export --precision int8``) makes such an export from a training run; a float32
export asked for ``cpu``/``int8`` fails with :class:`~common.errors.BackendUnavailableError`
that says so. The int8 passes quantize the ops in :data:`ONEDNN_INT8_OPS`: ``pool2d`` is
left in float32 because oneDNN's int8 pooling primitive fails to build on small feature maps
(ResNet_tiny at 32 px: "could not create a descriptor for a pooling forward propagation
primitive"); measured cost 0–7 % of int8 latency (ResNet18_vd at 64 px, Lite0 at 128 px).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from common.errors import BackendUnavailableError, ConfigError, ModelError
from common.machine import cpu_flags, usable_cores
from common.validate import positive_int
from . import trt
from .artifact import ExportedModel
from .runtime import captured_output

log = logging.getLogger(__name__)

BACKENDS = ("cpu", "cpu-plain", "gpu", "trt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
SUPPORTED = {
    "cpu": ("fp32", "bf16", "int8"),
    "cpu-plain": ("fp32",),
    "gpu": ("fp32", "fp16"),
    "trt": ("fp32", "fp16", "int8"),
}
GPU_INSTALL_HINT = (
    "install paddlepaddle-gpu from Paddle's package index, e.g. "
    "`pip install paddlepaddle-gpu -i https://www.paddlepaddle.org.cn/packages/stable/cu126/`"
)
TRT_INSTALL_HINT = (
    "install a paddlepaddle-gpu wheel built with TensorRT from Paddle's package index "
    "(https://www.paddlepaddle.org.cn/packages/stable/cu126/), the tensorrt Python package of the same "
    "TensorRT version, and put TensorRT's libraries (libnvinfer) on LD_LIBRARY_PATH"
)
# Op types that oneDNN runs in int8 (names after Paddle's fusion passes). pool2d is left
# out: its int8 primitive fails to build on small feature maps (see the module docstring).
ONEDNN_INT8_OPS = frozenset({
    "conv2d", "depthwise_conv2d", "fused_conv2d", "fc", "matmul", "matmul_v2", "fused_matmul",
    "elementwise_add", "fused_elementwise_add", "elementwise_mul", "fused_elementwise_mul", "concat",
})


def _cuda_devices() -> int:
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        return 0
    try:
        return int(paddle.device.cuda.device_count())
    except Exception:  # a CUDA build without a driver raises here
        return 0


def check_backend(backend: str, precision: str = "fp32", *, trt_route: Optional[str] = None) -> None:
    """Raise unless the installed Paddle and this machine can run ``backend`` at ``precision``.

    For ``trt``, ``trt_route`` (``pir-trt`` or ``legacy-trt``, see :mod:`harness.trt`) says which
    TensorRT route the model takes; by default int8 takes the legacy route (the int8 export) and
    fp32/fp16 the PIR route (what Paddle 3.x exports), which also needs the ``tensorrt`` Python
    package and ``paddle.tensorrt``.

    Raises:
        ConfigError: an unknown backend or precision, or a pair no build supports
            (e.g. fp16 on CPU).
        BackendUnavailableError: the pair is valid but this Paddle build or machine lacks
            what it needs (CUDA, a GPU, TensorRT, AVX512-BF16); the message says what to install.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision not in SUPPORTED[backend]:
        hint = {
            ("cpu", "fp16"): "; on CPU use bf16 (needs AVX512-BF16) or fp32",
            ("cpu-plain", "bf16"): "; use backend 'cpu' (oneDNN) for bf16",
            ("cpu-plain", "int8"): "; use backend 'cpu' (oneDNN) for int8",
            ("gpu", "int8"): "; use backend 'trt' for int8 on GPU",
            ("gpu", "bf16"): "; use fp16 on GPU",
            ("trt", "bf16"): "; use fp16 with TensorRT",
        }.get((backend, precision), "")
        raise ConfigError(
            f"precision {precision!r} is not supported by backend {backend!r} "
            f"(supported: {', '.join(SUPPORTED[backend])}){hint}"
        )
    import paddle

    if backend in ("gpu", "trt"):
        if not paddle.device.is_compiled_with_cuda():
            raise BackendUnavailableError(
                f"backend {backend!r} needs a CUDA build of Paddle, but paddlepaddle {paddle.__version__} "
                f"here is the CPU build; {GPU_INSTALL_HINT if backend == 'gpu' else TRT_INSTALL_HINT}"
            )
        if _cuda_devices() == 0:
            raise BackendUnavailableError(
                f"backend {backend!r}: Paddle has CUDA but sees no GPU (check the driver and CUDA_VISIBLE_DEVICES)"
            )
    if backend == "trt":
        route = trt_route or (trt.LEGACY_ROUTE if precision == "int8" else trt.PIR_ROUTE)
        trt.check_tensorrt(route)
    if backend == "cpu" and precision == "bf16":
        flags = cpu_flags()
        if "avx512_bf16" not in flags and "amx_bf16" not in flags:
            raise BackendUnavailableError(
                "precision 'bf16' on CPU needs the AVX512-BF16 or AMX-BF16 instructions, which this CPU lacks "
                "(see `flags` in /proc/cpuinfo); use fp32"
            )


@dataclass(frozen=True)
class PredictorOptions:
    """How to run an exported model.

    ``threads`` is the CPU math-library thread count (default: every core the process may
    use). TensorRT builds engines for batch sizes ``trt_min_batch..trt_max_batch``
    (optimised for ``trt_opt_batch``; both default to ``batch_size``) and keeps them in
    ``trt_cache_dir`` (default ``<model_dir>/_trt_cache``), one entry per
    :class:`harness.trt.ConversionKey`, so an engine is built once, not per run. A TensorRT
    subgraph needs at least ``trt_min_subgraph_size`` ops. PIR-TRT converts on GPU 0, so
    ``gpu_id`` must be 0 for an ``inference.json`` model on ``trt`` (choose the GPU with
    ``CUDA_VISIBLE_DEVICES``).
    ``verify`` checks a tlbench export's sha256 manifest when the predictor opens a path.
    """

    backend: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 8
    threads: Optional[int] = None
    gpu_id: int = 0
    gpu_mem_mb: int = 1024
    trt_cache_dir: Optional[str] = None
    trt_min_batch: int = 1
    trt_opt_batch: Optional[int] = None
    trt_max_batch: Optional[int] = None
    trt_workspace_mb: int = 1024
    trt_min_subgraph_size: int = trt.MIN_SUBGRAPH_SIZE
    ir_optim: bool = True
    onednn_cache_capacity: int = 10
    verify: bool = True

    def __post_init__(self) -> None:
        def positive(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            positive_int(value, f"PredictorOptions.{name}")

        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("batch_size", "gpu_mem_mb", "trt_min_batch", "trt_workspace_mb", "trt_min_subgraph_size",
                     "onednn_cache_capacity"):
            positive(name)
        for name in ("threads", "trt_opt_batch", "trt_max_batch"):
            positive(name, allow_none=True)
        if isinstance(self.gpu_id, bool) or not isinstance(self.gpu_id, int) or self.gpu_id < 0:
            raise ConfigError(f"PredictorOptions.gpu_id must be >= 0, got {self.gpu_id!r}")
        lo, opt, hi = self.trt_batches
        if not lo <= opt <= hi:
            raise ConfigError(f"TensorRT batch sizes need min <= opt <= max, got {lo} / {opt} / {hi}")

    @property
    def trt_batches(self) -> tuple[int, int, int]:
        """(min, opt, max) batch sizes of the TensorRT dynamic shape range."""
        hi = self.trt_max_batch or max(self.batch_size, self.trt_min_batch)
        opt = self.trt_opt_batch or min(max(self.batch_size, self.trt_min_batch), hi)
        return self.trt_min_batch, opt, hi

    def resolved_threads(self) -> int:
        """The thread count actually used."""
        return int(self.threads) if self.threads else usable_cores()


def _refuse_trt_int8(model: ExportedModel, route: str, precision: str) -> None:
    """TensorRT int8 runs only on the legacy int8 export: neither route here calibrates."""
    if precision != "int8":
        return
    if route == trt.PIR_ROUTE:
        raise BackendUnavailableError(
            f"backend 'trt' with precision 'int8' needs an int8 export, but {model.model_dir} holds a float PIR program "
            f"({model.model_file.name}) and PIR-TensorRT has no int8 calibrator; {trt.INT8_EXPORT_HINT}"
        )
    if not model.quantized:
        raise BackendUnavailableError(
            f"backend 'trt' with precision 'int8' needs an int8 export, but {model.model_dir} holds a float32 program "
            f"without quantization scales; {trt.INT8_EXPORT_HINT}"
        )


def default_precision(model: Union[ExportedModel, str, "os.PathLike[str]"], backend: str = "cpu") -> str:
    """The precision a model runs at when none is asked for: int8 for an int8 export on
    ``cpu``/``trt``, fp32 otherwise."""
    if not isinstance(model, ExportedModel):
        model = ExportedModel.load(model, verify=False)
    return "int8" if backend in ("cpu", "trt") and model.quantized else "fp32"


class Predictor:
    """A Paddle Inference predictor for one exported model.

    ``predict`` is serialised by a lock, so one Predictor may be shared between threads;
    for concurrency give each thread its own :meth:`clone`.
    """

    def __init__(self, model: Union[ExportedModel, str, "os.PathLike[str]"], options: Optional[PredictorOptions] = None):
        """Load ``model`` (an :class:`ExportedModel` or a directory) and build the predictor.

        Raises:
            ConfigError: invalid options.
            BackendUnavailableError: the backend/precision cannot run here (see
                :func:`check_backend`), or int8 lacks what it needs.
            ModelError, IntegrityError: the directory is not a usable/intact export.
        """
        options = options or PredictorOptions()
        if not isinstance(options, PredictorOptions):
            raise ConfigError(f"options must be PredictorOptions, got {type(options).__name__}")
        if options.backend != "trt":
            check_backend(options.backend, options.precision)
        if not isinstance(model, ExportedModel):
            model = ExportedModel.load(model, verify=options.verify)
        if options.backend == "trt":
            # What TensorRT needs depends on the program's route, so the model is read first.
            route = trt.route_for(model.model_file)
            _refuse_trt_int8(model, route, options.precision)
            check_backend("trt", options.precision, trt_route=route)
        self.model = model
        self.options = options
        self.spec = model.preprocess
        self._lock = threading.Lock()
        self._trt: Optional[dict[str, Any]] = None
        self._predictor = self._create(model, options)
        input_names = self._predictor.get_input_names()
        output_names = self._predictor.get_output_names()
        if len(input_names) != 1:
            raise ConfigError(f"{model.model_file} has inputs {input_names}; an image classifier has exactly one")
        self.input_name = input_names[0]
        self.output_name = output_names[0]
        self._bind_handles()
        self.num_outputs = self._check_outputs()

    def _check_outputs(self) -> int:
        """Run one zero image and compare the number of scores with the class names.

        A label map that does not fit the model would otherwise fail later, per request
        (an IndexError, a 500) or silently name the wrong classes.
        """
        size = self.spec.crop_size
        # TensorRT engines take batches from their minimum up.
        n = self.options.trt_batches[0] if self.options.backend == "trt" else 1
        logits = self._run(np.zeros((n, 3, size, size), np.float32))
        if logits.ndim != 2 or logits.shape[0] != n:
            raise ModelError(f"{self.model.model_file}: output {self.output_name!r} has shape {list(logits.shape)} for "
                             f"{n} image(s); an image classifier gives [N, num_classes]")
        width = int(logits.shape[1])
        classes = self.model.classes
        if classes is not None and len(classes) != width:
            raise ModelError(
                f"{self.model.model_dir}: the model outputs {width} class scores but {self.model.classes_source or 'its label map'} "
                f"names {len(classes)} classes; the class names do not belong to this model"
            )
        return width

    def _bind_handles(self) -> None:
        self._input = self._predictor.get_input_handle(self.input_name)
        self._output = self._predictor.get_output_handle(self.output_name)

    def clone(self) -> "Predictor":
        """A predictor sharing this one's weights with its own buffers, for another thread.

        Cheaper than building a new Predictor (no graph optimisation, no weight copy).
        """
        other = object.__new__(Predictor)
        other.model, other.options, other.spec = self.model, self.options, self.spec
        other.input_name, other.output_name = self.input_name, self.output_name
        other.num_outputs = self.num_outputs
        other._trt = self._trt
        other._lock = threading.Lock()
        with self._lock:
            other._predictor = self._predictor.clone()
        other._bind_handles()
        return other

    # -- construction -------------------------------------------------------------------
    def _create(self, model: ExportedModel, options: PredictorOptions):
        import paddle.inference as pi

        backend, precision = options.backend, options.precision
        route = trt.route_for(model.model_file) if backend == "trt" else None
        key = self._trt_key(model, options, route) if route else None
        program, params = model.model_file, model.params_file
        if route == trt.PIR_ROUTE:
            converted = trt.convert_pir(model.model_file, model.params_file, key, self._trt_cache_root(model, options))
            trt.require_engines(converted.engine_ops, route=route, model_dir=model.model_dir, where=converted.model_file)
            program, params = converted.model_file, converted.params_file
            self._trt = self._trt_facts(key, converted.engine_ops, f"{trt.ENGINE_OP} ops in {converted.model_file}",
                                        converted.model_file.parent, converted.reused)
        config = pi.Config(str(program), str(params))
        config.switch_ir_optim(options.ir_optim)
        config.switch_use_feed_fetch_ops(False)
        config.disable_glog_info()
        legacy_cache = None
        if backend in ("cpu", "cpu-plain"):
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(options.resolved_threads())
            if backend == "cpu":
                config.enable_mkldnn()
                # Bounded cache of oneDNN primitives per input shape (a varying last batch).
                config.set_mkldnn_cache_capacity(options.onednn_cache_capacity)
                if precision == "bf16":
                    config.enable_mkldnn_bfloat16()
                elif precision == "int8":
                    if not model.quantized:
                        raise BackendUnavailableError(
                            f"backend 'cpu' with precision 'int8' needs an int8 export; {model.model_dir} is float32 "
                            "(oneDNN has no calibrator in Paddle 3.x inference). Make one from the training run "
                            "with harness.quantize.quantize_int8, or use precision 'bf16' on this CPU"
                        )
                    config.enable_mkldnn_int8(set(ONEDNN_INT8_OPS))
            else:
                config.disable_mkldnn()
            if precision != "int8" and model.quantized:
                log.warning("%s is an int8 export; %s/%s runs its fake-quantize ops in float (slow, int8 rounding "
                            "kept); use backend 'cpu' with precision 'int8'", model.model_dir, backend, precision)
        else:
            half = precision == "fp16"
            config.enable_use_gpu(options.gpu_mem_mb, options.gpu_id,
                                  pi.PrecisionType.Half if half else pi.PrecisionType.Float32)
            if half:
                # Callers feed and fetch float32 arrays; only the ops in between run in half precision.
                config.exp_disable_mixed_precision_ops({"feed", "fetch"})
            if route == trt.LEGACY_ROUTE:
                legacy_cache = trt.legacy_cache_dir(key, self._trt_cache_root(model, options))
                self._configure_legacy_trt(config, model, options, legacy_cache)
        # Config.enable_memory_optim() makes create_predictor fail for PIR programs on
        # Paddle 3.3 ("Not find predictor_id N and pass_name memory_optimize_pass"),
        # so it is only used for legacy programs.
        if Path(program).suffix == ".pdmodel":
            config.enable_memory_optim()
        # oneDNN's int8 passes print a report of every op kind they quantized (about 40 lines)
        # to stderr, whatever the glog setting; it goes to the debug log instead.
        quiet = captured_output(2) if (backend == "cpu" and precision == "int8") else contextlib.nullcontext()
        captured = None
        try:
            with quiet as captured:
                predictor = pi.create_predictor(config)
        except Exception as exc:
            message = str(exc).strip().splitlines()
            detail = next((line for line in message if "Error" in line or "error" in line), message[-1] if message else "")
            raise BackendUnavailableError(
                f"Paddle Inference could not build a {backend}/{precision} predictor for {model.model_dir}: {detail}"
            ) from exc
        finally:
            if captured is not None and captured.text.strip():
                log.debug("Paddle Inference while building the predictor:\n%s", captured.text.rstrip())
        if legacy_cache is not None:
            # use_static=True serialises every engine the subgraph pass built while the predictor was created.
            engines = trt.count_engine_files(legacy_cache)
            trt.require_engines(engines, route=route, model_dir=model.model_dir, where=legacy_cache)
            self._trt = self._trt_facts(key, engines, f"{trt.ENGINE_FILE_GLOB} files in {legacy_cache}", legacy_cache, None)
        return predictor

    # -- TensorRT -------------------------------------------------------------------------
    @staticmethod
    def _trt_cache_root(model: ExportedModel, options: PredictorOptions) -> Path:
        return Path(options.trt_cache_dir) if options.trt_cache_dir else model.model_dir / "_trt_cache"

    @staticmethod
    def _trt_key(model: ExportedModel, options: PredictorOptions, route: str) -> "trt.ConversionKey":
        import paddle

        if route == trt.PIR_ROUTE and options.gpu_id != 0:
            raise ConfigError(
                f"backend 'trt' converts inference.json models on GPU 0 (paddle.tensorrt.convert always uses it), got "
                f"gpu_id {options.gpu_id}; select the GPU with CUDA_VISIBLE_DEVICES={options.gpu_id} and use gpu_id 0"
            )
        lo, opt, hi = options.trt_batches
        return trt.ConversionKey(
            model_sha256=trt.model_sha256(model.model_file, model.params_file), route=route,
            precision=options.precision, min_batch=lo, opt_batch=opt, max_batch=hi,
            image_size=int(model.preprocess.crop_size), workspace_mb=options.trt_workspace_mb,
            min_subgraph_size=options.trt_min_subgraph_size, paddle_version=paddle.__version__,
            tensorrt_version=trt.runtime_version(), gpu_name=trt.gpu_name(options.gpu_id),
        )

    @staticmethod
    def _trt_facts(key: "trt.ConversionKey", engines: int, evidence: str, cache: Path,
                   reused: Optional[bool]) -> dict[str, Any]:
        return {
            "trt_mode": key.route,
            "trt_engines": int(engines),
            "trt_engine_evidence": evidence,
            "trt_batches": [key.min_batch, key.opt_batch, key.max_batch],
            "trt_cache": str(cache),
            "trt_cache_reused": reused,
            "gpu_name": key.gpu_name,
            **trt.versions(),
        }

    @staticmethod
    def _configure_legacy_trt(config: Any, model: ExportedModel, options: PredictorOptions, cache: Path) -> None:
        import paddle.inference as pi

        precision = {
            "fp32": pi.PrecisionType.Float32,
            "fp16": pi.PrecisionType.Half,
            "int8": pi.PrecisionType.Int8,
        }[options.precision]
        # Engines are serialised into this key's own directory, so the files counted after
        # create_predictor belong to this model and these settings only.
        config.set_optim_cache_dir(str(cache))
        lo, opt, hi = options.trt_batches
        # The int8 export carries its scales; TensorRT reads them instead of calibrating.
        config.enable_tensorrt_engine(
            workspace_size=options.trt_workspace_mb << 20,
            max_batch_size=hi,
            min_subgraph_size=options.trt_min_subgraph_size,
            precision_mode=precision,
            use_static=True,
            use_calib_mode=False,
        )
        size = model.preprocess.crop_size
        config.set_trt_dynamic_shape_info(
            {"x": [lo, 3, size, size]}, {"x": [hi, 3, size, size]}, {"x": [opt, 3, size, size]}
        )

    # -- inference ----------------------------------------------------------------------
    def _run(self, batch: np.ndarray) -> np.ndarray:
        self._input.reshape(list(batch.shape))
        self._input.copy_from_cpu(batch)
        self._predictor.run()
        return self._output.copy_to_cpu()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``[N, num_classes]`` (float32) of an ``[N, 3, H, W]`` float32 batch.

        Batches larger than ``options.batch_size`` run in chunks of that size.
        """
        batch = np.asarray(batch)
        size = self.spec.crop_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ConfigError(f"predict expects a [N, 3, {size}, {size}] batch, got shape {list(batch.shape)}")
        if batch.dtype != np.float32:
            raise ConfigError(f"predict expects float32 input, got {batch.dtype}")
        batch = np.ascontiguousarray(batch)
        if len(batch) == 0:
            return np.zeros((0, self.model.num_classes or 0), np.float32)
        step = self.options.batch_size
        with self._lock:
            if len(batch) <= step:
                return np.asarray(self._run(batch), np.float32)
            outputs = [self._run(batch[i : i + step]) for i in range(0, len(batch), step)]
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def preprocess(self, images: Sequence[np.ndarray], *, threads: Optional[int] = None) -> np.ndarray:
        """RGB uint8 ``HxWx3`` images → the model's ``[N, 3, H, W]`` float32 input (kernels.preprocess)."""
        import kernels

        spec = self.spec
        return kernels.preprocess(
            list(images), resize_short=spec.resize_short, crop_size=spec.crop_size,
            mean=spec.mean, std=spec.std, scale=spec.scale, threads=threads,
        )

    def predict_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Logits of RGB uint8 images, preprocessed with the model's spec."""
        if len(images) == 0:
            return np.zeros((0, self.model.num_classes or 0), np.float32)
        return self.predict(self.preprocess(images))

    def warmup(self, batch_size: Optional[int] = None) -> None:
        """Run one zero batch so one-time costs (oneDNN primitives, TensorRT engines) are paid up front."""
        n = batch_size or self.options.batch_size
        size = self.spec.crop_size
        self.predict(np.zeros((n, 3, size, size), np.float32))

    def describe(self) -> dict[str, Any]:
        """Backend, precision, threads, model and Paddle version (and :meth:`engine_facts`), for result files."""
        import paddle

        return {
            "model_dir": str(self.model.model_dir),
            "model_name": self.model.model_name,
            "integrity": self.model.integrity,
            "class_names": "known" if self.model.classes is not None else "unknown (reported by number)",
            "backend": self.options.backend,
            "precision": self.options.precision,
            "batch_size": self.options.batch_size,
            "threads": self.options.resolved_threads() if self.options.backend.startswith("cpu") else None,
            "paddle_version": paddle.__version__,
            **self.engine_facts(),
        }

    def engine_facts(self) -> dict[str, Any]:
        """For ``trt``: the route (``trt_mode``), engine count and its evidence, batch range, cache,
        GPU and the Paddle/TensorRT versions; empty for the other backends."""
        return dict(self._trt or {})

    def with_options(self, **changes: Any) -> "Predictor":
        """A new Predictor for the same model with some options changed."""
        return Predictor(self.model, replace(self.options, **changes))
