"""CUDA preprocessing: the kernel compiles with nvcc (no GPU needed), and the Python side
validates device arrays before anything reaches the library. Parity on a GPU is checked by
bench/gpu_check.sh."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import kernels.cuda as kcuda

ROOT = Path(__file__).resolve().parents[1]
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.mark.timeout(120)
def test_cuda_kernel_compiles(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    obj = tmp_path / "preprocess.o"
    proc = subprocess.run(
        [nvcc, "-c", "-std=c++17", "-O3", "-fmad=false", "-arch=sm_90", "-Werror", "all-warnings",
         f"-I{ROOT / 'kernels' / 'src'}", str(ROOT / "kernels" / "src" / "preprocess_cuda.cu"), "-o", str(obj)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout if shutil.which("nm") else ""
    for name in ("tlb_cuda_preprocess", "tlb_cuda_last_error", "tlb_cuda_abi_version"):
        assert not symbols or name in symbols


class FakeDeviceArray:
    """Just enough of __cuda_array_interface__ for the argument checks (never dereferenced)."""

    def __init__(self, shape, typestr="|u1", strides=None, ptr=0x1000):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "strides": strides,
                                         "data": (ptr, False), "version": 3}


def test_describe_image_accepts_packed_and_row_strided():
    assert kcuda.describe_image(0, FakeDeviceArray((4, 5, 3))) == (0x1000, 4, 5, 15)
    assert kcuda.describe_image(0, FakeDeviceArray((4, 5, 3), strides=(64, 3, 1))) == (0x1000, 4, 5, 64)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((4, 5, 3), np.uint8), "must be a CUDA array"),
        (FakeDeviceArray((4, 5, 3), typestr="<f4"), "dtype uint8"),
        (FakeDeviceArray((4, 5)), r"HxWx3 \(RGB\)"),
        (FakeDeviceArray((4, 5, 4)), r"HxWx3 \(RGB\)"),
        (FakeDeviceArray((4, 5, 3), strides=(15, 1, 5)), "packed pixels"),
        (FakeDeviceArray((0, 5, 3)), "empty"),
    ],
)
def test_bad_device_images(image, match):
    with pytest.raises(ValueError, match=match):
        kcuda.preprocess_cuda([image], resize_short=8, crop_size=8, mean=MEAN, std=STD,
                              out=FakeDeviceArray((1, 3, 8, 8), typestr="<f4"))


def test_bad_output_and_parameters():
    img = FakeDeviceArray((10, 10, 3))
    with pytest.raises(ValueError, match="C-contiguous float32 CUDA array of shape"):
        kcuda.preprocess_cuda([img], resize_short=8, crop_size=8, mean=MEAN, std=STD,
                              out=FakeDeviceArray((1, 3, 8, 9), typestr="<f4"))
    with pytest.raises(ValueError, match="must be a CUDA array"):
        kcuda.preprocess_cuda([img], resize_short=8, crop_size=8, mean=MEAN, std=STD, out=np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="must not exceed"):
        kcuda.preprocess_cuda([img], resize_short=8, crop_size=9, mean=MEAN, std=STD)


def test_missing_library_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv(kcuda.LIB_ENV_VAR, str(tmp_path / "nope.so"))
    monkeypatch.setattr(kcuda, "_lib", None)
    with pytest.raises(RuntimeError, match="gpu_check.sh"):
        kcuda.load_library()
