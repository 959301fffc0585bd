"""Datasets, decoding, transforms and the batch loader.

``load_dataset(name, data_root)`` resolves any supported source (built-in demo, image
folders, PaddleClas list files, official benchmark formats) into :class:`DatasetSplits`;
:class:`DataLoader` turns a split into batches with :class:`TrainTransform` or
:class:`EvalTransform`. Nothing here imports Paddle.
"""

from common.errors import DatasetError, DownloadError, ImageDecodeError
from .catalog import dataset_names, default_data_root, load_dataset
from .demo import DEMO_CLASSES, cache_dir, ensure_demo
from .files import IMAGE_EXTENSIONS, JPEG_EXTENSIONS, list_images
from .download import DATASET_RESOURCES, download_file, extract_archive
from .image_io import decode_image_rgb, read_image_rgb
from .loader import DataLoader
from .transforms import EvalTransform, TrainTransform, mixup_batch
from .types import DataReport, DatasetSplits, Sample

__all__ = [
    "DATASET_RESOURCES",
    "DEMO_CLASSES",
    "IMAGE_EXTENSIONS",
    "JPEG_EXTENSIONS",
    "DataLoader",
    "DatasetError",
    "DownloadError",
    "ImageDecodeError",
    "DataReport",
    "DatasetSplits",
    "EvalTransform",
    "Sample",
    "TrainTransform",
    "cache_dir",
    "dataset_names",
    "decode_image_rgb",
    "default_data_root",
    "download_file",
    "ensure_demo",
    "extract_archive",
    "list_images",
    "load_dataset",
    "mixup_batch",
    "read_image_rgb",
]
