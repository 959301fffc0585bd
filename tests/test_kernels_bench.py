"""``bench preprocess`` end to end on a tiny generated image folder (fast settings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kernels
from bench.cli import main
from bench.perf import preprocess_bench as bench_preprocess

cv2 = pytest.importorskip("cv2")


def test_bytes_moved_estimate():
    small = bench_preprocess.fused_bytes_per_image((224, 224), 256, 224)
    large = bench_preprocess.fused_bytes_per_image((1500, 2000), 256, 224)
    out_bytes = 3 * 224 * 224 * 4
    assert out_bytes < small < out_bytes + 224 * 224 * 3 + 64 * 224  # reads about the whole small image
    assert large > small  # two fresh source rows per output row


def test_bench_preprocess_json(tmp_path, monkeypatch, capsys, missing_native):
    if kernels.backend() != "cpu-native":
        missing_native("the fused kernel is not built")
    rng = np.random.default_rng(0)
    for i in range(6):
        img = rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"img{i}.jpg"), img)
    monkeypatch.setattr(bench_preprocess, "BANDWIDTH_BUFFER_BYTES", 8 * 2**20)
    out_file = tmp_path / "result.json"
    rc = main(["-q", "preprocess", "--data-root", str(tmp_path), "--count", "6", "--large-count", "2",
               "--large-size", "120x90", "--batch-size", "4", "--crop-size", "16", "--resize-short", "20",
               "--repeats", "1", "--json", "--out", str(out_file)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out_file.read_text())
    rows = printed["rows"]
    assert {r["stage"] for r in rows} == {"decode", "preprocess", "end-to-end"}
    fused_rows = [r for r in rows if r["impl"] == "fused"]
    assert fused_rows and all(r["speedup"] > 0 and r["bound_img_per_s"] > 0 for r in fused_rows)
    assert printed["environment"]["backend"] == "cpu-native"


def test_bench_preprocess_rejects_bad_flags(tmp_path):
    assert main(["-q", "preprocess", "--data-root", str(tmp_path / "missing")]) == 2
    assert main(["-q", "preprocess", "--data-root", str(tmp_path), "--crop-size", "300"]) == 2
