"""Export a fine-tuned checkpoint to a Paddle Inference model directory, and load one back.

An export directory holds

- the static graph and weights that the installed Paddle writes with ``paddle.jit.save``
  (``inference.json`` + ``inference.pdiparams`` for PIR on Paddle 3.x,
  ``inference.pdmodel`` + ``inference.pdiparams`` on Paddle 2.x), with a dynamic batch
  ``InputSpec([None, 3, H, W], 'float32', name='x')``; the graph outputs logits;
- ``inference.yml`` in PaddleClas's deploy format, generated from the run's
  :class:`~harness.preprocess_spec.PreprocessSpec`, so PaddleClas's
  ``deploy/python/predict_cls.py`` runs the export unchanged;
- ``label_list.txt`` (``id name`` per line, PaddleClas's class-id map);
- ``manifest.json``: model, dataset, classes, hyperparameters, metrics, preprocessing,
  Paddle version, creation time, the parity check and the sha256 of every other file.

:func:`export` writes into a temporary sibling directory and renames it into place only
after the parity check passed, so a failed export leaves nothing half-written.
:meth:`ExportedModel.load` reads a tlbench export (verifying the manifest checksums) or a
plain PaddleClas inference directory (``inference.*`` + ``inference.yml``).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import yaml

from .config import TrainConfig
from common.errors import ConfigError, ExportError, IntegrityError, ModelError, TlbenchError
from .preprocess_spec import PreprocessSpec
from .results import TrainResult

log = logging.getLogger(__name__)

MODEL_PREFIX = "inference"
PIR_MODEL_FILE = "inference.json"
LEGACY_MODEL_FILE = "inference.pdmodel"
PARAMS_FILE = "inference.pdiparams"
CONFIG_FILE = "inference.yml"
LABEL_FILE = "label_list.txt"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
INPUT_NAME = "x"
DEFAULT_EXPORT_ROOT = "exported_models"

# Parity tolerance between the predictor and dygraph: |diff| <= atol + rtol * max|logit|.
# oneDNN reorders float32 reductions (measured ~2e-3 absolute on logits of magnitude ~1500
# for ResNet50_vd, i.e. ~1.3e-6 relative); 1e-4 relative leaves two orders of margin for
# deeper models and other CPUs while still catching a wrong graph, wrong weights or a
# wrong layout (those differ by O(1) relative).
DEFAULT_PARITY_RTOL = 1e-4
DEFAULT_PARITY_ATOL = 1e-3
# cuDNN may run float32 convolutions in TF32 on Ampere and newer GPUs (10-bit mantissa).
GPU_PARITY_RTOL = 5e-3
PARITY_RANDOM_BATCH = 4
PARITY_SEED = 20240601

PathLike = Union[str, "os.PathLike[str]"]

# Op types (prefixes) that mark a quantized (int8-ready) program.
QUANT_OP_PREFIXES = ("quantize_linear", "dequantize_linear", "fake_quantize", "fake_dequantize", "fake_channel_wise")
# An op in a PIR program's JSON: {"#": "<dialect id>.<op name>", ...}.
_PIR_OP = re.compile(r'"#"\s*:\s*"\d+\.([A-Za-z0-9_]+)"')


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_model_file(model_dir: Path) -> Optional[Path]:
    # A PIR program is preferred: Paddle 3.x writes it, and it is what jit.save produced
    # if both are present (a .pdmodel beside it would be a stale legacy export).
    for name in (PIR_MODEL_FILE, LEGACY_MODEL_FILE):
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def read_label_file(path: PathLike) -> tuple[str, ...]:
    """Class names from a PaddleClas class-id map (``id name`` per line, ids 0..N-1 in any order)."""
    path = Path(path)
    names: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        head, _, name = line.partition(" ")
        try:
            idx = int(head)
        except ValueError:
            raise ModelError(f"{path}:{lineno}: expected '<class id> <name>', got {line!r}") from None
        names[idx] = name
    if sorted(names) != list(range(len(names))):
        raise ModelError(f"{path}: class ids must be 0..{len(names) - 1} without gaps, got {sorted(names)[:10]}...")
    return tuple(names[i] for i in range(len(names)))


def write_label_file(path: PathLike, classes: Sequence[str]) -> None:
    """Write PaddleClas's class-id map: ``<id> <name>`` per line."""
    for name in classes:
        if "\n" in name or "\r" in name:
            raise ExportError(f"class name {name!r} contains a line break; it cannot go into {LABEL_FILE}")
    Path(path).write_text("".join(f"{i} {name}\n" for i, name in enumerate(classes)), encoding="utf-8")


