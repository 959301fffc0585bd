"""Fused preprocessing: resize short side → center crop → normalize → CHW.

``preprocess`` uses the native kernel when it is built and the numpy/OpenCV
reference otherwise; ``backend()`` says which.
"""

from .reference import preprocess_reference


def backend() -> str:
    """Name of the active preprocessing path ('reference' until the native kernel is built)."""
    return "reference"


def preprocess(images, *, resize_short, crop_size, mean, std, scale=1.0 / 255.0, dtype="float32", threads=None, out=None):
    """Preprocess a list of RGB uint8 HxWx3 images into ``[N, 3, crop, crop]``."""
    result = preprocess_reference(images, resize_short=resize_short, crop_size=crop_size, mean=mean, std=std, scale=scale, dtype=dtype)
    if out is not None:
        out[...] = result
        return out
    return result
