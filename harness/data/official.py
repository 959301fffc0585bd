"""Adapters for the official on-disk formats of the transfer-learning benchmark datasets.

Each adapter reads the files exactly as the dataset's site distributes them (after
extraction) and returns class names and train/val/test samples; val is empty where
the dataset has no official val split (it is then carved from train).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from common.errors import DatasetError
from .files import list_images
from .splits import fixed_count_split
from .types import Sample


Samples = list[Sample]
AdapterResult = tuple[list[str], Samples, Samples, Samples]


@dataclass(frozen=True)
class OfficialDataset:
    """How to find and read one official dataset.

    ``markers`` are paths that must exist under the root; ``nested`` is the folder
    the official archive extracts to, accepted as an alternative root.
    """

    name: str
    metric: str
    markers: tuple[str, ...]
    layout: str
    reader: Callable[[Path, int], AdapterResult]
    nested: Optional[str] = None


def _loadmat(path: Path):
    # Imported lazily: scipy is only needed for the .mat based datasets.
    import scipy.io

    try:
        return scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several unrelated types for a corrupt file
        raise DatasetError(f"{path}: cannot read MATLAB file ({exc})") from exc


def _mat_field(mat: dict, key: str, path: Path) -> np.ndarray:
    if key not in mat:
        raise DatasetError(f"{path}: variable {key!r} not found (has {sorted(k for k in mat if not k.startswith('__'))})")
    return np.atleast_1d(mat[key])


def _read_lines(path: Path) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]


# --- Oxford Flowers-102 -------------------------------------------------------------------


def _flowers102(root: Path, seed: int) -> AdapterResult:
    labels = _mat_field(_loadmat(root / "imagelabels.mat"), "labels", root / "imagelabels.mat").astype(np.int64)
    setid = _loadmat(root / "setid.mat")
    num_classes = int(labels.max())
    if labels.min() < 1:
        raise DatasetError(f"{root / 'imagelabels.mat'}: labels must be 1-based, found {int(labels.min())}")

    def split(key: str) -> Samples:
        ids = _mat_field(setid, key, root / "setid.mat").astype(np.int64)
        out = []
        for image_id in sorted(ids.tolist()):
            if not 1 <= image_id <= len(labels):
                raise DatasetError(f"{root / 'setid.mat'}: {key} has image id {image_id}, outside 1..{len(labels)}")
            out.append(Sample(str(root / "jpg" / f"image_{image_id:05d}.jpg"), int(labels[image_id - 1]) - 1))
        return out

    classes = [str(i) for i in range(1, num_classes + 1)]
    return classes, split("trnid"), split("valid"), split("tstid")


# --- Oxford-IIIT Pets -----------------------------------------------------------------------


def _pets(root: Path, seed: int) -> AdapterResult:
    names: dict[int, str] = {}

    def split(filename: str) -> Samples:
        path = root / "annotations" / filename
        out = []
        for lineno, line in _read_lines(path):
            if line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise DatasetError(f"{path}:{lineno}: expected 'Image CLASS-ID SPECIES BREED-ID', got {line!r}")
            image, class_id = parts[0], int(parts[1])
            breed = image.rsplit("_", 1)[0]
            if names.setdefault(class_id, breed) != breed:
                raise DatasetError(f"{path}:{lineno}: class id {class_id} is {names[class_id]!r} elsewhere, {breed!r} here")
            out.append(Sample(str(root / "images" / f"{image}.jpg"), class_id - 1))
        return out

    train = split("trainval.txt")
    test = split("test.txt")
    if sorted(names) != list(range(1, len(names) + 1)):
        raise DatasetError(f"{root / 'annotations'}: class ids must be 1..{len(names)}, got {sorted(names)}")
    return [names[i] for i in range(1, len(names) + 1)], train, [], test


# --- Describable Textures (DTD) -------------------------------------------------------------


def _dtd_reader(partition: int) -> Callable[[Path, int], AdapterResult]:
    def read(root: Path, seed: int) -> AdapterResult:
        files = {s: root / "labels" / f"{s}{partition}.txt" for s in ("train", "val", "test")}
        entries = {s: [line for _, line in _read_lines(p)] for s, p in files.items()}
        classes = sorted({e.split("/", 1)[0] for lines in entries.values() for e in lines})
        index = {c: i for i, c in enumerate(classes)}
        splits = {s: [Sample(str(root / "images" / e), index[e.split("/", 1)[0]]) for e in lines] for s, lines in entries.items()}
        return classes, splits["train"], splits["val"], splits["test"]

    return read


# --- FGVC Aircraft --------------------------------------------------------------------------


def _aircraft(root: Path, seed: int) -> AdapterResult:
    data = root / "data"

    def read(split: str) -> list[tuple[str, str]]:
        path = data / f"images_variant_{split}.txt"
        out = []
        for lineno, line in _read_lines(path):
            parts = line.split(" ", 1)  # variant names contain spaces and slashes ("F/A-18", "Boeing 707")
            if len(parts) != 2 or not parts[1].strip():
                raise DatasetError(f"{path}:{lineno}: expected 'IMAGE-ID VARIANT', got {line!r}")
            out.append((parts[0], parts[1].strip()))
        return out

    rows = {s: read(s) for s in ("train", "val", "test")}
    variants_file = data / "variants.txt"
    if variants_file.is_file():
        classes = [line for _, line in _read_lines(variants_file)]
    else:
        classes = sorted({v for lines in rows.values() for _, v in lines})
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, Samples] = {}
    for s, lines in rows.items():
        missing = sorted({v for _, v in lines if v not in index})
        if missing:
            raise DatasetError(f"{data / f'images_variant_{s}.txt'}: variants {missing[:5]} not in {variants_file}")
        splits[s] = [Sample(str(data / "images" / f"{image}.jpg"), index[v]) for image, v in lines]
    return classes, splits["train"], splits["val"], splits["test"]


# --- Stanford Cars ----------------------------------------------------------------------------


def _cars_annotations(path: Path, folder: Path, num_classes: int) -> Samples:
    annos = _mat_field(_loadmat(path), "annotations", path)
    out = []
    for i, a in enumerate(annos):
        try:
            fname, cls = str(a.fname), int(a.__dict__["class"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: annotation {i} lacks the 'fname'/'class' fields ({exc})") from exc
        if not 1 <= cls <= num_classes:
            raise DatasetError(f"{path}: annotation {i} ({fname}) has class {cls}, outside 1..{num_classes}")
        out.append(Sample(str(folder / fname), cls - 1))
    return out


def _cars_test_file(root: Path) -> Path:
    for candidate in (root / "cars_test_annos_withlabels.mat", root / "devkit" / "cars_test_annos_withlabels.mat"):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"cars: cars_test_annos_withlabels.mat not found in {root} or {root / 'devkit'}; the devkit's "
        "cars_test_annos.mat has no labels, the labelled file is distributed separately"
    )


def _cars(root: Path, seed: int) -> AdapterResult:
    meta_path = root / "devkit" / "cars_meta.mat"
    classes = [str(c) for c in _mat_field(_loadmat(meta_path), "class_names", meta_path)]
    train = _cars_annotations(root / "devkit" / "cars_train_annos.mat", root / "cars_train", len(classes))
    test = _cars_annotations(_cars_test_file(root), root / "cars_test", len(classes))
    return classes, train, [], test


# --- Caltech101 -----------------------------------------------------------------------------

CALTECH_TRAIN_PER_CLASS = 30


def _caltech101(root: Path, seed: int) -> AdapterResult:
    cat_root = root / "101_ObjectCategories"
    classes = sorted(d.name for d in cat_root.iterdir() if d.is_dir() and d.name != "BACKGROUND_Google" and not d.name.startswith("."))
    samples = []
    for label, cls in enumerate(classes):
        samples.extend(Sample(str(path), label) for path in list_images(cat_root / cls, recursive=False))
    # No official split: the common protocol (Kornblith et al. 2019) takes 30 random
    # images per class for training and tests on the rest; seeded, so reproducible.
    train, test = fixed_count_split(samples, CALTECH_TRAIN_PER_CLASS, seed)
    return classes, list(train), [], list(test)


# --- Food-101 -------------------------------------------------------------------------------


def _food101(root: Path, seed: int) -> AdapterResult:
    classes = [line for _, line in _read_lines(root / "meta" / "classes.txt")]
    index = {c: i for i, c in enumerate(classes)}

    def split(filename: str) -> Samples:
        path = root / "meta" / filename
        try:
            with open(path, encoding="utf-8") as f:
                table = json.load(f)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: invalid JSON ({exc})") from exc
        if not isinstance(table, dict):
            raise DatasetError(f"{path}: expected an object mapping class → ['class/id', ...]")
        out = []
        for cls, entries in sorted(table.items()):
            if cls not in index:
                raise DatasetError(f"{path}: class {cls!r} is not in {root / 'meta' / 'classes.txt'}")
            out.extend(Sample(str(root / "images" / f"{e}.jpg"), index[cls]) for e in entries)
        return out

    return classes, split("train.json"), [], split("test.json")


# --- SUN397 ---------------------------------------------------------------------------------


def _sun397_reader(partition: int) -> Callable[[Path, int], AdapterResult]:
    def read(root: Path, seed: int) -> AdapterResult:
        class_file = root / "ClassName.txt"
        if not class_file.is_file():
            class_file = root / "Partitions" / "ClassName.txt"
        class_ids = [line for _, line in _read_lines(class_file)]
        index = {c: i for i, c in enumerate(class_ids)}

        def split(filename: str) -> Samples:
            path = root / "Partitions" / filename
            out = []
            for lineno, line in _read_lines(path):
                cls = line.rsplit("/", 1)[0]
                if cls not in index:
                    raise DatasetError(f"{path}:{lineno}: class {cls!r} of {line!r} is not in {class_file}")
                out.append(Sample(str(root / line.lstrip("/")), index[cls]))
            return out

        # "/a/abbey" → "abbey", "/b/bakery/shop" → "bakery/shop": the leading letter is only a bucket.
        classes = [c.lstrip("/").split("/", 1)[-1] for c in class_ids]
        return classes, split(f"Training_{partition:02d}.txt"), [], split(f"Testing_{partition:02d}.txt")

    return read


OFFICIAL: dict[str, OfficialDataset] = {
    d.name: d
    for d in (
        OfficialDataset(
            "flowers102", "mean_per_class", ("jpg", "imagelabels.mat", "setid.mat"),
            "ROOT/jpg/image_00001.jpg ..., ROOT/imagelabels.mat, ROOT/setid.mat (trnid/valid/tstid)",
            _flowers102,
        ),
        OfficialDataset(
            "pets", "mean_per_class", ("images", "annotations/trainval.txt", "annotations/test.txt"),
            "ROOT/images/<Breed>_<n>.jpg, ROOT/annotations/trainval.txt and test.txt ('Image CLASS-ID SPECIES BREED-ID')",
            _pets,
        ),
        OfficialDataset(
            "dtd", "top1", ("images", "labels/train1.txt", "labels/val1.txt", "labels/test1.txt"),
            "ROOT/images/<class>/<class>_NNNN.jpg, ROOT/labels/{train,val,test}1.txt ('<class>/<file>.jpg' lines)",
            _dtd_reader(1), nested="dtd",
        ),
        OfficialDataset(
            "aircraft", "mean_per_class",
            ("data/images", "data/images_variant_train.txt", "data/images_variant_val.txt", "data/images_variant_test.txt"),
            "ROOT/data/images/<id>.jpg, ROOT/data/images_variant_{train,val,test}.txt ('<id> <variant>' lines)",
            _aircraft, nested="fgvc-aircraft-2013b",
        ),
        OfficialDataset(
            "cars", "top1", ("cars_train", "cars_test", "devkit/cars_train_annos.mat", "devkit/cars_meta.mat"),
            "ROOT/cars_train/*.jpg, ROOT/cars_test/*.jpg, ROOT/devkit/cars_train_annos.mat, ROOT/devkit/cars_meta.mat, "
            "and ROOT/cars_test_annos_withlabels.mat (or in ROOT/devkit/)",
            _cars,
        ),
        OfficialDataset(
            "caltech101", "mean_per_class", ("101_ObjectCategories",),
            "ROOT/101_ObjectCategories/<class>/image_NNNN.jpg (BACKGROUND_Google is ignored)",
            _caltech101, nested="caltech-101",
        ),
        OfficialDataset(
            "food101", "top1", ("images", "meta/classes.txt", "meta/train.json", "meta/test.json"),
            "ROOT/images/<class>/<id>.jpg, ROOT/meta/classes.txt, ROOT/meta/train.json and test.json",
            _food101, nested="food-101",
        ),
        OfficialDataset(
            "sun397", "top1", ("Partitions/Training_01.txt", "Partitions/Testing_01.txt"),
            "ROOT/ClassName.txt ('/a/abbey' lines), ROOT/Partitions/Training_01.txt and Testing_01.txt, "
            "images at ROOT/a/abbey/sun_*.jpg",
            _sun397_reader(1), nested="SUN397",
        ),
    )
}


def resolve_root(ds: OfficialDataset, root: Path) -> tuple[Path, list[str]]:
    """The folder holding ``ds``'s files (``root`` or its archive sub-folder) and the markers missing there."""
    candidates = [root] + ([root / ds.nested] if ds.nested else [])
    best: Optional[tuple[Path, list[str]]] = None
    for candidate in candidates:
        missing = [m for m in ds.markers if not (candidate / m).exists()]
        if not missing:
            return candidate, []
        if best is None or len(missing) < len(best[1]):
            best = (candidate, missing)
    assert best is not None
    return best


def read_official(ds: OfficialDataset, root: Path, seed: int) -> AdapterResult:
    """Run ``ds``'s reader on a root whose markers are all present, turning I/O errors into DatasetError."""
    try:
        return ds.reader(root, seed)
    except FileNotFoundError as exc:
        raise DatasetError(f"{ds.name}: missing {exc.filename}; expected layout: {ds.layout.replace('ROOT', str(root))}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{ds.name}: a text file under {root} is not UTF-8 ({exc})") from exc
