"""An exported model directory on disk: its files, how to read one back, and how one is published.

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

:meth:`ExportedModel.load` reads a tlbench export (verifying the manifest checksums) or a
plain PaddleClas inference directory (``inference.*`` + ``inference.yml``). The writers
(:func:`harness.export.export`, :func:`harness.quantize.quantize_int8`) fill a staging
directory and hand it to :func:`publish`, which writes the manifest and swaps the
directory into place with :func:`swap_into_place`.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from common.errors import ConfigError, ExportError, IntegrityError, ModelError
from .parity import ParityReport
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

PathLike = Union[str, "os.PathLike[str]"]

# Op types (prefixes) that mark a quantized (int8-ready) program.
QUANT_OP_PREFIXES = ("quantize_linear", "dequantize_linear", "fake_quantize", "fake_dequantize", "fake_channel_wise")
# An op in a PIR program's JSON: {"#": "<dialect id>.<op name>", ...}.
_PIR_OP = re.compile(r'"#"\s*:\s*"\d+\.([A-Za-z0-9_]+)"')


#: ``ExportedModel.integrity`` values.
INTEGRITY_VERIFIED = "verified"
INTEGRITY_UNVERIFIED = "unverified"
INTEGRITY_NOT_CHECKED = "not checked"

# Model directories already warned about in this process (the warnings are said once).
_WARNED: set[tuple[str, str]] = set()


def _warn_once(model_dir: Path, kind: str, message: str) -> None:
    key = (str(model_dir.resolve()), kind)
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning("%s", message)


class TargetExistsError(ExportError):
    """The output directory already holds something and replacing it was not asked for."""


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def find_model_file(model_dir: PathLike) -> Optional[Path]:
    """The inference program in ``model_dir`` (``inference.json``, else ``inference.pdmodel``), or None."""
    model_dir = Path(model_dir)
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
    # Where the class names were read from (a file path, or the manifest), for error messages.
    classes_source: str = field(default="", compare=False)
    # "verified" (every file matched the manifest), "unverified" (no manifest: nothing to check
    # against) or "not checked" (load(verify=False)).
    integrity: str = field(default=INTEGRITY_NOT_CHECKED, compare=False)

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
            if not manifest["files"]:
                raise IntegrityError(
                    f"{manifest_path} lists no files, so nothing in {model_dir} can be verified; refusing it "
                    f"(export the run again, or remove {MANIFEST_FILE} to open it as an unverified PaddleClas directory)"
                )
            if verify:
                verify_manifest(model_dir, manifest)
        model_file = find_model_file(model_dir)
        params_file = model_dir / PARAMS_FILE
        if model_file is None or not params_file.is_file():
            raise ModelError(
                f"{model_dir} is not an inference model directory: expected {PIR_MODEL_FILE} "
                f"(or {LEGACY_MODEL_FILE}) and {PARAMS_FILE}"
            )
        if manifest is not None:
            unlisted = [p.name for p in (model_file, params_file) if p.name not in manifest["files"]]
            if unlisted:
                raise IntegrityError(
                    f"{manifest_path} does not list {', '.join(unlisted)}, so the model in {model_dir} cannot be "
                    f"verified; refusing it (export the run again)"
                )
            integrity = INTEGRITY_VERIFIED if verify else INTEGRITY_NOT_CHECKED
        else:
            integrity = INTEGRITY_UNVERIFIED
        if manifest is not None:
            try:
                spec = PreprocessSpec.from_dict(manifest["preprocess"])
                classes = tuple(manifest["classes"]) if manifest.get("classes") is not None else None
            except (KeyError, TypeError, ConfigError) as exc:
                raise ModelError(f"{manifest_path}: malformed manifest ({exc})") from None
            name = str(manifest.get("model_name", "unknown"))
            source = str(manifest_path)
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
            source = str(label_path) if label_path is not None else ""
            name = model_dir.name
            if verify:
                _warn_once(model_dir, "integrity",
                           f"{model_dir}: integrity unverified: there is no {MANIFEST_FILE}, so damaged or altered "
                           f"weights cannot be detected (exports from `bench export` carry checksums)")
        if classes is None and verify:
            _warn_once(model_dir, "classes",
                       f"{model_dir}: no class names (no label map found); classes are reported by number")
        return cls(
            model_dir=model_dir,
            model_file=model_file,
            params_file=params_file,
            preprocess=spec,
            classes=classes,
            model_name=name,
            manifest=manifest,
            classes_source=source,
            integrity=integrity,
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


# -- writing an export --------------------------------------------------------------------
def check_target(out: PathLike, overwrite: bool) -> Path:
    """``out`` as a Path if an export may be written there.

    Raises:
        ExportError: ``out`` exists and is not a directory.
        TargetExistsError: ``out`` is a non-empty directory and ``overwrite`` is False.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"export target {out} exists and is not a directory; pick another directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TargetExistsError(
            f"export target {out} already exists and is not empty; pass overwrite=True or pick another directory"
        )
    return out


def write_side_files(staging: PathLike, result: TrainResult, topk: int) -> None:
    """Write ``inference.yml`` (PaddleClas deploy format) and ``label_list.txt`` of ``result`` into ``staging``."""
    staging = Path(staging)
    (staging / CONFIG_FILE).write_text(
        yaml.safe_dump(inference_yaml(result.preprocess, topk=min(topk, result.num_classes)), sort_keys=False),
        encoding="utf-8",
    )
    write_label_file(staging / LABEL_FILE, result.classes)


def build_manifest(
    result: TrainResult,
    spec: PreprocessSpec,
    model_file: str,
    parity: Union[ParityReport, dict[str, Any]],
    *,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The ``manifest.json`` mapping of an export of ``result`` (without the ``files`` checksums,
    which :func:`publish` adds)."""
    import paddle

    cfg = result.config
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


def open_permissions(path: PathLike) -> None:
    """Give ``path`` the permissions a directory made under the current umask has.

    ``tempfile.mkdtemp`` makes its folder owner-only; an export or a Triton model is meant
    to be read by servers and other users.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def publish(staging: PathLike, out: PathLike, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` with the sha256 of every file in ``staging``, then move ``staging`` to ``out``."""
    staging = Path(staging)
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    open_permissions(staging)
    swap_into_place(staging, out)


def swap_into_place(staging: PathLike, target: PathLike) -> None:
    """Rename the finished directory ``staging`` to ``target``, replacing an old ``target`` last.

    An old ``target`` is first renamed aside (a hidden sibling) and removed only once
    ``staging`` is in place; if that final rename fails, the old directory is restored, so an
    interruption loses neither. ``staging`` and ``target`` must be on the same file system
    (make ``staging`` a sibling of ``target``).
    """
    staging, target = Path(staging), Path(target)
    if not target.exists():
        staging.rename(target)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    backup.rmdir()
    target.rename(backup)
    try:
        staging.rename(target)
    except BaseException:
        backup.rename(target)
        raise
    shutil.rmtree(backup, ignore_errors=True)
