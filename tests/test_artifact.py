"""Publishing an export directory: the target check and the swap into place (no Paddle needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ExportError
from harness.artifact import TargetExistsError, check_target, swap_into_place
from harness.parity import ParityReport


def _dir(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "file.txt").write_text(text)
    return path


def test_swap_into_place_moves_staging_to_a_new_target(tmp_path):
    staging = _dir(tmp_path / ".staging", "new")
    swap_into_place(staging, tmp_path / "out")
    assert (tmp_path / "out" / "file.txt").read_text() == "new"
    assert not staging.exists()


def test_swap_into_place_replaces_an_old_target_and_leaves_no_backup(tmp_path):
    _dir(tmp_path / "out", "old")
    swap_into_place(_dir(tmp_path / ".staging", "new"), tmp_path / "out")
    assert (tmp_path / "out" / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_swap_into_place_restores_the_old_target_when_the_final_rename_fails(tmp_path, monkeypatch):
    _dir(tmp_path / "out", "old")
    staging = _dir(tmp_path / ".staging", "new")
    real_rename = Path.rename

    def rename(self, target):
        if self == staging:
            raise OSError("disk full")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="disk full"):
        swap_into_place(staging, tmp_path / "out")
    assert (tmp_path / "out" / "file.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging", "out"]


def test_check_target_refuses_a_non_empty_directory_unless_overwrite(tmp_path):
    _dir(tmp_path / "out", "old")
    with pytest.raises(TargetExistsError, match="overwrite=True"):
        check_target(tmp_path / "out", overwrite=False)
    assert check_target(tmp_path / "out", overwrite=True) == tmp_path / "out"
    assert check_target(tmp_path / "empty", overwrite=False) == tmp_path / "empty"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        check_target(tmp_path / "afile", overwrite=True)


def test_parity_report_json_has_one_key_per_field_and_passed():
    report = ParityReport(backend="cpu", input_kind="images", num_inputs=3, max_abs_diff=0.5, max_abs_logit=10.0,
                          tolerance=0.1, rtol=1e-4, atol=1e-3, argmax_agree=2, near_ties=0,
                          argmax_mismatches=(1,), source="dir", images=("a.jpg", "b.jpg", "c.jpg"))
    d = report.to_dict()
    assert d["passed"] is False and d["argmax_mismatches"] == [1] and "images" not in d
    assert set(d) == {"backend", "input_kind", "num_inputs", "max_abs_diff", "max_abs_logit", "tolerance", "rtol",
                      "atol", "argmax_agree", "near_ties", "argmax_mismatches", "source", "passed"}
