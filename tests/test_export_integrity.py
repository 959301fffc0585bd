"""Exports without a manifest open with one "integrity unverified" warning (also in eval.json);
a manifest that lists no files, or not the model's own files, is refused."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

paddle = pytest.importorskip("paddle")

from bench.cli import main  # noqa: E402
from common.errors import IntegrityError  # noqa: E402
from harness.artifact import LABEL_FILE, MANIFEST_FILE, ExportedModel  # noqa: E402
from harness.export import export  # noqa: E402
from test_export import make_run_dir  # noqa: E402

CLASSES = ("a", "b", "c")  # sorted, as folder datasets list them


@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory) -> Path:
    run_dir = make_run_dir(tmp_path_factory.mktemp("run"), classes=CLASSES)
    return export(run_dir, tmp_path_factory.mktemp("exp") / "tiny").model_dir


def _copy(src: Path, dst: Path, *, manifest=True, labels=True) -> Path:
    shutil.copytree(src, dst)
    if not manifest:
        (dst / MANIFEST_FILE).unlink()
    if not labels:
        (dst / LABEL_FILE).unlink()
    return dst


def test_a_tlbench_export_is_verified(exported_dir):
    assert ExportedModel.load(exported_dir).integrity == "verified"
    assert ExportedModel.load(exported_dir, verify=False).integrity == "not checked"


def test_no_manifest_says_integrity_unverified_once(exported_dir, tmp_path, caplog):
    plain = _copy(exported_dir, tmp_path / "plain", manifest=False)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        model = ExportedModel.load(plain)
    assert model.integrity == "unverified" and model.classes == CLASSES
    warnings = [r.getMessage() for r in caplog.records if "integrity unverified" in r.getMessage()]
    assert len(warnings) == 1 and str(plain) in warnings[0] and MANIFEST_FILE in warnings[0]


def test_missing_label_map_is_said_once(exported_dir, tmp_path, caplog):
    bare = _copy(exported_dir, tmp_path / "bare", manifest=False, labels=False)
    caplog.set_level(logging.WARNING)
    ExportedModel.load(bare)
    ExportedModel.load(bare)
    said = [r.getMessage() for r in caplog.records if "no class names" in r.getMessage()]
    assert len(said) == 1 and "reported by number" in said[0]


@pytest.mark.parametrize("files, message", [
    ({}, "lists no files"),
    ({LABEL_FILE: "0" * 64}, "does not list inference"),
])
def test_manifests_that_verify_nothing_are_refused(exported_dir, tmp_path, files, message):
    bad = _copy(exported_dir, tmp_path / "bad")
    manifest = json.loads((bad / MANIFEST_FILE).read_text())
    if files:
        files = {LABEL_FILE: manifest["files"][LABEL_FILE]}
    manifest["files"] = files
    (bad / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match=message):
        ExportedModel.load(bad)


def test_eval_json_records_integrity(exported_dir, tmp_path, image_folder_dataset):
    plain = _copy(exported_dir, tmp_path / "plain", manifest=False)
    root = image_folder_dataset({"train": 3, "test": 2}, classes=CLASSES)
    dropped = root / "test" / CLASSES[0] / "000.jpg"
    dropped.write_bytes(b"")  # dropped at load: listed in eval.json
    out = tmp_path / "out"
    for model, expected in ((plain, "unverified"), (exported_dir, "verified")):
        rc = main(["-q", "eval", "--model", str(model), "--dataset", "folder", "--data-root", str(root),
                   "--threads", "1", "--out-dir", str(out), "--json"])
        assert rc == 0
        record = json.loads((out / "eval.json").read_text())
        assert record["integrity"] == expected and record["predictor"]["integrity"] == expected
        assert [d["path"] for d in record["dropped_at_load"]] == [str(dropped)]
        assert record["dropped_at_load"][0]["split"] == "test"