def inference_yaml(spec: PreprocessSpec, *, topk: int = 5, batch_size: int = 1, threads: int = 2) -> dict[str, Any]:
    """The ``inference.yml`` mapping of PaddleClas's deploy format for ``spec``.

    Paths are relative to the export directory: run PaddleClas's ``predict_cls.py`` from
    there (or override ``Global.inference_model_dir``). The graph outputs logits, so
    PaddleClas's ``Topk`` post-processing prints logits as scores; the ranking is the same.
    """
    return {
        "Global": {
            "infer_imgs": "./images",
            "inference_model_dir": ".",
            "batch_size": int(batch_size),
            "use_gpu": False,
            "enable_mkldnn": True,
            "cpu_num_threads": int(threads),
            "enable_benchmark": False,
            "use_fp16": False,
            "ir_optim": True,
            "use_tensorrt": False,
            "gpu_mem": 8000,
            "enable_profile": False,
        },
        "PreProcess": {"transform_ops": spec.transform_ops()},
        "PostProcess": {
            "main_indicator": "Topk",
            "Topk": {"topk": int(topk), "class_id_map_file": LABEL_FILE},
        },
    }


def spec_from_inference_yaml(path: PathLike) -> PreprocessSpec:
    """Read the preprocessing spec back from an ``inference.yml`` (PaddleClas deploy format)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ModelError(f"{path} is not valid YAML: {exc}") from None
    ops = (data.get("PreProcess") or {}).get("transform_ops") if isinstance(data, dict) else None
    if not isinstance(ops, list):
        raise ModelError(f"{path} has no PreProcess.transform_ops list")
    try:
        return PreprocessSpec.from_transform_ops(ops)
    except ConfigError as exc:
        raise ModelError(f"{path}: {exc}") from None


def _class_map_from_yaml(path: Path) -> Optional[Path]:
    """Where the ``Topk`` post-process of an inference.yml says the class-id map is, if anywhere."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    post = data.get("PostProcess") or {}
    # Two layouts exist: {"Topk": {...}} (exported configs) and {"name": "Topk", ...} (deploy configs).
    topk = post.get("Topk") if isinstance(post.get("Topk"), dict) else post
    ref = topk.get("class_id_map_file") if isinstance(topk, dict) else None
    if not ref:
        return None
    candidate = Path(ref)
    if not candidate.is_absolute():
        candidate = path.parent / candidate
    return candidate if candidate.is_file() else None


def program_op_types(model_file: PathLike) -> frozenset[str]:
    """The op types of an inference program: PIR ``.json`` or legacy ``.pdmodel`` (ProgramDesc).

    A legacy program's bytes also name ops it does not contain (its op-version table), so
    it is parsed rather than searched.

    Raises:
        ModelError: the file cannot be read or parsed.
    """
    path = Path(model_file)
    try:
        if path.suffix == ".json":
            return frozenset(_PIR_OP.findall(path.read_text(encoding="utf-8")))
        from paddle.base.proto import framework_pb2

        desc = framework_pb2.ProgramDesc.FromString(path.read_bytes())
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the program {path}: {exc}") from None
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{path} is not a Paddle program ({exc})") from None
    return frozenset(op.type for block in desc.blocks for op in block.ops)


