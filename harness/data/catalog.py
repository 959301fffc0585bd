"""``load_dataset``: one entry point from a dataset name (as on the command line) to its splits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from common.errors import ConfigError, DatasetError, DownloadError
from .demo import cache_dir, ensure_demo
from .download import DATASET_RESOURCES, ensure_resources
from .official import OFFICIAL, read_official, resolve_root
from .sources import assemble, load_folder, load_list
from .types import DataReport, DatasetSplits


_GENERIC = ("demo", "folder", "list")


def dataset_names() -> list[str]:
    """Every name ``load_dataset`` accepts, in the order the CLI lists them."""
    return [*_GENERIC, *OFFICIAL]


def default_data_root(name: str) -> Path:
    """Where an official dataset is looked for (and downloaded to) without ``data_root``."""
    return cache_dir() / "datasets" / name


def _load_official(name: str, root: Path, *, download: bool, val_fraction: float, seed: int,
                   strict: bool, report: DataReport) -> DatasetSplits:
    ds = OFFICIAL[name]
    resolved, missing = resolve_root(ds, root)
    if missing and download:
        if name not in DATASET_RESOURCES:
            raise DatasetError(
                f"{name}: the official files can no longer be downloaded automatically; place them under {root} "
                f"as: {ds.layout.replace('ROOT', str(root))}"
            )
        try:
            report.downloads.extend(ensure_resources(name, root))
        except DownloadError as exc:
            raise DatasetError(f"{name}: download failed: {exc}") from exc
        resolved, missing = resolve_root(ds, root)
    if missing:
        hint = " (or pass download=True to fetch them)" if name in DATASET_RESOURCES else (
            " (not downloadable automatically: obtain the files from the dataset's authors)")
        raise DatasetError(
            f"{name}: missing {', '.join(str(resolved / m) for m in missing)}; expected layout: "
            f"{ds.layout.replace('ROOT', str(resolved))}{hint}"
        )
    classes, train, val, test = read_official(ds, resolved, seed)
    return assemble(name, classes, train, val, test, metric=ds.metric, report=report,
                    val_fraction=val_fraction, seed=seed, strict=strict)


def load_dataset(
    name: str,
    data_root: Optional[str | os.PathLike] = None,
    *,
    train_list: Optional[str | os.PathLike] = None,
    val_list: Optional[str | os.PathLike] = None,
    test_list: Optional[str | os.PathLike] = None,
    val_fraction: float = 0.1,
    test_fraction: Optional[float] = None,
    seed: int = 0,
    strict: bool = False,
    download: bool = False,
) -> DatasetSplits:
    """Resolve dataset ``name`` into train/val/test samples.

    ``demo`` is generated on first use (under ``data_root`` if given, else the cache);
    ``folder`` and ``list`` need ``data_root``; official datasets default to
    ``<cache>/datasets/<name>``. Where a dataset has no val split, a stratified
    ``val_fraction`` of train is carved off with ``seed`` (``report.val_carved``). A
    ``folder`` of flat class folders (``root/<class>/*.jpg``) also has ``test_fraction``
    (default 0.1) of each class carved off as test; ``test_fraction`` is refused elsewhere.
    Missing or empty files are recorded in ``report.skipped`` (``strict``: DatasetError).

    Raises:
        ConfigError: an unknown name or invalid argument.
        DatasetError: files are missing or malformed; the message names the file and the
            expected layout.
    """
    if name not in dataset_names():
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}")
    if isinstance(val_fraction, bool) or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if test_fraction is not None:
        if isinstance(test_fraction, bool) or not 0 < test_fraction < 1:
            raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        if name != "folder":
            raise ConfigError(f"test_fraction applies to dataset 'folder' with flat class folders, not {name!r}")
    if isinstance(seed, bool) or int(seed) != seed:
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    if name != "list" and any(v is not None for v in (train_list, val_list, test_list)):
        raise ConfigError(f"train_list/val_list/test_list only apply to dataset 'list', not {name!r}")
    report = DataReport(dataset=name)
    common = dict(val_fraction=float(val_fraction), seed=seed, strict=bool(strict), report=report)
    if name == "demo":
        return load_folder(ensure_demo(data_root), name="demo", **common)
    if name in ("folder", "list"):
        if data_root is None:
            raise ConfigError(f"dataset {name!r} needs data_root")
        root = Path(data_root)
        if not root.is_dir():
            raise DatasetError(f"{name}: data root {root} does not exist or is not a directory")
        if name == "folder":
            return load_folder(root, test_fraction=None if test_fraction is None else float(test_fraction), **common)
        return load_list(root, train_list=train_list, val_list=val_list, test_list=test_list, **common)
    root = Path(data_root) if data_root is not None else default_data_root(name)
    return _load_official(name, root, download=bool(download), **common)
