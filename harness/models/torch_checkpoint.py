"""Torch-free, restricted reader of PyTorch checkpoints.

``torch.load`` unpickles arbitrary objects, so opening a checkpoint from the
internet can run arbitrary code, and it needs a multi-GB torch install. This
reader understands the two on-disk layouts that ``torch.save`` writes and only
ever materialises tensors as numpy arrays:

* the legacy layout (torch < 1.6 and ``_use_new_zipfile_serialization=False``):
  five consecutive pickles -- magic number, protocol version, system info, the
  saved object (tensors point at storages through persistent ids), the sorted
  list of storage keys -- followed, for every key in that order, by an int64
  element count and the storage's raw bytes;
* the zip layout (torch >= 1.6): ``<prefix>/data.pkl`` holds the pickled object,
  ``<prefix>/data/<key>`` the raw bytes of each storage, and an optional
  ``<prefix>/byteorder`` record says ``little`` or ``big``.

The unpickler resolves only a handful of globals (``collections.OrderedDict``,
``torch._utils._rebuild_tensor[_v2]``, ``torch._utils._rebuild_parameter`` and the
``torch.*Storage`` types), each mapped to a function of this module; any other
global -- ``os.system``, ``builtins.eval``, a model class -- raises
:class:`UnsafeCheckpointError` before anything is called.
"""

from __future__ import annotations

import collections
import io
import logging
import math
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from common.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "is_torch_checkpoint",
    "load_torch_checkpoint",
    "load_torch_state_dict",
]

# Constants of torch/serialization.py's legacy layout.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
# The magic number as a pickled LONG1 (opcode, length, 10 little-endian bytes):
# torch.save's first pickle is a PROTO opcode (and a frame header from protocol 4) then this.
_LEGACY_MAGIC_PICKLED = b"\x8a\x0a" + LEGACY_MAGIC_NUMBER.to_bytes(10, "little")

_MAX_TENSOR_ELEMENTS = 1 << 34

# torch storage type name -> numpy dtype of one element. bfloat16 has no numpy
# dtype: its raw 16-bit patterns are read as uint16 and widened to float32.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(np.uint16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class CheckpointFormatError(ModelError):
    """A checkpoint file is truncated, inconsistent or not a PyTorch checkpoint."""


