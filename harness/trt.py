"""TensorRT for Paddle Inference: which route a model takes, the conversion cache, and proof that
engines exist.

Paddle 3.x has two TensorRT routes, and a model can take only one of them:

``pir-trt``
    A PIR program (``inference.json``, what ``paddle.jit.save`` writes on 3.x). The legacy
    ``Config.enable_tensorrt_engine`` is silently ignored for these (the PIR optimisation
    pipeline has no TensorRT pass), so the program is converted ahead of time with
    ``paddle.tensorrt.export.convert``: ``Input`` gives the min/opt/max shapes of ``x`` and
    ``TensorRTConfig`` the precision, workspace, minimum subgraph size and where to save. The
    converted program holds ``tensorrt_engine`` ops with the serialised engines inside and is
    loaded by a plain ``Config`` + ``enable_use_gpu``. Conversion runs on GPU 0 (``convert``
    hard-codes ``CUDAPlace(0)``); for another GPU set ``CUDA_VISIBLE_DEVICES``. PIR-TRT has no
    int8 calibrator.
``legacy-trt``
    A legacy program (``inference.pdmodel``; the int8 export of ``bench export --precision
    int8`` is one): ``enable_tensorrt_engine`` with dynamic shapes and ``use_static=True``
    builds the engines while the predictor is created and serialises them
    (``trt_serialized_*`` files) into the optimisation cache. An int8 export carries its
    scales, so it runs with ``use_calib_mode=False``.

Both routes cache by :class:`ConversionKey`: the model's sha256, route, precision, batch range,
image size, workspace, minimum subgraph size, Paddle and TensorRT versions and GPU name. A
predictor that holds no engine after building refuses to start (:func:`require_engines`)
instead of running plain CUDA under the name TensorRT.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

from common.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

PIR_ROUTE = "pir-trt"
LEGACY_ROUTE = "legacy-trt"
ROUTES = (PIR_ROUTE, LEGACY_ROUTE)
ENGINE_OP = "tensorrt_engine"
# Files the legacy TensorRT subgraph pass writes per engine with use_static=True.
ENGINE_FILE_GLOB = "trt_serialized_*"
META_FILE = "trt.json"
CONVERTED_PREFIX = "inference"
# Bumped when the cache layout or what goes into a conversion changes.
CACHE_FORMAT = 1
MIN_SUBGRAPH_SIZE = 3
INT8_EXPORT_HINT = "make one with `bench export --run RUN --precision int8` (a legacy program that carries its scales)"
PADDLE_TRT_HINT = (
    "install a paddlepaddle-gpu >= 3.0 wheel built with TensorRT from Paddle's package index "
    "(https://www.paddlepaddle.org.cn/packages/stable/cu126/)"
)
LIBNVINFER_HINT = "put TensorRT's libraries (libnvinfer) on LD_LIBRARY_PATH, or `pip install tensorrt=={version}`"
_PIR_OP_NAME = re.compile(r'"#"\s*:\s*"(?:\d+|[A-Za-z_]+)\.([A-Za-z0-9_]+)"')

PathLike = Union[str, "os.PathLike[str]"]


def route_for(model_file: PathLike) -> str:
    """The TensorRT route of an inference program: ``pir-trt`` for ``.json``, ``legacy-trt`` for ``.pdmodel``."""
    suffix = Path(model_file).suffix
    if suffix == ".json":
        return PIR_ROUTE
    if suffix == ".pdmodel":
        return LEGACY_ROUTE
    raise ConfigError(f"{model_file}: expected an inference.json or inference.pdmodel program for TensorRT")


def version_text(version: Any) -> Optional[str]:
    """``(10, 5, 0)`` → ``"10.5.0"``; ``(0, 0, 0)``, None or an empty value → None."""
    if version is None:
        return None
    if isinstance(version, str):
        return version or None
    parts = tuple(int(v) for v in version)
    return None if not any(parts) else ".".join(str(p) for p in parts)


def _major_minor(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if not text:
        return None
    try:
        return tuple(int(p) for p in text.split(".")[:2])
    except ValueError:
        return None


def compile_version() -> Optional[str]:
    """The TensorRT version Paddle was compiled with, or None (a build without TensorRT)."""
    import paddle.inference as pi

    try:
        return version_text(pi.get_trt_compile_version())
    except Exception:  # very old builds lack the call
        return None


def runtime_version() -> Optional[str]:
    """The version of the TensorRT library (libnvinfer) Paddle loads, or None when it cannot load one.

    ``get_trt_runtime_version`` returns 0.0.0 on some builds and raises on others when libnvinfer
    is missing; both mean None here.
    """
    import paddle.inference as pi

    try:
        return version_text(pi.get_trt_runtime_version())
    except Exception as exc:
        log.debug("get_trt_runtime_version failed: %s", exc)
        return None


def package_installed(name: str) -> bool:
    """Whether a top-level Python package ``name`` can be found (without importing it)."""
    return importlib.util.find_spec(name) is not None


def python_package_version() -> Optional[str]:
    """The version of the ``tensorrt`` Python package, or None when it is not installed or fails to import."""
    if not package_installed("tensorrt"):
        return None
    try:
        module = importlib.import_module("tensorrt")
    except Exception as exc:
        log.debug("import tensorrt failed: %s", exc)
        return None
    return str(getattr(module, "__version__", "")) or None


def versions() -> dict[str, Optional[str]]:
    """Paddle and TensorRT versions (compiled, runtime library, Python package), for result files. Never raises."""
    import paddle

    facts: dict[str, Optional[str]] = {"paddle_version": paddle.__version__}
    for name, read in (("tensorrt_compile_version", compile_version), ("tensorrt_runtime_version", runtime_version),
                       ("tensorrt_python_version", python_package_version)):
        try:
            facts[name] = read()
        except Exception:
            facts[name] = None
    return facts


def check_tensorrt(route: str) -> None:
    """Raise unless this (CUDA) Paddle can run TensorRT on ``route``.

    Every route needs Paddle compiled with TensorRT and the libnvinfer it was compiled against;
    ``pir-trt`` also needs the ``tensorrt`` Python package (the converter builds engines with it,
    so its version must match the library's) and ``paddle.tensorrt``.

    Raises:
        BackendUnavailableError: one line naming what is missing and what to install.
    """
    import paddle

    if route not in ROUTES:
        raise ConfigError(f"TensorRT route must be one of {', '.join(ROUTES)}, got {route!r}")
    compiled = compile_version()
    if compiled is None:
        raise BackendUnavailableError(
            f"backend 'trt' needs Paddle compiled with TensorRT, but paddlepaddle {paddle.__version__} here was built "
            f"without it; {PADDLE_TRT_HINT} and put TensorRT's libraries (libnvinfer) on LD_LIBRARY_PATH"
        )
    runtime = runtime_version()
    if runtime is None:
        raise BackendUnavailableError(
            f"backend 'trt': the TensorRT library libnvinfer (version {compiled}, which paddlepaddle {paddle.__version__} "
            f"was compiled with) could not be loaded; {LIBNVINFER_HINT.format(version=compiled)}"
        )
    if route == LEGACY_ROUTE:
        return
    if not package_installed("tensorrt"):
        raise BackendUnavailableError(
            f"backend 'trt' converts inference.json models with PIR-TensorRT, which needs the tensorrt Python package; "
            f"`pip install tensorrt=={runtime}` (the TensorRT version paddlepaddle {paddle.__version__} loads)"
        )
    package = python_package_version()
    if package is None:
        raise BackendUnavailableError(
            f"backend 'trt': the tensorrt Python package is installed but does not import (run `python -c 'import "
            f"tensorrt'` to see why); reinstall it with `pip install tensorrt=={runtime}`"
        )
    if _major_minor(package) != _major_minor(runtime):
        raise BackendUnavailableError(
            f"backend 'trt': the tensorrt Python package is {package} but Paddle loads TensorRT {runtime} (compiled with "
            f"{compiled}); engines built by one do not load in the other, so `pip install tensorrt=={runtime}`"
        )
    try:
        importlib.import_module("paddle.tensorrt.export")
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendUnavailableError(
            f"backend 'trt' needs paddle.tensorrt (PIR-TensorRT) for inference.json models, which paddlepaddle "
            f"{paddle.__version__} here cannot import ({reason}); {PADDLE_TRT_HINT}"
        ) from None


def gpu_name(device: int = 0) -> Optional[str]:
    """The name of CUDA device ``device`` as Paddle sees it, or None."""
    import paddle

    try:
        return str(paddle.device.cuda.get_device_name(device))
    except Exception:
        return None


def model_sha256(model_file: PathLike, params_file: PathLike) -> str:
    """sha256 over the program and the weights (each file's length and bytes), so a retrained model never reuses an engine."""
    digest = hashlib.sha256()
    for path in (Path(model_file), Path(params_file)):
        digest.update(f"{path.suffix}:{path.stat().st_size}:".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ConversionKey:
    """Everything a built TensorRT engine depends on; equal keys may share one cache entry."""

    model_sha256: str
    route: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    image_size: int
    workspace_mb: int
    min_subgraph_size: int
    paddle_version: str
    tensorrt_version: Optional[str]
    gpu_name: Optional[str]
    input_name: str = "x"
    cache_format: int = CACHE_FORMAT

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ConfigError(f"TensorRT route must be one of {', '.join(ROUTES)}, got {self.route!r}")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"TensorRT precision must be fp32, fp16 or int8, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(
                f"TensorRT batch sizes need 1 <= min <= opt <= max, got {self.min_batch} / {self.opt_batch} / {self.max_batch}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The key's fields, as written into the cache entry's ``trt.json``."""
        return asdict(self)

    def digest(self) -> str:
        """Hex sha256 of the fields (sorted JSON)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def entry_name(self) -> str:
        """The cache entry's directory name: route, precision, batch range and a digest prefix."""
        return f"{self.route}-{self.precision}-b{self.min_batch}-{self.opt_batch}-{self.max_batch}-{self.digest()[:16]}"

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of the input ``[N, 3, S, S]``."""
        size = self.image_size
        return tuple((n, 3, size, size) for n in (self.min_batch, self.opt_batch, self.max_batch))  # type: ignore[return-value]


def count_engine_ops(program_file: PathLike) -> int:
    """How many ``tensorrt_engine`` ops a PIR program (``.json``) holds."""
    text = Path(program_file).read_text(encoding="utf-8")
    return sum(1 for name in _PIR_OP_NAME.findall(text) if name == ENGINE_OP)


def count_engine_files(cache_dir: PathLike) -> int:
    """How many serialised TensorRT engines (``trt_serialized_*``) the legacy route wrote under ``cache_dir``."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return 0
    return sum(1 for p in cache_dir.rglob(ENGINE_FILE_GLOB) if p.is_file() and p.stat().st_size > 0)


def require_engines(count: int, *, route: str, model_dir: PathLike, where: PathLike) -> None:
    """Refuse a TensorRT predictor without engines: it would run plain CUDA and be reported as TensorRT.

    Raises:
        BackendUnavailableError: ``count`` is 0.
    """
    if count > 0:
        return
    found = (f"no {ENGINE_OP} op in the converted program {where}" if route == PIR_ROUTE
             else f"no serialised engine ({ENGINE_FILE_GLOB}) in {where}")
    raise BackendUnavailableError(
        f"backend 'trt' ({route}) built no TensorRT engine for {model_dir}: {found}; it would run as plain CUDA, so it "
        f"is refused (use --backend gpu for that, or lower the minimum subgraph size)"
    )


@dataclass(frozen=True)
class ConvertedModel:
    """A PIR-TRT program in the cache: its files, key, engine count, and whether this call reused it."""

    model_file: Path
    params_file: Path
    key: ConversionKey
    engine_ops: int
    reused: bool
    convert_s: float


def _read_entry(entry: Path, key: ConversionKey) -> Optional[ConvertedModel]:
    meta_path = entry / META_FILE
    model_file, params_file = entry / f"{CONVERTED_PREFIX}.json", entry / f"{CONVERTED_PREFIX}.pdiparams"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("key") != key.to_dict() or not model_file.is_file() or not params_file.is_file():
        return None
    if meta.get("program_sha256") != hashlib.sha256(model_file.read_bytes()).hexdigest():
        return None
    return ConvertedModel(model_file, params_file, key, int(meta.get("engine_ops", 0)), True,
                          float(meta.get("convert_s", 0.0)))


def _precision_mode(trt_export: Any, precision: str) -> Any:
    return getattr(trt_export.PrecisionMode, {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}[precision])


def _run_convert(trt_export: Any, model_file: Path, key: ConversionKey, save_prefix: Path) -> None:
    lo, opt, hi = key.shapes()
    spec = trt_export.Input(min_input_shape=lo, optim_input_shape=opt, max_input_shape=hi,
                            input_data_type="float32", name=key.input_name)
    config = trt_export.TensorRTConfig(
        inputs=[spec],
        min_subgraph_size=key.min_subgraph_size,
        save_model_dir=str(save_prefix),
        precision_mode=_precision_mode(trt_export, key.precision),
        workspace_size=key.workspace_mb << 20,
    )
    # convert takes the model path without its suffix (it finds .json + .pdiparams beside it).
    trt_export.convert(str(model_file.with_suffix("")), config)


def convert_pir(model_file: PathLike, params_file: PathLike, key: ConversionKey, cache_root: PathLike) -> ConvertedModel:
    """The PIR-TRT conversion of ``model_file`` for ``key``: from the cache, or converted once and cached.

    The conversion is written into a temporary sibling and renamed into place, under a file lock,
    so concurrent predictors of the same model convert it once and never read half an entry.

    Raises:
        ConfigError: ``key`` is not a PIR-TRT key.
        BackendUnavailableError: the conversion failed or wrote no program.
    """
    from filelock import FileLock

    if key.route != PIR_ROUTE:
        raise ConfigError(f"convert_pir converts PIR programs; the key is for route {key.route!r}")
    model_file, params_file = Path(model_file), Path(params_file)
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    entry = cache_root / key.entry_name()
    with FileLock(str(cache_root / f"{entry.name}.lock")):
        cached = _read_entry(entry, key)
        if cached is not None:
            log.info("PIR-TRT: reusing %s (%d engine ops)", entry, cached.engine_ops)
            return cached
        staging = cache_root / f"{entry.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        trt_export = importlib.import_module("paddle.tensorrt.export")
        t0 = time.perf_counter()
        try:
            _run_convert(trt_export, model_file, key, staging / CONVERTED_PREFIX)
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            # Paddle's messages start "(Kind) what went wrong", then hints and source locations.
            detail = next((line for line in lines if "Error" in line or re.match(r"\s*\(\w+\) ", line)),
                          lines[0] if lines else type(exc).__name__)
            raise BackendUnavailableError(
                f"PIR-TensorRT conversion of {model_file} ({key.precision}, batch {key.min_batch}..{key.max_batch}) "
                f"failed: {detail.strip()}"
            ) from exc
        convert_s = time.perf_counter() - t0
        program = staging / f"{CONVERTED_PREFIX}.json"
        if not program.is_file() or not (staging / f"{CONVERTED_PREFIX}.pdiparams").is_file():
            written = sorted(p.name for p in staging.iterdir())
            shutil.rmtree(staging, ignore_errors=True)
            raise BackendUnavailableError(
                f"PIR-TensorRT conversion of {model_file} wrote no {CONVERTED_PREFIX}.json + .pdiparams "
                f"(found: {', '.join(written) or 'nothing'})"
            )
        engines = count_engine_ops(program)
        meta = {"key": key.to_dict(), "engine_ops": engines, "convert_s": round(convert_s, 3),
                "program_sha256": hashlib.sha256(program.read_bytes()).hexdigest(),
                "source_model": str(model_file), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(entry, ignore_errors=True)
        staging.replace(entry)
    log.info("PIR-TRT: converted %s in %.1f s (%d engine ops) into %s", model_file, convert_s, engines, entry)
    return ConvertedModel(entry / program.name, entry / f"{CONVERTED_PREFIX}.pdiparams", key, engines, False, convert_s)


def legacy_cache_dir(key: ConversionKey, cache_root: PathLike) -> Path:
    """The optimisation-cache directory of a legacy-route predictor (its engines are serialised there)."""
    if key.route != LEGACY_ROUTE:
        raise ConfigError(f"legacy_cache_dir is for the legacy route; the key is for route {key.route!r}")
    entry = Path(cache_root) / key.entry_name()
    entry.mkdir(parents=True, exist_ok=True)
    meta = entry / META_FILE
    if not meta.is_file():
        meta.write_text(json.dumps({"key": key.to_dict()}, indent=2) + "\n", encoding="utf-8")
    return entry
