"""Finding image files on disk: one listing for datasets, benchmarks and exports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Collection, Union

#: Suffixes (lower case) of the image files a folder dataset or an image directory may hold.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2"})
#: Suffixes of JPEG files, for callers that hand the bytes to a JPEG decoder.
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg"})


def list_images(
    root: Union[str, "os.PathLike[str]"], *, recursive: bool = True, extensions: Collection[str] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Files under ``root`` whose suffix (case-insensitive) is in ``extensions``, sorted.

    Hidden files and folders (names starting with ``.``) are skipped; with ``recursive=False``
    only ``root``'s own files are listed. A ``root`` that is not a directory gives ``[]``.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        found.extend(Path(dirpath, f) for f in filenames
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions)
    return sorted(found)