class UnsafeCheckpointError(CheckpointFormatError):
    """A checkpoint pickles something other than tensors and plain containers."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.<Name>Storage`` class named inside the pickle."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


class _Storage:
    """One storage: its dtype and element count now, its bytes once they are read."""

    def __init__(self, key: str, storage_type: _StorageType, numel: int) -> None:
        self.key = key
        self.storage_type = storage_type
        self.numel = numel
        self.array: np.ndarray | None = None

    def set_bytes(self, raw: bytes | memoryview, byteorder: str) -> None:
        dtype = self.storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
        expected = self.numel * dtype.itemsize
        if len(raw) != expected:
            raise CheckpointFormatError(
                f"storage {self.key!r} holds {len(raw)} bytes, expected {expected} "
                f"({self.numel} x {self.storage_type.name})"
            )
        self.array = np.frombuffer(raw, dtype=dtype)


@dataclass(frozen=True)
class _StorageView:
    """A storage seen from an element offset (legacy layout's ``view_metadata``)."""

    storage: _Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes may not have been read yet."""

    storage: _Storage | _StorageView
    storage_offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        base = self.storage
        offset = int(self.storage_offset)
        limit: int
        if isinstance(base, _StorageView):
            offset += base.offset
            limit = base.offset + base.numel
            base = base.storage
        else:
            limit = base.numel
        if base.array is None:
            raise CheckpointFormatError(f"storage {base.key!r} is referenced but its data is missing")
        size = tuple(int(s) for s in self.size)
        stride = tuple(int(s) for s in self.stride)
        if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise CheckpointFormatError(f"invalid tensor size {size} / stride {stride} in storage {base.key!r}")
        if math.prod(size) > _MAX_TENSOR_ELEMENTS:
            # Stride-0 dimensions could otherwise expand a tiny storage into an
            # allocation that exhausts memory.
            raise CheckpointFormatError(f"tensor of size {size} in storage {base.key!r} is implausibly large")
        if 0 not in size:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if offset < 0 or last >= limit:
                raise CheckpointFormatError(
                    f"tensor of size {size}, stride {stride}, offset {offset} reaches beyond storage "
                    f"{base.key!r} of {limit} elements"
                )
        itemsize = base.array.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base.array[offset:] if 0 not in size else base.array[:0],
            shape=size,
            strides=tuple(s * itemsize for s in stride),
            writeable=False,
        )
        # A native-endian, contiguous copy that owns its memory.
        out = np.array(view, dtype=view.dtype.newbyteorder("="), order="C", copy=True)
        if base.storage_type.name == "BFloat16Storage":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    # A Parameter is its data here; requires_grad means nothing to numpy.
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only tensor-building globals and storage references."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage] | None, source: str) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._source}: refusing to load global '{module}.{name}'; only tensors, "
                f"OrderedDict and plain containers are allowed in a checkpoint"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise CheckpointFormatError(f"{self._source}: unexpected persistent id {pid!r} in a header pickle")
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointFormatError(f"{self._source}: malformed persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise UnsafeCheckpointError(f"{self._source}: persistent id of kind {kind!r} is not a storage")
        # Legacy: (storage_type, key, location, numel, view_metadata); zip: the first four.
        if len(pid) not in (5, 6):
            raise CheckpointFormatError(f"{self._source}: malformed storage id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"{self._source}: storage id names no storage type: {pid!r}")
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointFormatError(f"{self._source}: invalid storage size in {pid!r}")
        key = str(key)
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type, numel)
        elif storage.storage_type != storage_type:
            raise CheckpointFormatError(
                f"{self._source}: storage {key!r} is used as {storage.storage_type.name} and {storage_type.name}"
            )
        if view_metadata is None:
            return storage
        _view_key, view_offset, view_numel = view_metadata
        return _StorageView(storage, int(view_offset), int(view_numel))


def _resolve(obj: Any) -> Any:
    """Replace every pending tensor in a tree of containers with its numpy array."""
    if isinstance(obj, _PendingTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        resolved = type(obj)()
        for k, v in obj.items():
            resolved[k] = _resolve(v)
        return resolved
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    if isinstance(obj, (_Storage, _StorageView)):
        raise CheckpointFormatError("a bare storage (not a tensor) was pickled; this reader supports tensors only")
    return obj


def _load_header_pickle(f: BinaryIO, source: str) -> Any:
    try:
        return _RestrictedUnpickler(f, None, source).load()
    except CheckpointFormatError:
        raise
    except Exception as exc:  # the unpickler raises assorted types on arbitrary bytes
        raise CheckpointFormatError(f"{source}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def _load_legacy(f: BinaryIO, source: str) -> Any:
    magic = _load_header_pickle(f, source)
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointFormatError(f"{source}: not a PyTorch checkpoint (bad magic number)")
    version = _load_header_pickle(f, source)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointFormatError(
            f"{source}: legacy protocol version {version!r} is not supported (expected {LEGACY_PROTOCOL_VERSION})"
        )
    sys_info = _load_header_pickle(f, source)
    byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"

    storages: dict[str, _Storage] = {}
    try:
        obj = _RestrictedUnpickler(f, storages, source).load()
        keys = _load_header_pickle(f, source)
    except CheckpointFormatError:
        raise
    except Exception as exc:  # the unpickler raises assorted types on corrupt bytes
        detail = f"{type(exc).__name__}: {exc}"
        raise CheckpointFormatError(f"{source}: truncated or corrupt checkpoint ({detail})") from None
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise CheckpointFormatError(f"{source}: storage key list does not match the storages the tensors use")
    count_format = "<q" if byteorder == "little" else ">q"
    for key in keys:
        storage = storages[str(key)]
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointFormatError(f"{source}: file ends before storage {key!r}")
        (numel,) = struct.unpack(count_format, header)
        if numel != storage.numel:
            raise CheckpointFormatError(
                f"{source}: storage {key!r} records {numel} elements, the tensors expect {storage.numel}"
            )
        storage.set_bytes(f.read(numel * storage.storage_type.dtype.itemsize), byteorder)
    return _resolve(obj)


def _load_zip(path: str, source: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointFormatError(f"{source}: zip archive has {len(pickles)} data.pkl records, expected 1")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointFormatError(f"{source}: unknown byteorder record {byteorder!r}")
        storages: dict[str, _Storage] = {}
        try:
            obj = _RestrictedUnpickler(io.BytesIO(zf.read(pickles[0])), storages, source).load()
        except CheckpointFormatError:
            raise
        except Exception as exc:  # the unpickler raises assorted types on corrupt bytes
            raise CheckpointFormatError(f"{source}: corrupt data.pkl ({type(exc).__name__}: {exc})") from None
        for key, storage in storages.items():
            record = f"{prefix}data/{key}"
            if record not in names:
                raise CheckpointFormatError(f"{source}: storage record {record!r} is missing")
            storage.set_bytes(zf.read(record), byteorder)
    return _resolve(obj)


def is_torch_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` looks like a ``torch.save`` file (zip with ``data.pkl``, or the legacy magic number).

    Only the file's structure is inspected; nothing is unpickled.
    """
    p = Path(path)
    if not p.is_file():
        return False
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                return any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist())
        except zipfile.BadZipFile:
            return False
    with open(p, "rb") as f:
        head = f.read(32)
    return head[:1] == b"\x80" and _LEGACY_MAGIC_PICKLED in head


def load_torch_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a ``torch.save`` file (legacy or zip layout) without torch.

    Returns the saved object with every tensor replaced by a contiguous numpy
    array (dtype from the storage type, native byte order, strides and offsets
    honoured). Raises :class:`UnsafeCheckpointError` if the pickle names any
    global other than the tensor-building ones, :class:`CheckpointFormatError`
    if the file is not a readable checkpoint, and ``ModelError`` if it does not
    exist.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint file {str(p)!r} does not exist")
    source = str(p)
    if zipfile.is_zipfile(p):
        return _load_zip(source, source)
    with open(p, "rb") as f:
        return _load_legacy(f, source)


def load_torch_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the tensors of a PyTorch state dict file as ``{name: np.ndarray}``.

    Accepts a bare state dict or a training checkpoint that nests it under
    ``state_dict`` or ``model``. Non-tensor entries are skipped with a debug log.
    """
    obj = load_torch_checkpoint(path)
    if isinstance(obj, dict):
        for nested in ("state_dict", "model"):
            if isinstance(obj.get(nested), dict):
                obj = obj[nested]
                break
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: holds a {type(obj).__name__}, expected a state dict of tensors")
    tensors: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if isinstance(value, np.ndarray):
            tensors[str(name)] = value
        else:
            logger.debug("%s: skipping non-tensor entry %r (%s)", path, name, type(value).__name__)
    if not tensors:
        raise CheckpointFormatError(f"{path}: contains no tensors")
    return tensors
