"""Dataset adapters on tiny fixtures written in each dataset's real on-disk format."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from harness.data import DatasetSplits, Sample, dataset_names, load_dataset
from harness.data.splits import stratified_split
from common.errors import ConfigError, DatasetError


def _all_paths(ds: DatasetSplits) -> list[str]:
    return [s.path for split in (ds.train, ds.val, ds.test) for s in split]


def _assert_disjoint(ds: DatasetSplits) -> None:
    paths = _all_paths(ds)
    assert len(paths) == len(set(paths)), "a file appears in two splits"


def test_dataset_names_cover_every_source():
    assert dataset_names() == [
        "demo", "folder", "list", "flowers102", "pets", "dtd", "aircraft", "cars", "caltech101", "food101", "sun397",
    ]


def test_unknown_name_and_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("folder", "/tmp", val_fraction=1.5)
    with pytest.raises(ConfigError, match="needs data_root"):
        load_dataset("folder")
    with pytest.raises(ConfigError, match="only apply to dataset 'list'"):
        load_dataset("folder", "/tmp", train_list="x.txt")


# --- splits -------------------------------------------------------------------------------


def _samples(counts: dict[int, int]) -> list[Sample]:
    return [Sample(f"/d/{label}/{i:03d}.jpg", label) for label, n in counts.items() for i in range(n)]


def test_stratified_split_is_stratified_disjoint_and_order_independent():
    samples = _samples({0: 50, 1: 20, 2: 10, 3: 1})
    kept, held = stratified_split(samples, 0.2, seed=3)
    counts = collections.Counter(s.label for s in held)
    assert counts == {0: 10, 1: 4, 2: 2}  # the single-image class stays in train
    assert not set(kept) & set(held)
    assert set(kept) | set(held) == set(samples)
    shuffled = list(samples)
    np.random.default_rng(1).shuffle(shuffled)
    assert stratified_split(shuffled, 0.2, seed=3) == (kept, held)
    assert stratified_split(samples, 0.2, seed=4)[1] != held


# --- folder ---------------------------------------------------------------------------------


def test_folder_carves_val_when_missing(image_folder_dataset):
    root = image_folder_dataset({"train": 10, "test": 4})
    ds = load_dataset("folder", root, seed=0)
    assert ds.classes == ("a", "b", "c")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 12)
    assert ds.report.val_carved and ds.metric == "top1"
    assert collections.Counter(s.label for s in ds.val) == {0: 1, 1: 1, 2: 1}
    _assert_disjoint(ds)
    again = load_dataset("folder", root, seed=0)
    assert again.val == ds.val and again.train == ds.train
    assert all(Path(s.path).is_absolute() for s in ds.train)


def test_folder_with_val_keeps_it(image_folder_dataset):
    ds = load_dataset("folder", image_folder_dataset({"train": 4, "val": 2, "test": 2}))
    assert not ds.report.val_carved
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 6, 6)
    assert all("/val/" in s.path for s in ds.val)


def test_folder_without_test_uses_val_as_test(image_folder_dataset):
    ds = load_dataset("folder", image_folder_dataset({"train": 10, "val": 3}))
    assert all("/val/" in s.path for s in ds.test) and len(ds.test) == 9
    assert ds.report.val_carved and any("test split" in n for n in ds.report.notes)


def test_folder_errors(image_folder_dataset, tmp_path):
    root = image_folder_dataset({"train": 3, "test": 1})
    (root / "test" / "zebra").mkdir()
    with pytest.raises(DatasetError, match="zebra"):
        load_dataset("folder", root)
    only_train = image_folder_dataset({"train": 3}, name="only_train")
    with pytest.raises(DatasetError, match="neither test/ nor val/"):
        load_dataset("folder", only_train)
    with pytest.raises(DatasetError, match="train not found"):
        load_dataset("folder", tmp_path)


def test_folder_reports_empty_files_and_strict_raises(image_folder_dataset):
    root = image_folder_dataset({"train": 5, "test": 2})
    empty = root / "train" / "b" / "999.jpg"
    empty.write_bytes(b"")
    ds = load_dataset("folder", root)
    assert ds.report.skipped == [(str(empty), "empty file", "train")]
    assert str(empty) not in _all_paths(ds)
    with pytest.raises(DatasetError, match="999.jpg: empty file"):
        load_dataset("folder", root, strict=True)


def test_flowers12_folder(flowers12_root):
    ds = load_dataset("folder", flowers12_root, seed=0)
    assert len(ds.classes) == 12
    assert len(ds.train) + len(ds.val) == 720 and len(ds.test) == 240
    assert ds.report.val_carved
    assert set(collections.Counter(s.label for s in ds.val).values()) == {6}
    _assert_disjoint(ds)
    assert ds.report.to_dict()["counts"] == {"train": 648, "val": 72, "test": 240, "classes": 12}


# --- list -----------------------------------------------------------------------------------


def _list_fixture(root: Path, write_image) -> None:
    lines = {"train": [], "val": [], "test": []}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        for label in range(3):
            for i in range(n):
                rel = f"imgs/{split} dir/{label}_{i}.jpg"  # a space in the path
                write_image(root / rel, seed=label * 100 + i)
                lines[split].append(f"{rel} {label}")
    for split, rows in lines.items():
        (root / f"{split}_list.txt").write_text("\n".join(rows) + "\n\n")


def test_list_source(tmp_path, write_image):
    _list_fixture(tmp_path, write_image)
    (tmp_path / "label_list.txt").write_text("0 cat\n1 dog\n2 bird\n")
    ds = load_dataset("list", tmp_path, train_list="train_list.txt", val_list="val_list.txt",
                      test_list=str(tmp_path / "test_list.txt"))
    assert ds.classes == ("cat", "dog", "bird")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 9)
    assert not ds.report.val_carved
    assert ds.train[0].path.startswith(str(tmp_path))
    # Without label_list.txt classes are named by id; without a test list val becomes test.
    (tmp_path / "label_list.txt").unlink()
    ds2 = load_dataset("list", tmp_path, train_list="train_list.txt", val_list="val_list.txt")
    assert ds2.classes == ("0", "1", "2") and ds2.report.val_carved and len(ds2.test) == 6


@pytest.mark.parametrize("bad_line, message", [
    ("imgs/x.jpg", "expected 'relative/path.jpg label'"),
    ("imgs/x.jpg seven", "label must be an integer"),
    ("imgs/x.jpg -1", "label must be >= 0"),
])
def test_list_bad_line_names_file_and_line(tmp_path, write_image, bad_line, message):
    _list_fixture(tmp_path, write_image)
    with open(tmp_path / "train_list.txt", "a") as f:
        f.write(bad_line + "\n")
    with pytest.raises(DatasetError, match=rf"train_list.txt:20: {message}"):
        load_dataset("list", tmp_path, train_list="train_list.txt", val_list="val_list.txt")


def test_list_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="train_list file nope.txt not found"):
        load_dataset("list", tmp_path, train_list="nope.txt", val_list="v.txt")


# --- official formats -----------------------------------------------------------------------


def test_flowers102(tmp_path, write_image):
    labels = np.array([1, 1, 1, 2, 2, 2, 3, 3, 3, 1, 2, 3], dtype=np.uint8)
    for i in range(1, len(labels) + 1):
        write_image(tmp_path / "jpg" / f"image_{i:05d}.jpg", seed=i)
    scipy.io.savemat(tmp_path / "imagelabels.mat", {"labels": labels[None, :]})
    scipy.io.savemat(tmp_path / "setid.mat", {
        "trnid": np.array([[1, 4, 7, 10, 11]], np.uint16),
        "valid": np.array([[2, 5, 8]], np.uint16),
        "tstid": np.array([[3, 6, 9, 12]], np.uint16),
    })
    ds = load_dataset("flowers102", tmp_path)
    assert ds.classes == ("1", "2", "3") and ds.metric == "mean_per_class"
    assert [Path(s.path).name for s in ds.val] == ["image_00002.jpg", "image_00005.jpg", "image_00008.jpg"]
    assert [s.label for s in ds.val] == [0, 1, 2]
    assert [s.label for s in ds.test] == [0, 1, 2, 2]
    assert not ds.report.val_carved
    _assert_disjoint(ds)


def test_pets(tmp_path, write_image):
    breeds = ["Abyssinian", "american_bulldog", "Bengal"]
    trainval, test = ["#Image CLASS-ID SPECIES BREED ID"], []
    for cid, breed in enumerate(breeds, 1):
        species = 1 if breed[0].isupper() else 2
        for i in range(1, 13):
            write_image(tmp_path / "images" / f"{breed}_{i}.jpg", seed=cid * 100 + i)
            (trainval if i <= 10 else test).append(f"{breed}_{i} {cid} {species} {i}")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "trainval.txt").write_text("\n".join(trainval) + "\n")
    (tmp_path / "annotations" / "test.txt").write_text("\n".join(test) + "\n")
    ds = load_dataset("pets", tmp_path, seed=1)
    assert ds.classes == tuple(breeds) and ds.metric == "mean_per_class"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 6)
    assert ds.report.val_carved
    assert {s.label for s in ds.test if "american_bulldog" in s.path} == {1}
    _assert_disjoint(ds)


def test_dtd_nested_archive_folder(tmp_path, write_image):
    root = tmp_path / "dtd"  # the official archive extracts to dtd/
    classes = ["banded", "zigzagged"]
    rows = {"train": [], "val": [], "test": []}
    for cls in classes:
        for i in range(9):
            rel = f"{cls}/{cls}_{i:04d}.jpg"
            write_image(root / "images" / rel, seed=i)
            rows[("train", "val", "test")[i % 3]].append(rel)
    (root / "labels").mkdir()
    for split, r in rows.items():
        (root / "labels" / f"{split}1.txt").write_text("\n".join(r) + "\n")
    ds = load_dataset("dtd", tmp_path)
    assert ds.classes == ("banded", "zigzagged") and ds.metric == "top1"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 6, 6)
    assert all(str(root / "images") in s.path for s in ds.train)


def test_aircraft_variants_with_spaces_and_slashes(tmp_path, write_image):
    variants = ["707-320", "Boeing 717", "F/A-18"]
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    rows = {"train": [], "val": [], "test": []}
    n = 0
    for v in variants:
        for split in ("train", "train", "val", "test"):
            n += 1
            image_id = f"{1000000 + n:07d}"
            write_image(data / "images" / f"{image_id}.jpg", seed=n)
            rows[split].append(f"{image_id} {v}")
    for split, r in rows.items():
        (data / f"images_variant_{split}.txt").write_text("\n".join(r) + "\n")
    ds = load_dataset("aircraft", tmp_path)
    assert ds.classes == tuple(variants) and ds.metric == "mean_per_class"
    assert [s.label for s in ds.test] == [0, 1, 2]
    assert len(ds.train) == 6 and not ds.report.val_carved


def _cars_struct(rows: list[tuple[str, int]]) -> np.ndarray:
    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    arr = np.zeros((1, len(rows)), dtype=dtype)
    for i, (fname, cls) in enumerate(rows):
        arr[0, i] = (np.uint8(1), np.uint8(2), np.uint8(20), np.uint8(18), np.uint8(cls), fname)
    return arr


@pytest.mark.parametrize("test_annos_in_devkit", [False, True])
def test_cars(tmp_path, write_image, test_annos_in_devkit):
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    train_rows, test_rows = [], []
    for i in range(1, 21):
        write_image(tmp_path / "cars_train" / f"{i:05d}.jpg", seed=i)
        train_rows.append((f"{i:05d}.jpg", 1 + i % 2))
    for i in range(1, 5):
        write_image(tmp_path / "cars_test" / f"{i:05d}.jpg", seed=100 + i)
        test_rows.append((f"{i:05d}.jpg", 1 + i % 2))
    (tmp_path / "devkit").mkdir()
    scipy.io.savemat(tmp_path / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    scipy.io.savemat(tmp_path / "devkit" / "cars_train_annos.mat", {"annotations": _cars_struct(train_rows)})
    test_dir = tmp_path / "devkit" if test_annos_in_devkit else tmp_path
    scipy.io.savemat(test_dir / "cars_test_annos_withlabels.mat", {"annotations": _cars_struct(test_rows)})
    ds = load_dataset("cars", tmp_path)
    assert ds.classes == tuple(names) and ds.metric == "top1"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 2, 4)
    assert [s.label for s in ds.test] == [1, 0, 1, 0]
    assert all("cars_test" in s.path for s in ds.test)


def test_cars_without_test_labels_names_the_file(tmp_path, write_image):
    for d in ("cars_train", "cars_test"):
        (tmp_path / d).mkdir()
    (tmp_path / "devkit").mkdir()
    scipy.io.savemat(tmp_path / "devkit" / "cars_meta.mat", {"class_names": np.array([["A", "B"]], dtype=object)})
    scipy.io.savemat(tmp_path / "devkit" / "cars_train_annos.mat", {"annotations": _cars_struct([("1.jpg", 1)])})
    with pytest.raises(DatasetError, match="cars_test_annos_withlabels.mat not found"):
        load_dataset("cars", tmp_path)


def test_caltech101_thirty_per_class(tmp_path, write_image):
    cat = tmp_path / "101_ObjectCategories"
    for c_i, cls in enumerate(["Faces", "accordion", "BACKGROUND_Google"]):
        for i in range(1, 36 + 4 * c_i):
            write_image(cat / cls / f"image_{i:04d}.jpg", size=(8, 8), seed=i)
    ds = load_dataset("caltech101", tmp_path, seed=5)
    assert ds.classes == ("Faces", "accordion") and ds.metric == "mean_per_class"
    assert collections.Counter(s.label for s in ds.train + ds.val) == {0: 30, 1: 30}
    assert collections.Counter(s.label for s in ds.test) == {0: 5, 1: 9}
    assert load_dataset("caltech101", tmp_path, seed=5).test == ds.test
    assert load_dataset("caltech101", tmp_path, seed=6).test != ds.test
    _assert_disjoint(ds)


def test_food101(tmp_path, write_image):
    root = tmp_path / "food-101"
    classes = ["apple_pie", "baby_back_ribs"]
    table = {"train": {}, "test": {}}
    for cls in classes:
        for i in range(12):
            write_image(root / "images" / cls / f"{1000 + i}.jpg", seed=i)
            table["train" if i < 10 else "test"].setdefault(cls, []).append(f"{cls}/{1000 + i}")
    (root / "meta").mkdir()
    (root / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    for split, t in table.items():
        (root / "meta" / f"{split}.json").write_text(json.dumps(t))
    ds = load_dataset("food101", tmp_path)
    assert ds.classes == tuple(classes)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 2, 4)


def test_sun397(tmp_path, write_image):
    class_ids = ["/a/abbey", "/b/bakery/shop"]
    (tmp_path / "ClassName.txt").write_text("\n".join(class_ids) + "\n")
    train, test = [], []
    for cid in class_ids:
        for i in range(12):
            rel = f"{cid}/sun_{i:04d}.jpg"
            write_image(tmp_path / rel.lstrip("/"), seed=i)
            (train if i < 10 else test).append(rel)
    (tmp_path / "Partitions").mkdir()
    (tmp_path / "Partitions" / "Training_01.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "Partitions" / "Testing_01.txt").write_text("\n".join(test) + "\n")
    ds = load_dataset("sun397", tmp_path)
    assert ds.classes == ("abbey", "bakery/shop")
    assert [s.label for s in ds.test] == [0, 0, 1, 1]
    assert ds.report.val_carved and len(ds.val) == 2


@pytest.mark.parametrize("name, missing", [
    ("flowers102", "imagelabels.mat"), ("pets", "trainval.txt"), ("dtd", "train1.txt"),
    ("aircraft", "images_variant_train.txt"), ("cars", "cars_meta.mat"), ("caltech101", "101_ObjectCategories"),
    ("food101", "classes.txt"), ("sun397", "Training_01.txt"),
])
def test_missing_official_files_say_what_and_where(tmp_path, name, missing):
    with pytest.raises(DatasetError, match="expected layout") as info:
        load_dataset(name, tmp_path)
    assert missing in str(info.value)


def test_non_downloadable_dataset_with_download_explains_placement(tmp_path):
    with pytest.raises(DatasetError, match="can no longer be downloaded automatically.*101_ObjectCategories"):
        load_dataset("caltech101", tmp_path, download=True)


def test_report_write_roundtrip(image_folder_dataset, tmp_path):
    ds = load_dataset("folder", image_folder_dataset())
    ds.report.add_skipped("/x.jpg", "empty file")
    out = ds.report.write(tmp_path / "out" / "data_report.json")
    data = json.loads(out.read_text())
    assert data["counts"]["train"] == 27 and data["val_carved"] is True
    assert data["skipped"] == [{"path": "/x.jpg", "reason": "empty file", "split": ""}]
    assert not ds.report.add_skipped("/x.jpg", "again")


def test_report_add_skipped_is_thread_safe():
    import threading

    from harness.data import DataReport

    report = DataReport()
    barrier = threading.Barrier(8)

    def add(worker: int) -> None:
        barrier.wait()
        for i in range(200):
            report.add_skipped(f"/img/{i % 50}.jpg", f"worker {worker}")

    threads = [threading.Thread(target=add, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p for p, _, _ in report.skipped) == sorted(f"/img/{i}.jpg" for i in range(50))


@pytest.mark.parametrize("empty", ["train", "test", "val"])
def test_list_empty_file_names_the_file(tmp_path, write_image, empty):
    _list_fixture(tmp_path, write_image)
    (tmp_path / f"{empty}_list.txt").write_text("\n  \n")  # blank lines only
    with pytest.raises(DatasetError, match=rf"{empty}_list .*{empty}_list.txt has no samples"):
        load_dataset("list", tmp_path, train_list="train_list.txt", val_list="val_list.txt",
                     test_list="test_list.txt")


def test_list_images_is_sorted_skips_hidden_and_filters_suffixes(tmp_path):
    from harness.data import JPEG_EXTENSIONS, list_images

    for rel in ("b/2.JPG", "b/1.png", "a.jpeg", "notes.txt", ".hidden.jpg", ".cache/x.jpg", "b/c/3.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    rel = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    assert rel(list_images(tmp_path)) == ["a.jpeg", "b/1.png", "b/2.JPG", "b/c/3.jpg"]
    assert rel(list_images(tmp_path, extensions=JPEG_EXTENSIONS)) == ["a.jpeg", "b/2.JPG", "b/c/3.jpg"]
    assert rel(list_images(tmp_path / "b", recursive=False)) == ["b/1.png", "b/2.JPG"]
    assert list_images(tmp_path / "missing") == []