@dataclass(frozen=True)
class ExportedModel:
    """An inference model directory on disk, with what is needed to feed it and read its output.

    ``manifest`` is None for a plain PaddleClas directory; ``classes`` is None when no
    class-id map is found.
    """

    model_dir: Path
    model_file: Path
    params_file: Path
    preprocess: PreprocessSpec
    classes: Optional[tuple[str, ...]] = None
    model_name: str = "unknown"
    manifest: Optional[dict[str, Any]] = field(default=None, compare=False)

    @property
    def num_classes(self) -> Optional[int]:
        """Number of classes, when the class names are known."""
        return None if self.classes is None else len(self.classes)

    @functools.cached_property
    def quantized(self) -> bool:
        """True when the program has int8 quantization ops (``bench export --precision int8``, PaddleSlim).

        Read from the model file once per instance."""
        return any(op.startswith(QUANT_OP_PREFIXES) for op in program_op_types(self.model_file))

    @property
    def is_tlbench_export(self) -> bool:
        """True when the directory carries a tlbench manifest."""
        return self.manifest is not None

    @classmethod
    def load(cls, model_dir: PathLike, *, verify: bool = True) -> "ExportedModel":
        """Open an export directory.

        A tlbench export's files are checked against the sha256 in its manifest unless
        ``verify`` is False. A directory without a manifest is read as a PaddleClas
        inference directory: ``inference.json`` or ``inference.pdmodel``,
        ``inference.pdiparams`` and ``inference.yml`` (its ``transform_ops`` give the
        preprocessing; its ``Topk.class_id_map_file`` the class names, if present).

        Raises:
            ModelError: the directory or a required file is missing or malformed.
            IntegrityError: a file listed in the manifest is missing or its sha256 differs;
                the message names the file.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelError(f"model directory {model_dir} does not exist (expected an export from `bench export`)")
        manifest_path = model_dir / MANIFEST_FILE
        manifest: Optional[dict[str, Any]] = None
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise IntegrityError(f"{manifest_path} is not valid JSON ({exc}); the export is damaged") from None
            if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
                raise IntegrityError(f"{manifest_path} has no 'files' checksum table; the export is damaged")
            if verify:
                verify_manifest(model_dir, manifest)
        model_file = _find_model_file(model_dir)
        params_file = model_dir / PARAMS_FILE
        if model_file is None or not params_file.is_file():
            raise ModelError(
                f"{model_dir} is not an inference model directory: expected {PIR_MODEL_FILE} "
                f"(or {LEGACY_MODEL_FILE}) and {PARAMS_FILE}"
            )
        if manifest is not None:
            try:
                spec = PreprocessSpec.from_dict(manifest["preprocess"])
                classes = tuple(manifest["classes"]) if manifest.get("classes") is not None else None
            except (KeyError, TypeError, ConfigError) as exc:
                raise ModelError(f"{manifest_path}: malformed manifest ({exc})") from None
            name = str(manifest.get("model_name", "unknown"))
        else:
            yml = model_dir / CONFIG_FILE
            if not yml.is_file():
                raise ModelError(
                    f"{model_dir} has neither {MANIFEST_FILE} nor {CONFIG_FILE}; without them the "
                    "preprocessing is unknown (export with `bench export`, or add PaddleClas's inference.yml)"
                )
            spec = spec_from_inference_yaml(yml)
            label_path = _class_map_from_yaml(yml)
            if label_path is None and (model_dir / LABEL_FILE).is_file():
                label_path = model_dir / LABEL_FILE
            classes = read_label_file(label_path) if label_path is not None else None
            name = model_dir.name
        return cls(
            model_dir=model_dir,
            model_file=model_file,
            params_file=params_file,
            preprocess=spec,
            classes=classes,
            model_name=name,
            manifest=manifest,
        )


def verify_manifest(model_dir: PathLike, manifest: dict[str, Any]) -> None:
    """Check every file listed in ``manifest['files']`` against its sha256.

    Raises:
        IntegrityError: naming the first file that is missing or differs.
    """
    model_dir = Path(model_dir)
    for name, expected in sorted(manifest["files"].items()):
        path = model_dir / name
        if not path.is_file():
            raise IntegrityError(f"{path} is listed in {MANIFEST_FILE} but missing; the export is incomplete")
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"{path} is damaged: sha256 {actual[:16]}… differs from {expected[:16]}… recorded in "
                f"{MANIFEST_FILE}; export the run again"
            )


@dataclass(frozen=True)
class ParityReport:
    """Predictor vs dygraph on the same inputs."""

    backend: str
    input_kind: str
    num_inputs: int
    max_abs_diff: float
    max_abs_logit: float
    tolerance: float
    rtol: float
    atol: float
    argmax_agree: int
    near_ties: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for the manifest (one key per field)."""
        return asdict(self)


