"""The JPEGs a throughput run feeds: where they come from and how they are held in memory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from bench.paths import BENCHMARK_DATASET_RELATIVE, REPO_ROOT
from common.errors import DatasetError
from harness.data.files import JPEG_EXTENSIONS, list_images

log = logging.getLogger(__name__)



def resolve_images_dir(images_dir: Optional[str]) -> Path:
    """The folder to take JPEGs from.

    Without ``images_dir``, ``../shared/datasets/flowers12`` is looked up relative to the
    repository root (where this package lives) and then relative to the working directory.

    Raises:
        DatasetError: the folder does not exist (naming every place that was tried).
    """
    if images_dir is not None:
        path = Path(images_dir).expanduser()
        if not path.is_dir():
            raise DatasetError(f"--images {path} is not a directory (expected a folder of JPEG files)")
        return path
    candidates = [(REPO_ROOT / BENCHMARK_DATASET_RELATIVE).resolve(),
                  (Path.cwd() / BENCHMARK_DATASET_RELATIVE).resolve()]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        "--images was not given and the default flowers12 folder is absent (looked in "
        + " and ".join(str(c) for c in dict.fromkeys(candidates))
        + "); pass --images DIR with JPEG files"
    )


def load_jpeg_bytes(images_dir: Path, max_images: int) -> list[tuple[str, bytes]]:
    """Up to ``max_images`` JPEG files under ``images_dir`` (sorted, recursive) as (relative name, bytes).

    The files are read once and held in memory, so the measurement never touches the disk.

    Raises:
        DatasetError: no JPEG file was found.
    """
    files = list_images(images_dir, extensions=JPEG_EXTENSIONS)
    out: list[tuple[str, bytes]] = []
    skipped = 0
    for path in files:
        if len(out) >= max_images:
            break
        data = path.read_bytes()
        if data[:2] != b"\xff\xd8":  # the JPEG SOI marker; a misnamed file would measure another codec
            skipped += 1
            continue
        out.append((str(path.relative_to(images_dir)), data))
    if skipped:
        log.warning("skipped %d file(s) with a .jpg name that are not JPEG data under %s", skipped, images_dir)
    if not out:
        raise DatasetError(f"no JPEG files (*.jpg, *.jpeg) under {images_dir}; pass --images DIR with JPEG files")
    return out
