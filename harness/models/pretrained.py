"""Pretrained weights: resolve a name/path/URL, download once into a cache, load with a report.

The cache lives in ``$TLBENCH_CACHE`` (default ``~/.cache/tlbench/weights``). Each
URL gets its own folder (named by a hash of the URL) holding the file under its
original name and a ``<file>.sha256`` sidecar with the digest seen at download time,
so a later run detects a file that changed on disk. Downloads stream into a temporary
file in the same folder and are moved into place with ``os.replace``; a file lock
keeps parallel workers from fetching the same weights twice.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from common.errors import DownloadError, IntegrityError, ModelError
from .registry import PretrainedConfig

logger = logging.getLogger(__name__)

__all__ = [
    "LoadReport",
    "cache_dir",
    "download_to_cache",
    "load_pretrained",
    "read_weights_file",
    "register_weights_reader",
    "register_weights_source",
    "resolve_weights",
    "sha256_of",
]

CACHE_ENV = "TLBENCH_CACHE"
URL_SCHEMES = ("http", "https", "file")
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_NAME_TABLE_KEY = "StructuredToParameterName@@"


@dataclass(frozen=True)
class LoadReport:
    """What happened to each tensor when pretrained weights were loaded into a model.

    ``loaded``: copied from the file. ``missing``: in the model, not in the file (left
    at their fresh initialisation). ``unexpected``: in the file, not in the model
    (ignored). ``reinitialized``: in both but with different shapes — typically the
    classifier when the class count differs — so the model keeps its fresh values.
    ``source`` names the file the weights came from.
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    reinitialized: tuple[str, ...]
    source: str = ""

    @property
    def complete(self) -> bool:
        """True when no tensor was missing or unexpected (re-initialised heads are fine)."""
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        """One line for logs: counts and the first few names of each non-empty group."""

        def names(group: tuple[str, ...]) -> str:
            shown = ", ".join(group[:5])
            return shown + (f", ... (+{len(group) - 5})" if len(group) > 5 else "")

        parts = [f"{len(self.loaded)} loaded"]
        for label, group in (
            ("reinitialized", self.reinitialized),
            ("missing", self.missing),
            ("unexpected", self.unexpected),
        ):
            parts.append(f"{len(group)} {label}" + (f" [{names(group)}]" if group else ""))
        return f"{self.source}: " + "; ".join(parts)


# ------------------------------------------------------------------------------------
# Download cache
# ------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Weights cache folder: ``$TLBENCH_CACHE`` or ``~/.cache/tlbench/weights``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tlbench" / "weights"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_url(text: str) -> bool:
    return urllib.parse.urlsplit(text).scheme.lower() in URL_SCHEMES


def _refuse_plain_http(url: str) -> None:
    # Weights are code-adjacent: a file swapped in transit decides what the model computes.
    # Plain http is allowed only to this machine (a local mirror, tests), where no one is in between.
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "http":
        return
    host = (parts.hostname or "").lower()
    loopback = host == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not loopback:
        raise DownloadError(f"refusing plain http:// for weights ({url}): use https:// or a local file")


def _normalise_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise DownloadError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return value


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    try:
        text = _sidecar(path).read_text().split()
    except OSError:
        return None
    return text[0].lower() if text else None


