"""Fine-tuning core: run directory, schedules, targets, divergence, determinism, real learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.config import TrainConfig
from common.errors import ConfigError, DivergenceError
from harness.results import TrainResult

train = pytest.importorskip("harness.train")

FLOWERS12 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers12"


def tiny_config(tmp_path, **changes) -> TrainConfig:
    base = TrainConfig(
        model="ResNet_tiny", dataset="demo", image_size=32, epochs=1, batch_size=16,
        max_steps_per_epoch=3, workers=2, out_dir=str(tmp_path / "runs"), run_name="r", lr=0.05,
    )
    return base.replace(**changes)


def test_soft_targets_smoothing_sums_to_one():
    t = train.soft_targets(np.array([0, 2]), 4, 0.1)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=1e-6)
    assert t[0, 0] == pytest.approx(0.9 + 0.025)
    assert t[0, 1] == pytest.approx(0.025)
    np.testing.assert_array_equal(train.soft_targets(np.array([1]), 3, 0.0), [[0, 1, 0]])


def test_cosine_schedule_with_warmup(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2, warmup_epochs=1, lr=0.1)
    sched = train.build_lr_schedule(cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append(sched())
        sched.step()
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[5] == pytest.approx(0.05)
    assert max(lrs) == pytest.approx(0.1, rel=1e-6)
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[-1] < 0.01  # cosine decays towards zero
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_step_schedule_drops_tenfold(tmp_path):
    cfg = tiny_config(tmp_path, epochs=10, schedule="step", lr=0.1)
    sched = train.build_lr_schedule(cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(sched())
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[35] == pytest.approx(0.01)
    assert lrs[65] == pytest.approx(0.001)
    assert lrs[95] == pytest.approx(0.0001)


def test_run_dir_contents_and_reload(tmp_path):
    cfg = tiny_config(tmp_path, label_smoothing=True, mixup=True)
    result = train.fine_tune(cfg)
    run_dir = Path(result.run_dir)
    for name in ("config.yaml", "metrics.json", "model.pdparams", "data_report.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["finished"] is True
    assert len(metrics["history"]) == 1
    assert set(metrics["val"]) == {"top1", "top5", "mean_per_class"}
    reloaded = TrainResult.from_run_dir(run_dir)
    assert reloaded.config == cfg
    assert reloaded.classes == result.classes
    assert reloaded.val_metrics == pytest.approx(result.val_metrics)
    with pytest.raises(ConfigError, match="already holds a trained model"):
        train.fine_tune(cfg)


def test_same_seed_same_losses(tmp_path):
    a = train.fine_tune(tiny_config(tmp_path, run_name="a", epochs=2, max_steps_per_epoch=2))
    b = train.fine_tune(tiny_config(tmp_path, run_name="b", epochs=2, max_steps_per_epoch=2))
    assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], rel=1e-5)
    c = train.fine_tune(tiny_config(tmp_path, run_name="c", epochs=2, max_steps_per_epoch=2, seed=1))
    assert [h["train_loss"] for h in c.history] != pytest.approx([h["train_loss"] for h in a.history], rel=1e-5)


def test_divergence_is_detected(tmp_path):
    cfg = tiny_config(tmp_path, lr=1e12, epochs=3, max_steps_per_epoch=5)
    with pytest.raises(DivergenceError, match="loss is (nan|inf)"):
        train.fine_tune(cfg)


@pytest.mark.slow
@pytest.mark.skipif(not FLOWERS12.is_dir(), reason=f"{FLOWERS12} is not present")
def test_flowers12_short_fine_tune_beats_chance(tmp_path):
    cfg = TrainConfig(
        model="ResNet18_vd", dataset="folder", data_root=str(FLOWERS12), image_size=32, epochs=4,
        batch_size=16, lr=0.02, l2_decay=1e-4, out_dir=str(tmp_path), run_name="f12",
    )
    result = train.fine_tune(cfg)
    chance = 1 / 12
    assert result.val_metrics["top1"] > 2.5 * chance, result.history


def test_unknown_model_leaves_no_run_directory(tmp_path):
    from common.errors import ModelError

    with pytest.raises(ModelError, match="unknown model 'Nope'"):
        train.fine_tune(tiny_config(tmp_path, model="Nope"))
    assert not (tmp_path / "runs" / "r").exists()


def test_history_records_the_rate_of_each_epochs_last_step(tmp_path):
    result = train.fine_tune(tiny_config(tmp_path, epochs=2, max_steps_per_epoch=2, lr=0.1))
    # Cosine over 4 steps: the last step of epoch 2 runs at a small but non-zero rate.
    assert result.history[-1]["lr"] > 0
    assert result.history[0]["lr"] > result.history[-1]["lr"]
