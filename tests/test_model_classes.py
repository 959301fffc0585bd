"""A label map whose class count differs from the model's outputs is refused when the model is
opened, by every command that opens one, with one line and exit status 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from bench.cli import main  # noqa: E402
from common.errors import ModelError  # noqa: E402
from harness.artifact import LABEL_FILE, MANIFEST_FILE  # noqa: E402
from harness.export import export  # noqa: E402
from harness.predictor import Predictor, PredictorOptions  # noqa: E402
from test_export import make_run_dir  # noqa: E402

SIX = ("a", "b", "c", "d", "e", "f")


@pytest.fixture(scope="module")
def six_class_export(tmp_path_factory) -> Path:
    run_dir = make_run_dir(tmp_path_factory.mktemp("run"), classes=SIX)
    return export(run_dir, tmp_path_factory.mktemp("exp") / "six").model_dir


@pytest.fixture(scope="module")
def two_label_dir(six_class_export, tmp_path_factory) -> Path:
    """The six-class model as a PaddleClas directory (no manifest) with a 2-line label_list.txt."""
    out = tmp_path_factory.mktemp("plain") / "model"
    shutil.copytree(six_class_export, out)
    (out / MANIFEST_FILE).unlink()
    (out / LABEL_FILE).write_text("0 cat\n1 dog\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "x.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    return path


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_predictor_checks_outputs_against_the_label_map(six_class_export, two_label_dir):
    predictor = Predictor(six_class_export, PredictorOptions(threads=1))
    assert predictor.num_outputs == 6 and predictor.clone().num_outputs == 6
    with pytest.raises(ModelError, match=r"outputs 6 class scores but .*label_list.txt names 2 classes"):
        Predictor(two_label_dir, PredictorOptions(threads=1))


def test_manifest_with_other_classes_is_refused(six_class_export, tmp_path):
    import json

    out = tmp_path / "m"
    shutil.copytree(six_class_export, out)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["classes"] = ["x", "y"]
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"outputs 6 class scores but .*manifest.json names 2 classes"):
        Predictor(out, PredictorOptions(threads=1))


def test_predict_exits_2_with_one_line(two_label_dir, image, capsys):
    assert main(["-q", "predict", "--model", str(two_label_dir), str(image), "--topk", "5", "--threads", "1"]) == 2
    assert "names 2 classes" in _one_error_line(capsys)


def test_eval_exits_2_with_one_line(two_label_dir, image_folder_dataset, capsys):
    root = image_folder_dataset({"train": 3, "test": 2}, classes=("cat", "dog"))
    rc = main(["-q", "eval", "--model", str(two_label_dir), "--dataset", "folder", "--data-root", str(root), "--threads", "1"])
    assert rc == 2
    assert "names 2 classes" in _one_error_line(capsys)


def test_throughput_exits_2_with_one_line(two_label_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.full((40, 50, 3), 128, np.uint8))  # no dataset needed beside the repo
    rc = main(["-q", "throughput", "--model", str(two_label_dir), "--images", str(images), "--input", "tensor",
               "--duration", "0.1", "--warmup", "0", "--repetitions", "1", "--batch-sizes", "1", "--no-baseline",
               "--threads", "1"])
    assert rc == 2
    assert "names 2 classes" in _one_error_line(capsys)


def test_serve_exits_2_with_one_line(two_label_dir, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    assert main(["-q", "serve", "--model", str(two_label_dir), "--port", "0", "--threads", "1"]) == 2
    assert "names 2 classes" in _one_error_line(capsys)


def test_the_right_label_map_still_opens(six_class_export, two_label_dir, tmp_path):
    ok = tmp_path / "ok"
    shutil.copytree(two_label_dir, ok)
    (ok / LABEL_FILE).write_text("".join(f"{i} {c}\n" for i, c in enumerate(SIX)), encoding="utf-8")
    assert Predictor(ok, PredictorOptions(threads=1)).model.classes == SIX