def _write_atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch(url: str, dest: Path, expected: str | None) -> str:
    """Stream ``url`` into a temp file beside ``dest``, check, move into place; return sha256."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DownloadError(f"could not download {url}: {exc}") from exc
        seen = digest.hexdigest()
        if expected is not None and seen != expected:
            raise DownloadError(f"checksum mismatch for {url}: expected sha256 {expected}, got {seen}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return seen


def download_to_cache(url: str, *, sha256: str | None = None, cache: str | os.PathLike[str] | None = None) -> Path:
    """Download ``url`` once into the weights cache and return the local path.

    ``url`` may be ``https://``, ``file://``, or ``http://`` to a loopback host only. With ``sha256`` the download (and a
    cached copy) must match it, otherwise DownloadError is raised and no file is left
    behind. Without it the digest seen is recorded in a ``.sha256`` sidecar, and a
    cached file that no longer matches its sidecar raises IntegrityError.
    ``cache`` overrides :func:`cache_dir`.
    """
    if not isinstance(url, str) or not _is_url(url):
        raise DownloadError(f"download_to_cache needs an {'/'.join(URL_SCHEMES)} URL, got {url!r}")
    _refuse_plain_http(url)
    expected = _normalise_sha256(sha256)
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name:
        raise DownloadError(f"URL {url} does not end in a file name")
    folder = Path(cache).expanduser() if cache is not None else cache_dir()
    folder = folder / hashlib.sha256(url.encode()).hexdigest()[:16]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create weights cache folder {folder}: {exc}") from exc
    dest = folder / name

    from filelock import FileLock  # lazy: only downloads need it

    with FileLock(str(folder / f".{name}.lock")):
        if dest.exists():
            seen = sha256_of(dest)
            recorded = _read_sidecar(dest)
            if expected is not None and seen != expected:
                logger.warning("cached %s does not match sha256 %s; downloading again", dest, expected)
                dest.unlink()
                _sidecar(dest).unlink(missing_ok=True)
            elif recorded is not None and seen != recorded:
                raise IntegrityError(
                    f"cached weights {dest} changed on disk: sha256 {seen}, recorded {recorded} in "
                    f"{_sidecar(dest).name}; delete both files to download again"
                )
            else:
                if recorded is None:
                    _write_atomic_text(_sidecar(dest), f"{seen}  {name}\n")
                logger.debug("using cached %s", dest)
                return dest
        logger.info("downloading %s to %s", url, dest)
        seen = _fetch(url, dest, expected)
        _write_atomic_text(_sidecar(dest), f"{seen}  {name}\n")
        logger.info("downloaded %s (sha256 %s)", dest, seen)
    return dest


# ------------------------------------------------------------------------------------
# Resolving and reading weights
# ------------------------------------------------------------------------------------

# Extra weight sources (URL scheme -> fetch(url, sha256) -> local path) and file readers
# (suffix -> read(path) -> {name: array}) for families whose weights are not
# downloadable .pdparams files, e.g. weights shipped inside a Python package.
_SOURCES: dict[str, Callable[[str, str | None], Path]] = {}
_READERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {}


def register_weights_source(scheme: str, fetch: Callable[[str, str | None], Path]) -> None:
    """Let known weights use URLs of ``scheme`` (e.g. ``"pypi"``): ``fetch(url, sha256)`` returns a local path."""
    scheme = scheme.lower().rstrip(":")
    if not scheme or scheme in URL_SCHEMES:
        raise ModelError(f"weights source scheme must be new and non-empty, got {scheme!r}")
    _SOURCES[scheme] = fetch


def register_weights_reader(suffix: str, read: Callable[[Path], dict[str, np.ndarray]]) -> None:
    """Read weights files ending in ``suffix`` (e.g. ``".pth"``) with ``read(path) -> {name: array}``."""
    if not suffix.startswith(".") or suffix == ".pdparams":
        raise ModelError(f"weights reader suffix must start with '.' and not be .pdparams, got {suffix!r}")
    _READERS[suffix.lower()] = read


def _fetch_known(url: str, checksum: str | None) -> Path:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in _SOURCES:
        return _SOURCES[scheme](url, checksum)
    return download_to_cache(url, sha256=checksum)


def resolve_weights(spec: str | os.PathLike[str], model_name: str, cfg: PretrainedConfig) -> Path:
    """Local path of the weights ``spec`` names for ``model_name``, downloading if needed.

    ``spec`` is, in this order of precedence, an ``http(s)://``/``file://`` URL, an
    existing ``.pdparams`` file, a tag of ``cfg.weights`` (``"imagenet"``, ``"ssld"``) or
    the full PaddleClas name (``"ResNet50_vd_ssld_pretrained"``). Anything else raises
    ModelError listing the known names.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"pretrained must be a path, URL or weights name, got {spec!r}")
    spec = spec.strip()
    if _is_url(spec):
        return download_to_cache(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    known = cfg.find_weights(spec)
    if known is not None:
        return _fetch_known(*known)
    names = cfg.weight_names()
    if names:
        hint = f"known weights names for {model_name}: {', '.join(names)}"
    else:
        hint = f"{model_name} has no published weights"
    raise ModelError(f"pretrained {spec!r} is neither an existing file, a URL nor a known name ({hint})")


def read_weights_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a weights file into ``{name: numpy array}``; ModelError naming the file on failure.

    ``.pdparams`` files are read with a restricted unpickler that runs no code from the file
    (:func:`harness.models.pdparams.read_paddle_state`); other suffixes use the reader
    registered with :func:`register_weights_reader`.
    """
    from .pdparams import read_paddle_state

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    reader = _READERS.get(path.suffix.lower())
    try:
        state = reader(path) if reader is not None else read_paddle_state(path)
    except ModelError:
        raise
    except Exception as exc:  # paddle raises assorted types for corrupt pickles
        kind = path.suffix if reader is not None else ".pdparams"
        raise ModelError(f"weights file {path} could not be read as {kind}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, Mapping) or not state:
        raise ModelError(f"weights file {path} does not hold a state dict (got {type(state).__name__})")
    arrays: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key == _NAME_TABLE_KEY:
            continue  # Paddle 2.0 stores its structured→parameter name table beside the tensors
        if not isinstance(key, str):
            raise ModelError(f"weights file {path} has a non-string key {key!r}")
        try:
            arrays[key] = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        except Exception as exc:
            raise ModelError(f"weights file {path}: tensor {key!r} is not an array ({type(value).__name__})") from exc
    return arrays


def load_pretrained(
    model: Any,
    state: Mapping[str, Any],
    *,
    strict: bool = False,
    source: str = "",
    remap: Callable[[list[str]], dict[str, str]] | None = None,
) -> LoadReport:
    """Copy matching tensors of ``state`` into ``model`` and say what happened to the rest.

    Keys are first renamed with ``remap`` (default: ``model.remap_state_dict_keys`` when
    the model has one). Tensors whose shape differs from the model's stay freshly
    initialised and are listed as ``reinitialized``. With ``strict`` any missing or
    unexpected key raises ModelError before the model is touched.
    """
    keys = list(state)
    remap = remap or getattr(model, "remap_state_dict_keys", None)
    names = remap(keys) if remap is not None else {k: k for k in keys}
    renamed = {names.get(k, k): state[k] for k in keys}
    if len(renamed) != len(keys):
        raise ModelError(f"{source or 'weights'}: two tensors map to the same parameter name")

    target = model.state_dict()
    loaded: list[str] = []
    reinitialized: list[str] = []
    assignments: list[tuple[Any, np.ndarray]] = []
    for name, tensor in target.items():
        if name not in renamed:
            continue
        value = np.asarray(renamed[name].numpy() if hasattr(renamed[name], "numpy") else renamed[name])
        if tuple(value.shape) != tuple(tensor.shape):
            reinitialized.append(name)
            logger.debug(
                "%s: %s has shape %s in the weights and %s in the model; keeping fresh values",
                source or "weights",
                name,
                list(value.shape),
                list(tensor.shape),
            )
            continue
        loaded.append(name)
        assignments.append((tensor, value))
    missing = [name for name in target if name not in renamed]
    unexpected = [name for name in renamed if name not in target]
    report = LoadReport(tuple(loaded), tuple(missing), tuple(unexpected), tuple(reinitialized), source)
    if strict and not report.complete:
        raise ModelError(f"strict pretrained loading failed: {report.summary()}")
    if not loaded:
        # Weights of another model (or another naming) would leave every tensor at random.
        raise ModelError(f"{source or 'weights'}: none of its {len(keys)} tensors fits the model "
                         f"({len(target)} tensors; {len(unexpected)} unknown names, {len(reinitialized)} wrong shapes)")
    if len(loaded) < len(target) / 2:
        logger.warning("%s: only %d of the model's %d tensors were loaded (%d unknown names, %d wrong shapes)",
                       source or "weights", len(loaded), len(target), len(unexpected), len(reinitialized))

    for tensor, value in assignments:
        tensor.set_value(value.astype(_numpy_dtype(tensor), copy=False))
    log = logger.warning if not report.complete else logger.info
    log("pretrained weights %s", report.summary())
    return report


def _numpy_dtype(tensor: Any) -> np.dtype:
    # Converting to the model's dtype keeps fp16/fp64 checkpoints loadable into fp32 models.
    text = str(tensor.dtype).replace("paddle.", "").lower()
    if text in ("float32", "float64", "float16", "int64", "int32"):
        return np.dtype(text)
    return tensor.numpy().dtype
