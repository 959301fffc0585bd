"""The fused preprocessing must not change an exported model's top-1 on real photos."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("paddle")

import kernels  # noqa: E402
from harness.config import TrainConfig  # noqa: E402
from kernels.parity import top1_agreement  # noqa: E402

FLOWERS12 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers12"


@pytest.mark.skipif(not FLOWERS12.is_dir(), reason=f"{FLOWERS12} is not present")
def test_exported_model_top1_is_the_same_with_fused_and_reference_preprocessing(tmp_path, missing_native):
    if kernels.backend() == "reference":
        missing_native("the native kernel is not built")
    from harness.export import export
    from harness.predictor import Predictor, PredictorOptions
    from harness.train import fine_tune

    cfg = TrainConfig(model="ResNet_tiny", dataset="folder", data_root=str(FLOWERS12), image_size=48,
                      epochs=1, batch_size=32, max_steps_per_epoch=6, lr=0.05, out_dir=str(tmp_path), run_name="t")
    exported = export(fine_tune(cfg), tmp_path / "exported")
    predictor = Predictor(exported, PredictorOptions(backend="cpu", batch_size=32))
    spec = predictor.spec
    files = sorted(FLOWERS12.glob("test/*/*.jpg"))
    assert len(files) == 240
    report = top1_agreement(predictor.predict, files, resize_short=spec.resize_short, crop_size=spec.crop_size,
                            mean=spec.mean, std=spec.std, scale=spec.scale, batch_size=32)
    assert report.images == 240
    assert report.backend == "cpu-native"
    assert report.agreement == 1.0, report.disagreements
    assert report.max_abs_input_diff <= 1 / 255 / min(spec.std)
