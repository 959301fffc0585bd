"""Restricted PyTorch checkpoint reader: both on-disk layouts, written here without torch."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from common.errors import ModelError
from harness.models.torch_checkpoint import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    CheckpointFormatError,
    UnsafeCheckpointError,
    is_torch_checkpoint,
    load_torch_checkpoint,
    load_torch_state_dict,
)

# ----------------------------------------------------------------------------- writer
# torch.save pickles tensors as ``torch._utils._rebuild_tensor_v2(storage, offset,
# size, stride, requires_grad, hooks)`` with the storage as a persistent id. The
# pickler checks that a global can be imported, so stand-in modules named
# ``torch`` and ``torch._utils`` are installed while a file is written.

_STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-in ``torch`` modules with the globals that torch.save names."""
    torch_mod = types.ModuleType("torch")
    utils_mod = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError("writer stand-in called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in [*_STORAGE_NAMES.values(), "BFloat16Storage"]:
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch_mod, name, cls)
    torch_mod._utils = utils_mod
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)
    return torch_mod


class FakeStorage:
    """A flat storage: raw little-endian data plus the torch type name."""

    def __init__(self, key: str, data: np.ndarray, type_name: str | None = None) -> None:
        self.key = key
        self.data = np.ascontiguousarray(data).reshape(-1)
        self.type_name = type_name or _STORAGE_NAMES[self.data.dtype]


class FakeTensor:
    """A view of a storage, pickled the way torch.save pickles a tensor."""

    def __init__(self, storage: FakeStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce_ex__(self, protocol):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())


