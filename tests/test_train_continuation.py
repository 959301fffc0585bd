"""Continuation: a run paused after 1, 2, 4 epochs and continued ends with the straight run's weights.

Compared bit for bit on CPU (tolerance 0): the state holds the weights, the optimizer's momentum,
the schedule's position and every random generator; the data order follows from the epoch.
"""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError
from harness.config import TrainConfig

train = pytest.importorskip("harness.train")
from harness.models.pdparams import read_paddle_state  # noqa: E402
from harness.train_state import TrainStateError, latest_state_epoch  # noqa: E402


def tiny(tmp_path, **changes) -> TrainConfig:
    base = TrainConfig(
        model="ResNet_tiny", dataset="demo", image_size=32, epochs=8, batch_size=16, max_steps_per_epoch=2,
        workers=1, out_dir=str(tmp_path / "runs"), run_name="straight", lr=0.05, mixup=True, label_smoothing=True,
    )
    return base.replace(**changes)


def weights(result):
    return read_paddle_state(result.checkpoint)


def assert_same_weights(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("changes", [{}, {"freeze": 2}], ids=["mixup-smoothing", "frozen-prefix"])
def test_promoted_1_2_4_8_ends_with_the_straight_runs_weights(tmp_path, changes):
    straight = train.fine_tune(tiny(tmp_path, **changes))  # the normal path: no state kept
    assert latest_state_epoch(straight.run_dir) is None
    cfg = tiny(tmp_path, run_name="promoted", **changes)
    for stop in (1, 2, 4):
        paused = train.fine_tune(cfg, stop_after_epochs=stop, keep_state=True)
        assert paused.checkpoint == "" and len(paused.history) == stop
        assert latest_state_epoch(paused.run_dir) == stop
        # A lower rung is exactly the prefix of the full run.
        assert paused.val_metrics["top1"] == straight.history[stop - 1]["val_top1"]
    promoted = train.fine_tune(cfg, stop_after_epochs=8, keep_state=True)
    assert [h["val_top1"] for h in promoted.history] == [h["val_top1"] for h in straight.history]
    assert_same_weights(weights(promoted), weights(straight))
    # The comparison can fail: a different seed gives other weights.
    other = train.fine_tune(tiny(tmp_path, run_name="other-seed", seed=1, **changes))
    assert any(not np.array_equal(weights(other)[k], weights(straight)[k]) for k in weights(straight))


@pytest.mark.slow
def test_a_cut_rung_continues_from_the_last_epoch_state(tmp_path):
    straight = train.fine_tune(tiny(tmp_path, epochs=4))
    cfg = tiny(tmp_path, epochs=4, run_name="cut")
    train.fine_tune(cfg, stop_after_epochs=1, keep_state=True)

    class Killed(Exception):
        pass

    def die_after_epoch_2(info):
        if info.epoch + 1 == 2:
            raise Killed()

    with pytest.raises(Killed):  # rung 1 -> 4 is cut after epoch 2
        train.fine_tune(cfg, stop_after_epochs=4, keep_state=True, on_epoch=die_after_epoch_2)
    assert latest_state_epoch(straight.run_dir.replace("straight", "cut")) == 2
    seen = []
    resumed = train.fine_tune(cfg, stop_after_epochs=4, keep_state=True, on_epoch=lambda info: seen.append(info.epoch + 1))
    assert seen == [3, 4]  # only the epochs that were cut run again
    assert_same_weights(weights(resumed), weights(straight))


def test_a_state_of_another_configuration_is_refused(tmp_path):
    cfg = tiny(tmp_path, epochs=2, max_steps_per_epoch=1, run_name="r")
    train.fine_tune(cfg, stop_after_epochs=1, keep_state=True)
    with pytest.raises(TrainStateError, match="another configuration.*lr"):
        train.fine_tune(cfg.replace(lr=0.01), stop_after_epochs=2, keep_state=True)


def test_stop_after_epochs_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="stop_after_epochs"):
        train.fine_tune(tiny(tmp_path), stop_after_epochs=9)
    with pytest.raises(ConfigError, match="stop_after_epochs"):
        train.fine_tune(tiny(tmp_path), stop_after_epochs=0)