def compare_logits(
    reference: np.ndarray, candidate: np.ndarray, *, rtol: float = DEFAULT_PARITY_RTOL, atol: float = DEFAULT_PARITY_ATOL
) -> tuple[float, float, int, int, list[int]]:
    """Compare two ``[N, C]`` logit arrays.

    Returns ``(max_abs_diff, tolerance, argmax_agree, near_ties, bad_rows)`` where
    ``tolerance = atol + rtol * max|reference|`` and ``bad_rows`` are rows whose argmax
    differs although the reference's top-2 margin exceeds the tolerance (a margin within
    numerical noise is a tie that either side may break, counted in ``near_ties``).
    """
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ExportError(f"logit shapes differ: dygraph {reference.shape} vs predictor {candidate.shape}")
    max_abs_logit = float(np.abs(reference).max()) if reference.size else 0.0
    tolerance = float(atol + rtol * max_abs_logit)
    diff = float(np.abs(reference - candidate).max()) if reference.size else 0.0
    ref_arg = reference.argmax(axis=1)
    cand_arg = candidate.argmax(axis=1)
    agree = int(np.sum(ref_arg == cand_arg))
    if reference.shape[1] > 1:
        top2 = np.sort(reference, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    else:
        margin = np.full(reference.shape[0], np.inf)
    ties = margin <= tolerance
    bad = [int(i) for i in np.nonzero((ref_arg != cand_arg) & ~ties)[0]]
    return diff, tolerance, agree, int(np.sum(ties)), bad


def _resolve_source(source: Union[TrainResult, PathLike]) -> TrainResult:
    if isinstance(source, TrainResult):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"export source must be a TrainResult or a run directory path, got {type(source).__name__}")
    path = Path(source)
    if path.is_file():
        # A checkpoint file inside its run directory.
        path = path.parent
    if not path.is_dir():
        raise ConfigError(f"--run {path} does not exist; expected a training run directory (runs/<name>)")
    try:
        return TrainResult.from_run_dir(path)
    except ConfigError:
        raise
    except TlbenchError as exc:
        raise ExportError(str(exc)) from None
    except (KeyError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: malformed metrics.json ({exc})") from None


def _load_model(result: TrainResult):
    import paddle

    from .models import create_model

    model = create_model(result.config.model, result.num_classes)
    try:
        state = paddle.load(result.checkpoint)
    except Exception as exc:  # paddle raises assorted types for a corrupt pickle
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
    result = _resolve_source(source)
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ConfigError(f"topk must be a positive integer, got {topk!r}")
    if (parity_rtol is not None and parity_rtol < 0) or parity_atol < 0:
        raise ConfigError(f"parity tolerances must be >= 0, got rtol={parity_rtol!r} atol={parity_atol!r}")
    out = _check_target(Path(out_dir) if out_dir is not None else default_out_dir(result), overwrite)

    import paddle
    from paddle.static import InputSpec

    from .predictor import Predictor, PredictorOptions

    spec = result.preprocess
    model = _load_model(result)
    batch, input_kind = _parity_batch(spec, parity_inputs)
    # Dygraph reference first: jit.save converts the layer's forward.
    with paddle.no_grad():
        reference = model(paddle.to_tensor(batch)).numpy().astype(np.float32)
    if reference.ndim != 2 or reference.shape[1] != result.num_classes:
        raise ExportError(
            f"{result.config.model} outputs shape {list(reference.shape)}; expected [N, {result.num_classes}] logits"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        input_spec = [InputSpec([None, 3, spec.crop_size, spec.crop_size], "float32", name=INPUT_NAME)]
        try:
            paddle.jit.save(model, str(staging / MODEL_PREFIX), input_spec=input_spec)
        except Exception as exc:
            raise ExportError(f"paddle.jit.save failed for {result.config.model}: {exc}") from exc
        # jit.save may leave auxiliary files (e.g. .pdiparams.info) that inference does not need.
        for extra in staging.iterdir():
            if extra.name not in (PIR_MODEL_FILE, LEGACY_MODEL_FILE, PARAMS_FILE):
                extra.unlink()
        model_file = _find_model_file(staging)
        if model_file is None or not (staging / PARAMS_FILE).is_file():
            raise ExportError(f"paddle.jit.save wrote {sorted(p.name for p in staging.iterdir())}; expected a model and {PARAMS_FILE}")
        _write_side_files(staging, result, topk)

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
        predictor = Predictor(staged, PredictorOptions(backend=backend, batch_size=max(1, len(batch))))
        candidate = predictor.predict(batch)
        del predictor
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
        )
        if diff > tolerance or bad:
            raise ExportError(
                f"exported {result.config.model} disagrees with dygraph on {backend}: max |logit diff| {diff:.3g} "
                f"(tolerance {tolerance:.3g}), argmax differs on inputs {bad}"
            )
        log.info("parity %s on %d %s inputs: max |diff| %.3g (tolerance %.3g), argmax %d/%d",
                 backend, len(batch), input_kind, diff, tolerance, agree, len(batch))

        _publish(staging, out, _manifest(result, spec, model_file.name, parity))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s to %s", result.config.model, out)
    return ExportedModel.load(out)


def _check_target(out: Path, overwrite: bool) -> Path:
    """``out`` if an export may be written there; ExportError when it holds something else."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"export target {out} exists and is not a directory; pick another --out-dir")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"export target {out} already exists and is not empty; pass --overwrite or pick another --out-dir")
    return out


def _write_side_files(staging: Path, result: TrainResult, topk: int) -> None:
    """``inference.yml`` (PaddleClas deploy format) and ``label_list.txt`` of ``result``."""
    (staging / CONFIG_FILE).write_text(
        yaml.safe_dump(inference_yaml(result.preprocess, topk=min(topk, result.num_classes)), sort_keys=False),
        encoding="utf-8",
    )
    write_label_file(staging / LABEL_FILE, result.classes)


def _publish(staging: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` with the sha256 of every file in ``staging``, then move it to ``out``."""
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    # mkdtemp made the folder owner-only; an export is meant to be read by servers and
    # other users, so it gets the permissions of a folder made under the current umask.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    _move_into_place(staging, out)


def _manifest(
    result: TrainResult,
    spec: PreprocessSpec,
    model_file: str,
    parity: Union[ParityReport, dict[str, Any]],
    *,
    precision: str = "fp32",
) -> dict[str, Any]:
    import paddle

    cfg: TrainConfig = result.config
    return {
        "format_version": MANIFEST_VERSION,
        "model_name": cfg.model,
        "dataset": cfg.dataset,
        "num_classes": result.num_classes,
        "classes": list(result.classes),
        "image_size": spec.crop_size,
        "preprocess": spec.to_dict(),
        "input": {"name": INPUT_NAME, "shape": [None, 3, spec.crop_size, spec.crop_size], "dtype": "float32"},
        "output": "logits",
        "model_file": model_file,
        "params_file": PARAMS_FILE,
        "precision": precision,
        "hyperparameters": cfg.to_dict(),
        "metrics": {"metric": result.metric, "val": dict(result.val_metrics), "history": list(result.history)},
        "source_run": str(Path(result.run_dir).resolve()),
        "paddle_version": paddle.__version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "parity": parity.to_dict() if isinstance(parity, ParityReport) else dict(parity),
    }


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` directory to ``out``, replacing an old export last."""
    if not out.exists():
        staging.rename(out)
        return
    # Keep the old export until the new one is in place, so an interruption loses neither.
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    backup.rmdir()
    out.rename(backup)
    try:
        staging.rename(out)
    except BaseException:
        backup.rename(out)
        raise
    shutil.rmtree(backup, ignore_errors=True)
