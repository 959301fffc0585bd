"""Replay on a committed slice of the real flowers12 grid (56 trials, per-epoch val): runs in seconds.

The slice is lr in {0.1, 0.03} x the seed's l2, label smoothing and mixup values, cut from
bench/results/flowers12-grid (EfficientNet-Lite0, 96 px, 8 epochs, --freeze 4, 144 val images).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import fidelity_correlation
from search.replay import ReplayObjective, StrategyConfig, compare_strategies, missing_points

SLICE = Path(__file__).parent / "data" / "flowers12_grid_slice"
ONE_VAL_IMAGE = 1 / 144


def _records():
    return [json.loads(line) for line in (SLICE / "journal.jsonl").read_text().splitlines() if line.strip()]


def test_the_slice_is_a_complete_sub_grid():
    objective = ReplayObjective(SLICE)
    assert objective.space.size() == 56 and missing_points(objective, objective.space) == 0
    records = _records()
    assert objective.best_value == max(r["value"] for r in records)
    assert all(len(r["metrics"]["train_history"]) == 8 for r in records)
    # The exported model's val (the value) and the last epoch's per-epoch val see the same 144 images.
    close = sum(abs(r["value"] - r["metrics"]["train_history"][-1]["val_top1"]) <= ONE_VAL_IMAGE for r in records)
    assert close >= 0.95 * len(records)


def test_strategies_replayed_on_the_slice():
    objective = ReplayObjective(SLICE)
    configs = [StrategyConfig("random", "random"), StrategyConfig("bayes", "bayes", {"n_initial_points": 5})]
    result = compare_strategies(objective, configs, seeds=5, within=ONE_VAL_IMAGE, budgets=(8, 12, 20))
    assert result["grid_size"] == 56 and result["target"] == pytest.approx(objective.best_value - ONE_VAL_IMAGE)
    good = sum(r["value"] >= result["target"] for r in _records())
    for row in result["strategies"]:
        # A complete grid is always exhausted in at most 56 trials, so every seed gets there.
        assert row["reached"] == 5 and all(1 <= n <= 56 - good + 1 for n in row["trials"])
        shares = [row["reached_share"][b] for b in ("8", "12", "20")]
        assert shares == sorted(shares)
        assert row["best_so_far"]["median"][-1] <= objective.best_value
    json.dumps(result, allow_nan=False)


def test_early_epochs_rank_the_slice_as_reported():
    objective = ReplayObjective(SLICE)
    result = fidelity_correlation(objective.trials, epochs=(1, 2, 4, 8))
    assert result["n_trials"] == 56 and result["last_epoch"] == 8
    assert result["spearman"]["8"] == pytest.approx(1.0)
    for e in ("1", "2", "4"):
        assert -1.0 <= result["spearman"][e] < 1.0
