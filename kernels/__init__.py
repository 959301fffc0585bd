"""Fused preprocessing: resize short side → center crop → normalize → CHW.

``preprocess`` uses the native C++ kernel (``kernels._C``) when it is built and the numpy/OpenCV
reference otherwise; ``backend()`` says which, and ``TLBENCH_KERNELS=reference`` forces the
reference. ``kernels.cuda.preprocess_cuda`` is the CUDA entry point (device arrays in and out),
``kernels.decode.decode_jpeg`` the JPEG decoder of the pipeline. The exact contract of the
kernels is in ``kernels/README.md``.
"""

from .fused import ENV_VAR, backend, check_images, preprocess
from .reference import preprocess_reference

__all__ = [
    "ENV_VAR",
    "backend",
    "check_images",
    "preprocess",
    "preprocess_reference",
]
