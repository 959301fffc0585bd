"""Generic sources: image folders and PaddleClas list files, and the split assembly all adapters share."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from common.errors import DatasetError
from .files import list_images
from .splits import check_files, stratified_split
from .types import DataReport, DatasetSplits, Sample

log = logging.getLogger(__name__)

def assemble(
    name: str,
    classes: Sequence[str],
    train: Sequence[Sample],
    val: Sequence[Sample],
    test: Sequence[Sample],
    *,
    metric: str,
    report: DataReport,
    val_fraction: float,
    seed: int,
    strict: bool,
) -> DatasetSplits:
    """Check files, carve a stratified val split out of train when ``val`` is empty, and build the splits.

    Raises:
        DatasetError: a split is empty, a label is out of range, or a file appears in two splits.
    """
    classes = tuple(str(c) for c in classes)
    if len(set(classes)) != len(classes):
        raise DatasetError(f"{name}: duplicate class names in {classes!r}")
    for split_name, samples in (("train", train), ("val", val), ("test", test)):
        for s in samples:
            if not 0 <= s.label < len(classes):
                raise DatasetError(f"{name}: {s.path} has label {s.label}, outside 0..{len(classes) - 1} ({split_name} split)")
    train = check_files(train, report, strict=strict, split="train")
    val = check_files(val, report, strict=strict, split="val")
    test = check_files(test, report, strict=strict, split="test")
    if not train:
        raise DatasetError(f"{name}: the train split has no usable images")
    if not val:
        train, val = stratified_split(train, val_fraction, seed)
        report.val_carved = True
        report.carving.setdefault("val_fraction", val_fraction)
        report.carving.setdefault("seed", seed)
        log.info("%s: carved a stratified val split of %d images (%.0f%%, seed %d) out of train",
                 name, len(val), 100 * val_fraction, seed)
        if not val:
            raise DatasetError(f"{name}: train is too small to carve a val split ({len(train)} images)")
    if not test:
        raise DatasetError(f"{name}: the test split has no usable images")
    seen: dict[str, str] = {}
    for split_name, samples in (("train", train), ("val", val), ("test", test)):
        for s in samples:
            other = seen.setdefault(s.path, split_name)
            if other != split_name:
                raise DatasetError(f"{name}: {s.path} is in both the {other} and the {split_name} split")
    report.dataset = name
    report.counts = {"train": len(train), "val": len(val), "test": len(test), "classes": len(classes)}
    return DatasetSplits(
        name=name, classes=classes, train=tuple(train), val=tuple(val), test=tuple(test), metric=metric, report=report
    )


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def _flat_class_dirs(root: Path) -> list[str]:
    """Sub-folders of ``root`` that hold images themselves (the flat ``root/<class>/*.jpg`` layout)."""
    return [c for c in _class_dirs(root) if list_images(root / c, recursive=False)]


def _load_flat_folder(root: Path, *, name: str, val_fraction: float, test_fraction: float, seed: int,
                      strict: bool, report: DataReport) -> DatasetSplits:
    """``root/<class>/*``: test, then val, carved per class (seeded, stratified) out of all images.

    ``test_fraction`` and ``val_fraction`` are shares of each class's images; the rest
    trains. Carving happens before the files are checked, so a damaged file does not move
    other images between splits; it is dropped from the split it was carved into.
    """
    if val_fraction + test_fraction >= 1:
        raise DatasetError(
            f"{name}: --val-fraction {val_fraction} + --test-fraction {test_fraction} leaves no training images "
            f"(their sum must be below 1)"
        )
    classes = [c for c in _class_dirs(root) if list_images(root / c)]
    for empty in sorted(set(_class_dirs(root)) - set(classes)):
        report.add_note(f"{root / empty} holds no images and is not a class")
        log.warning("%s: %s holds no images; it is not a class", name, root / empty)
    index = {c: i for i, c in enumerate(classes)}
    everything = [Sample(os.path.abspath(p), index[c]) for c in classes for p in list_images(root / c)]
    # Each class keeps at least 2 images for train and val; smaller classes only train.
    rest, test = stratified_split(everything, test_fraction, seed, min_keep=2)
    train, val = stratified_split(rest, val_fraction / (1 - test_fraction), seed + 1)
    report.val_carved = True
    report.test_carved = True
    report.carving = {"layout": "flat class folders", "val_fraction": val_fraction, "test_fraction": test_fraction,
                      "seed": seed}
    report.add_note(f"{root} has class folders without train/val/test: val ({val_fraction:g}) and test "
                    f"({test_fraction:g}) carved per class with seed {seed}")
    log.info("%s: flat class folders; carved %d test and %d val images (seed %d)", name, len(test), len(val), seed)
    if not test:
        raise DatasetError(f"{name}: {root} is too small to carve a test split (each class needs 3 images or more)")
    return assemble(name, classes, train, val, test, metric="top1", report=report,
                    val_fraction=val_fraction, seed=seed, strict=strict)


def load_folder(
    root: str | os.PathLike, *, name: str = "folder", val_fraction: float, seed: int, strict: bool, report: DataReport,
    test_fraction: Optional[float] = None,
) -> DatasetSplits:
    """Image folders ``root/{train,val,test}/<class>/*``, or flat class folders ``root/<class>/*``.

    Classes are the sorted names of ``train/``'s sub-folders; ``val/`` and ``test/`` may
    only use those. Without ``val/``, val is carved from train. Without ``test/`` but
    with ``val/``, the given ``val/`` becomes the held-out test split and val is carved
    from train (so hyperparameters are never chosen on the images that are reported).
    Without ``train/``, sub-folders of ``root`` that hold images are the classes, and test
    (``test_fraction``, default 0.1) and val are carved from them.
    """
    root = Path(root)
    train_dir = root / "train"
    if not train_dir.is_dir():
        if _flat_class_dirs(root):
            return _load_flat_folder(root, name=name, val_fraction=val_fraction,
                                     test_fraction=0.1 if test_fraction is None else test_fraction,
                                     seed=seed, strict=strict, report=report)
        raise DatasetError(
            f"{name}: {train_dir} not found and {root} has no class folders with images; expected "
            f"{root}/<class>/*.jpg, or {root}/train/<class>/*.jpg with optional {root}/val/<class>/ and {root}/test/<class>/"
        )
    if test_fraction is not None:
        raise DatasetError(
            f"{name}: --test-fraction applies to flat class folders ({root}/<class>/*.jpg); {root} has train/, "
            f"so its test split comes from test/ (or val/)"
        )
    classes = _class_dirs(train_dir)
    if not classes:
        raise DatasetError(f"{name}: {train_dir} has no class sub-folders (expected train/<class>/*.jpg)")
    index = {c: i for i, c in enumerate(classes)}

    def read_split(split: str) -> Optional[list[Sample]]:
        split_dir = root / split
        if not split_dir.is_dir():
            return None
        samples: list[Sample] = []
        for cls in _class_dirs(split_dir):
            if cls not in index:
                raise DatasetError(f"{name}: class folder {split_dir / cls} does not exist in {train_dir}")
            samples.extend(Sample(os.path.abspath(p), index[cls]) for p in list_images(split_dir / cls))
        return samples

    train = read_split("train") or []
    val = read_split("val")
    test = read_split("test")
    if test is None:
        if val is None:
            raise DatasetError(
                f"{name}: {root} has train/ but neither test/ nor val/; a held-out split is needed "
                f"(or lay the class folders out flat, {root}/<class>/*.jpg, to carve val and test from them)"
            )
        report.add_note(f"{root / 'val'} used as the test split (no test/ folder); val carved from train")
        log.info("%s: no test/ folder, using val/ as test and carving val from train", name)
        test, val = val, None
    return assemble(name, classes, train, val or [], test, metric="top1", report=report,
                    val_fraction=val_fraction, seed=seed, strict=strict)


def _resolve_list(path: str | os.PathLike, root: Path, what: str) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_absolute() and (root / p).is_file():
        return root / p
    raise DatasetError(f"{what} file {path} not found (looked in the current directory and in {root})")


def parse_list_file(list_path: Path, root: Path) -> list[Sample]:
    """Read a PaddleClas list file (``relative/path.jpg label`` per line, blank lines allowed).

    The path may contain spaces (the label is the last field). Paths are relative to ``root``.

    Raises:
        DatasetError: naming the file and line number of a malformed line.
    """
    samples: list[Sample] = []
    with open(list_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise DatasetError(f"{list_path}:{lineno}: expected 'relative/path.jpg label', got {line!r}")
            rel, label_text = parts
            try:
                label = int(label_text)
            except ValueError:
                raise DatasetError(f"{list_path}:{lineno}: label must be an integer, got {label_text!r}") from None
            if label < 0:
                raise DatasetError(f"{list_path}:{lineno}: label must be >= 0, got {label}")
            samples.append(Sample(os.path.abspath(root / rel), label))
    return samples


def _read_label_names(path: Path) -> list[str]:
    names: dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(None, 1)
            try:
                idx = int(parts[0])
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: expected 'id name', got {line!r}") from None
            if idx in names:
                raise DatasetError(f"{path}:{lineno}: class id {idx} appears twice")
            names[idx] = parts[1].strip() if len(parts) > 1 else str(idx)
    if sorted(names) != list(range(len(names))):
        raise DatasetError(f"{path}: class ids must be 0..{len(names) - 1} without gaps, got {sorted(names)}")
    return [names[i] for i in range(len(names))]


def load_list(
    root: str | os.PathLike,
    *,
    train_list: str | os.PathLike | None,
    val_list: str | os.PathLike | None,
    test_list: str | os.PathLike | None,
    val_fraction: float,
    seed: int,
    strict: bool,
    report: DataReport,
) -> DatasetSplits:
    """PaddleClas list files relative to ``root``; class names from ``root/label_list.txt`` if present.

    Without a test list the val list becomes the held-out test split and val is carved
    from train (as for folders); without a val list val is carved from train.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"list: data root {root} is not a directory")
    if train_list is None:
        raise DatasetError("list: train_list is required for dataset 'list'")
    def read(list_file: str | os.PathLike, what: str) -> list[Sample]:
        path = _resolve_list(list_file, root, what)
        samples = parse_list_file(path, root)
        if not samples:  # caught here: an empty split would fail later with no file named
            raise DatasetError(f"list: {what} {path} has no samples; expected lines of 'relative/path.jpg label'")
        return samples

    train = read(train_list, "train_list")
    val = read(val_list, "val_list") if val_list is not None else None
    test = read(test_list, "test_list") if test_list is not None else None
    if test is None:
        if val is None:
            raise DatasetError("list: give test_list or val_list; a held-out split is needed")
        report.add_note(f"{val_list} used as the test split (no test list); val carved from train")
        test, val = val, None
    label_file = root / "label_list.txt"
    max_label = max(s.label for s in (*train, *(val or []), *test))
    if label_file.is_file():
        classes = _read_label_names(label_file)
        if max_label >= len(classes):
            raise DatasetError(f"list: label {max_label} used but {label_file} names only {len(classes)} classes")
    else:
        classes = [str(i) for i in range(max_label + 1)]
    return assemble("list", classes, train, val or [], test, metric="top1", report=report,
                    val_fraction=val_fraction, seed=seed, strict=strict)