def tensor_of(key: str, array: np.ndarray) -> FakeTensor:
    """A contiguous tensor owning its own storage."""
    array = np.ascontiguousarray(array)
    strides = tuple(s // array.itemsize for s in array.strides)
    return FakeTensor(FakeStorage(key, array), 0, array.shape, strides)


def _storages_in(obj, found: dict[str, FakeStorage] | None = None) -> dict[str, FakeStorage]:
    found = {} if found is None else found
    if isinstance(obj, FakeTensor):
        found[obj.storage.key] = obj.storage
    elif isinstance(obj, dict):
        for v in obj.values():
            _storages_in(v, found)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _storages_in(v, found)
    return found


class _Pickler(pickle.Pickler):
    def __init__(self, file, torch_mod, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.torch_mod, self.legacy = torch_mod, legacy

    def persistent_id(self, obj):
        if not isinstance(obj, FakeStorage):
            return None
        storage_type = getattr(self.torch_mod, obj.type_name)
        pid = ("storage", storage_type, obj.key, "cpu", obj.data.size)
        return pid + (None,) if self.legacy else pid


def write_legacy(path: Path, obj, torch_mod, *, tamper=None) -> None:
    """torch's legacy layout: magic, version, sys info, object, keys, then numel + bytes per storage."""
    buf = io.BytesIO()
    pickle.dump(LEGACY_MAGIC_NUMBER, buf, protocol=2)
    pickle.dump(LEGACY_PROTOCOL_VERSION, buf, protocol=2)
    pickle.dump({"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, buf, protocol=2)
    _Pickler(buf, torch_mod, legacy=True).dump(obj)
    storages = _storages_in(obj)
    keys = sorted(storages)
    pickle.dump(keys, buf, protocol=2)
    for key in keys:
        data = storages[key].data
        buf.write(struct.pack("<q", data.size))
        buf.write(data.astype(data.dtype.newbyteorder("<")).tobytes())
    raw = buf.getvalue()
    path.write_bytes(tamper(raw) if tamper else raw)


def write_zip(path: Path, obj, torch_mod, *, byteorder: str = "little") -> None:
    """torch's zip layout: archive/data.pkl, archive/data/<key>, archive/byteorder."""
    buf = io.BytesIO()
    _Pickler(buf, torch_mod, legacy=False).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", byteorder)
        zf.writestr("archive/version", "3\n")
        for key, storage in _storages_in(obj).items():
            order = "<" if byteorder == "little" else ">"
            zf.writestr(f"archive/data/{key}", storage.data.astype(storage.data.dtype.newbyteorder(order)).tobytes())


def _sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn.running_var": rng.random(4).astype(np.float64),
        "half": rng.standard_normal((2, 5)).astype(np.float16),
        "bn.num_batches_tracked": np.array([7], dtype=np.int64),
        "mask": np.array([True, False, True]),
        "pixels": np.arange(6, dtype=np.uint8).reshape(2, 3),
    }


WRITERS = {"legacy": write_legacy, "zip": write_zip}

# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_round_trip_dtypes_and_values(tmp_path, fake_torch, layout):
    arrays = _sample_arrays()
    state = collections.OrderedDict((k, tensor_of(f"s{i}", v)) for i, (k, v) in enumerate(arrays.items()))
    path = tmp_path / f"ckpt_{layout}.pth"
    WRITERS[layout](path, state, fake_torch)

    assert is_torch_checkpoint(path)
    loaded = load_torch_state_dict(path)
    assert list(loaded) == list(arrays)
    for key, expected in arrays.items():
        assert loaded[key].dtype == expected.dtype, key
        assert loaded[key].shape == expected.shape, key
        np.testing.assert_array_equal(loaded[key], expected, err_msg=key)
        assert loaded[key].flags.c_contiguous and loaded[key].flags.writeable


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_shared_storage_offsets_and_strides(tmp_path, fake_torch, layout):
    base = np.arange(24, dtype=np.float32)
    storage = FakeStorage("shared", base)
    state = {
        # A transposed 3x4 view starting at element 2 of the shared storage.
        "transposed": FakeTensor(storage, 2, (4, 3), (1, 4)),
        "slice": FakeTensor(storage, 20, (4,), (1,)),
        "scalar": FakeTensor(storage, 5, (), ()),
    }
    path = tmp_path / "views.pth"
    WRITERS[layout](path, state, fake_torch)
    loaded = load_torch_state_dict(path)
    np.testing.assert_array_equal(loaded["transposed"], base[2:14].reshape(3, 4).T)
    np.testing.assert_array_equal(loaded["slice"], base[20:24])
    assert loaded["scalar"].shape == () and loaded["scalar"] == 5.0


def test_big_endian_zip_and_bfloat16(tmp_path, fake_torch):
    values = np.array([1.5, -2.25, 3e-3, 65504.0], dtype=np.float32)
    # bfloat16 keeps the top 16 bits of a float32.
    bf16_bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    state = {
        "f32": tensor_of("a", values),
        "bf16": FakeTensor(FakeStorage("b", bf16_bits, "BFloat16Storage"), 0, (4,), (1,)),
    }
    path = tmp_path / "big.pth"
    write_zip(path, state, fake_torch, byteorder="big")
    loaded = load_torch_state_dict(path)
    np.testing.assert_array_equal(loaded["f32"], values)
    assert loaded["f32"].dtype == np.dtype("=f4")
    assert loaded["bf16"].dtype == np.float32
    np.testing.assert_allclose(loaded["bf16"], values, rtol=1e-2)


def test_nested_state_dict_and_plain_values(tmp_path, fake_torch):
    obj = {"epoch": 3, "state_dict": {"w": tensor_of("w", np.ones((2, 2), np.float32))}, "names": ["a", "b"]}
    path = tmp_path / "nested.pth"
    write_zip(path, obj, fake_torch)
    full = load_torch_checkpoint(path)
    assert full["epoch"] == 3 and full["names"] == ["a", "b"]
    np.testing.assert_array_equal(load_torch_state_dict(path)["w"], np.ones((2, 2), np.float32))


class _Evil:
    """Pickles to ``os.system(<command>)``: what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_malicious_global_is_refused_before_running(tmp_path, fake_torch, layout):
    marker = tmp_path / "pwned"
    state = {"w": tensor_of("w", np.zeros(2, np.float32)), "payload": _Evil(f"touch {marker}")}
    path = tmp_path / "evil.pth"
    WRITERS[layout](path, state, fake_torch)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load global '(posix|os)\.system'"):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_malicious_header_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_header.pth"
    path.write_bytes(pickle.dumps(_Evil(f"touch {marker}"), protocol=2))
    with pytest.raises(UnsafeCheckpointError):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_truncated_legacy_file(tmp_path, fake_torch):
    path = tmp_path / "short.pth"
    write_legacy(path, {"w": tensor_of("w", np.ones(100, np.float32))}, fake_torch, tamper=lambda raw: raw[:-10])
    with pytest.raises(CheckpointFormatError, match="storage 'w' holds 390 bytes, expected 400"):
        load_torch_state_dict(path)


def test_tensor_beyond_its_storage_is_rejected(tmp_path, fake_torch):
    storage = FakeStorage("s", np.zeros(6, np.float32))
    path = tmp_path / "oob.pth"
    write_zip(path, {"w": FakeTensor(storage, 2, (3, 2), (2, 1))}, fake_torch)
    with pytest.raises(CheckpointFormatError, match="reaches beyond storage"):
        load_torch_state_dict(path)


def test_broadcast_bomb_is_rejected(tmp_path, fake_torch):
    storage = FakeStorage("s", np.zeros(1, np.float32))
    path = tmp_path / "bomb.pth"
    write_zip(path, {"w": FakeTensor(storage, 0, (1 << 20, 1 << 20), (0, 0))}, fake_torch)
    with pytest.raises(CheckpointFormatError, match="implausibly large"):
        load_torch_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert not is_torch_checkpoint(text)
    with pytest.raises(CheckpointFormatError, match="not a PyTorch checkpoint"):
        load_torch_checkpoint(text)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    assert not is_torch_checkpoint(plain)
    with pytest.raises(ModelError, match="does not exist"):
        load_torch_checkpoint(tmp_path / "missing.pth")
