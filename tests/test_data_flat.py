"""Flat class folders (``root/<class>/*.jpg``): carved splits, bad files named with their split,
counts after they are dropped, and a training run from the command line."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from common.errors import ConfigError, DatasetError
from harness.data import load_dataset
from harness.data.image_io import probe_image_file


@pytest.fixture
def flat_root(tmp_path, write_image) -> Path:
    """``flat/<class>/NNN.jpg``: 3 classes × 20 images (and one class with 2 images)."""
    root = tmp_path / "flat"
    for c_i, cls in enumerate(("cat", "dog", "owl")):
        for i in range(20):
            write_image(root / cls / f"{i:03d}.jpg", seed=c_i * 100 + i)
    for i in range(2):
        write_image(root / "yak" / f"{i:03d}.png", seed=900 + i)
    return root


def _per_class(samples) -> dict[int, int]:
    return dict(collections.Counter(s.label for s in samples))


def test_flat_folders_carve_seeded_stratified_val_and_test(flat_root):
    ds = load_dataset("folder", flat_root, val_fraction=0.2, test_fraction=0.25, seed=3)
    assert ds.classes == ("cat", "dog", "owl", "yak")
    assert _per_class(ds.test) == {0: 5, 1: 5, 2: 5}  # round(0.25 * 20); yak (2 images) gives no test image
    assert _per_class(ds.val) == {0: 4, 1: 4, 2: 4, 3: 1}  # round(0.2 * 20) of the whole class
    assert _per_class(ds.train) == {0: 11, 1: 11, 2: 11, 3: 1}
    paths = [s.path for split in (ds.train, ds.val, ds.test) for s in split]
    assert len(paths) == len(set(paths)) == 62
    report = ds.report.to_dict()
    assert report["val_carved"] and report["test_carved"]
    assert report["carving"] == {"layout": "flat class folders", "val_fraction": 0.2, "test_fraction": 0.25, "seed": 3}
    assert report["counts"] == {"train": 34, "val": 13, "test": 15, "classes": 4}
    again = load_dataset("folder", flat_root, val_fraction=0.2, test_fraction=0.25, seed=3)
    assert (again.train, again.val, again.test) == (ds.train, ds.val, ds.test)
    other = load_dataset("folder", flat_root, val_fraction=0.2, test_fraction=0.25, seed=4)
    assert set(other.test) != set(ds.test)


def test_flat_folders_default_test_fraction_and_bad_fractions(flat_root, image_folder_dataset):
    ds = load_dataset("folder", flat_root)
    assert _per_class(ds.test) == {0: 2, 1: 2, 2: 2} and ds.report.carving["test_fraction"] == 0.1
    with pytest.raises(DatasetError, match="--val-fraction 0.5 \\+ --test-fraction 0.5 leaves no training images"):
        load_dataset("folder", flat_root, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="test_fraction must be in \\(0, 1\\)"):
        load_dataset("folder", flat_root, test_fraction=1.0)
    with pytest.raises(ConfigError, match="test_fraction applies to dataset 'folder'"):
        load_dataset("demo", test_fraction=0.2)
    split_root = image_folder_dataset({"train": 4, "test": 2})
    with pytest.raises(DatasetError, match="--test-fraction applies to flat class folders"):
        load_dataset("folder", split_root, test_fraction=0.2)


def test_flat_folders_drop_undecodable_files_naming_their_split(flat_root, tmp_path):
    good = (flat_root / "cat" / "000.jpg").read_bytes()
    ds0 = load_dataset("folder", flat_root, seed=1)
    victims = {"train": ds0.train[0].path, "val": ds0.val[0].path, "test": ds0.test[0].path}
    Path(victims["train"]).write_bytes(good[: len(good) // 2])  # truncated JPEG
    Path(victims["val"]).write_bytes(b"this is not an image at all")
    Path(victims["test"]).write_bytes(b"")
    (flat_root / "notes").mkdir()  # a folder without images is not a class, and is said so
    ds = load_dataset("folder", flat_root, seed=1)
    assert ds.classes == ds0.classes
    # The carving does not move because of a damaged file: only the damaged files are gone.
    assert set(ds.train) == set(ds0.train) - {s for s in ds0.train if s.path == victims["train"]}
    assert set(ds.val) | {s for s in ds0.val if s.path == victims["val"]} == set(ds0.val)
    skipped = {item["path"]: item for item in ds.report.to_dict()["skipped"]}
    assert {split: skipped[path]["split"] for split, path in victims.items()} == {s: s for s in victims}
    assert skipped[victims["train"]]["reason"].startswith("truncated JPEG")
    assert skipped[victims["test"]]["reason"] == "empty file"
    assert ds.report.counts["train"] == len(ds0.train) - 1 == len(ds.train)
    assert ds.report.counts["val"] == len(ds0.val) - 1 and ds.report.counts["test"] == len(ds0.test) - 1
    assert any("notes holds no images" in n for n in ds.report.notes)
    with pytest.raises(DatasetError, match="strict mode"):
        load_dataset("folder", flat_root, seed=1, strict=True)


def test_probe_image_file(tmp_path, write_image):
    jpg = write_image(tmp_path / "a.jpg", size=(40, 40))
    png = write_image(tmp_path / "b.png", size=(40, 40))
    assert probe_image_file(jpg) is None and probe_image_file(png) is None
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[:-20])
    assert probe_image_file(cut) == "truncated PNG (no IEND chunk)"
    assert probe_image_file(tmp_path / "missing.jpg") == "file not found"
    text = tmp_path / "t.jpg"
    text.write_bytes(b"hello")
    assert probe_image_file(text).startswith("not a decodable image")
    # A large JPEG is judged from its first and last 64 KiB.
    big = write_image(tmp_path / "big.jpg", size=(900, 900))
    assert big.stat().st_size > 256 * 1024 and probe_image_file(big) is None
    cut_big = tmp_path / "cut_big.jpg"
    cut_big.write_bytes(big.read_bytes()[:-1000])
    assert probe_image_file(cut_big).startswith("truncated JPEG")


def test_loader_takes_a_dropped_file_off_its_split_count(flat_root):
    from harness.data import DataLoader, EvalTransform
    from harness.preprocess_spec import PreprocessSpec

    ds = load_dataset("folder", flat_root, seed=1)
    before = ds.report.counts["val"]
    # Damaged after listing (passes the probe's structural check, fails to decode): dropped by the loader.
    victim = Path(ds.val[0].path)
    data = bytearray(victim.read_bytes())
    sos = data.rfind(b"\xff\xda")
    data[sos + 2 : sos + 40] = b"\xff\x00" * 19  # nonsense scan header
    victim.write_bytes(bytes(data))
    loader = DataLoader(ds.val, EvalTransform(PreprocessSpec.for_crop(8)), batch_size=4, shuffle=False,
                        report=ds.report, split="val")
    n = sum(len(labels) for _, labels in loader)
    if n == len(ds.val):
        pytest.skip("this OpenCV build decoded the damaged scan anyway")
    assert ds.report.counts["val"] == before - 1 == n
    assert ds.report.skipped_in("val")[0]["path"] == str(victim)


def test_bench_train_on_flat_folders(flat_root, tmp_path, capsys):
    pytest.importorskip("paddle")
    from bench.cli import main

    rc = main(["-q", "train", "--dataset", "folder", "--data-root", str(flat_root), "--model", "ResNet_tiny",
               "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--max-steps-per-epoch", "2",
               "--test-fraction", "0.2", "--out-dir", str(tmp_path / "runs"), "--run-name", "flat", "--json"])
    assert rc == 0
    run_dir = tmp_path / "runs" / "flat"
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["test_carved"] and report["carving"]["test_fraction"] == 0.2
    assert report["counts"]["test"] == 12 and report["counts"]["classes"] == 4
    assert (run_dir / "model.pdparams").is_file()


def test_bench_train_data_error_is_one_line_without_a_progress_bar(tmp_path, capsys):
    pytest.importorskip("paddle")
    from bench.cli import main

    (tmp_path / "empty" / "a").mkdir(parents=True)
    rc = main(["train", "--dataset", "folder", "--data-root", str(tmp_path / "empty"), "--model", "ResNet_tiny",
               "--out-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2
    assert [line for line in err.splitlines() if line.strip()] == [line for line in err.splitlines()
                                                                   if line.startswith("error: ")]
    assert "epoch" not in err and "no class folders with images" in err
