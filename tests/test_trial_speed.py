"""bench trial-speed: pairing trials of two searches, and one tiny run end to end."""

from __future__ import annotations

import json

import pytest

from bench.perf.trial_speed import TrialSpeedConfig, compare, merge_passes, seed_means
from common.errors import TlbenchError


def _search(trials):
    return {"trials": {json.dumps(p, sort_keys=True): {"params": p, "seconds": s, "val_top1": v,
                                                       "train_images_per_s": ips}
                       for p, s, v, ips in trials}}


def test_compare_pairs_trials_by_params():
    a, b, c = {"lr": 0.1}, {"lr": 0.01}, {"lr": 0.001}
    baseline = _search([(a, 100.0, 0.50, 10.0), (b, 80.0, 0.70, 12.0), (c, 60.0, 0.2, 11.0)])
    new = _search([(b, 20.0, 0.72, 50.0), (a, 25.0, 0.49, 40.0)])  # c is missing: not paired
    result = compare(baseline, new)
    assert [r["params"] for r in result["rows"]] == [a, b]
    assert result["rows"][0]["speedup"] == pytest.approx(4.0)
    assert result["median_speedup"] == pytest.approx((4.0 + 4.0) / 2)
    assert result["total_speedup"] == pytest.approx(180.0 / 45.0)
    assert result["mean_abs_diff_points"] == pytest.approx((1.0 + 2.0) / 2)


def test_merge_passes_means_seconds_and_keeps_every_pass():
    a, b = {"lr": 0.1}, {"lr": 0.01}
    first = _search([(a, 100.0, 0.50, 10.0), (b, 80.0, 0.70, 12.0)])
    second = _search([(a, 120.0, 0.50, 14.0)])  # b is missing from this pass: dropped
    merged = merge_passes([first, second])
    assert merged["passes"] == 2 and list(merged["trials"]) == [json.dumps(a, sort_keys=True)]
    row = merged["trials"][json.dumps(a, sort_keys=True)]
    assert row["seconds"] == pytest.approx(110.0) and row["pass_seconds"] == [100.0, 120.0]
    assert row["train_images_per_s"] == pytest.approx(12.0) and row["val_top1_per_pass"] == [0.50, 0.50]
    assert merge_passes([first]) is first


def test_abba_cancels_a_linear_drift():
    """Trials slow down by 10 % per pass; the abba mean gives both sides the same drift."""
    a = {"lr": 0.1}
    drift = [1.0, 1.1, 1.2, 1.3]  # pass order: baseline, new, new, baseline
    base = merge_passes([_search([(a, 100.0 * drift[0], 0.5, 1.0)]), _search([(a, 100.0 * drift[3], 0.5, 1.0)])])
    new = merge_passes([_search([(a, 25.0 * drift[1], 0.5, 1.0)]), _search([(a, 25.0 * drift[2], 0.5, 1.0)])])
    assert compare(base, new)["median_speedup"] == pytest.approx(4.0)
    one_way = compare(_search([(a, 100.0 * drift[0], 0.5, 1.0)]), _search([(a, 25.0 * drift[1], 0.5, 1.0)]))
    assert one_way["median_speedup"] == pytest.approx(4.0 / 1.1)


def test_seed_means_compare_points_by_their_mean_over_seeds(tmp_path):
    corner, other = {"lr": 0.1, "mixup": False}, {"lr": 0.0001, "mixup": False}
    rows = [{"params": {**corner, "seed": s}, "baseline_val_top1": b, "new_val_top1": n}
            for s, b, n in [(1, 0.90, 0.80), (0, 0.70, 0.84), (2, 0.80, 0.86)]]
    rows.append({"params": {**other, "seed": 0}, "baseline_val_top1": 0.10, "new_val_top1": 0.11})
    rows.append({"params": {**other, "seed": 1}, "baseline_val_top1": None, "new_val_top1": 0.2})  # not scored: left out
    result = seed_means(rows)
    first, second = result["points"]
    assert first["params"] == corner and first["seeds"] == [0, 1, 2]
    assert first["baseline"] == [0.70, 0.90, 0.80] and first["new"] == [0.84, 0.80, 0.86]
    assert first["abs_diff_points"] == pytest.approx(abs(0.80 - 0.8333333) * 100, abs=1e-4)
    assert first["sd_baseline"] == pytest.approx(0.1)
    assert first["se_diff_points"] == pytest.approx(((0.1 ** 2 + first["sd_new"] ** 2) / 3) ** 0.5 * 100)
    assert second["seeds"] == [0] and second["sd_new"] is None and second["se_diff_points"] is None
    assert result["mean_abs_diff_points"] == pytest.approx((first["abs_diff_points"] + 1.0) / 2)


def test_seeds_add_a_seed_dimension_to_the_points(tmp_path):
    import yaml

    cfg = TrialSpeedConfig(dataset="folder", data_root=None, out_dir=tmp_path, seeds=(0, 3))
    assert yaml.safe_load(cfg.space_yaml())["dimensions"] == {"lr": [0.1, 0.0001], "mixup": [True, False], "seed": [0, 3]}
    assert "seed" not in yaml.safe_load(TrialSpeedConfig(dataset="folder", data_root=None, out_dir=tmp_path).space_yaml())["dimensions"]
    for bad in [(1, 1), (-1,), (True,)]:
        with pytest.raises(TlbenchError, match="seeds must be distinct non-negative integers"):
            TrialSpeedConfig(dataset="folder", data_root=None, out_dir=tmp_path, seeds=bad)


@pytest.mark.slow
def test_trial_speed_runs_both_searches(image_folder_dataset, tmp_path, capsys):
    from bench.cli import main

    root = image_folder_dataset({"train": 6, "test": 2}, name="ts")
    out = tmp_path / "ts-out"
    code = main(["trial-speed", "--dataset", "folder", "--data-root", str(root), "--points", "fixed",
                 "--recipe", "none", "--out-dir", str(out), "--json", "--seeds", "0", "1", "--flags", "--model", "ResNet_tiny",
                 "--image-size", "32", "--epochs", "1", "--freeze", "2", "--latency-seconds", "0",
                 "--val-fraction", "0.34"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["params"] for r in result["rows"]] == [{"lr": 0.003, "seed": 0}, {"lr": 0.003, "seed": 1}]
    assert result["rows"][0]["new_s"] > 0 and result["rows"][0]["baseline_s"] > 0
    assert result["baseline"].endswith("TLBENCH_FAST_TRIALS=0")
    assert "cpu_model" in result["environment"] and "cpu_flags" in result["environment"]
    assert json.loads((out / "trial_speed.json").read_text())["rows"] == result["rows"]
    # Each side ran its untimed one-step warm-up search first; only the timed searches are paired.
    assert result["warm_up"] is True
    for label in ("baseline", "new"):
        warm = json.loads((out / f"{label}-warm-up" / "search.json").read_text())
        assert warm["strategy"] == "fixed" and warm["extra"]["base_config"]["max_steps_per_epoch"] == 1
    # The default order is abba: baseline, new, new, baseline, each trial timed as the mean of its passes.
    assert result["order"] == "abba" and list(result["searches"]) == ["baseline-1", "new-1", "new-2", "baseline-2"]
    keys = {'{"lr": 0.003, "seed": 0}', '{"lr": 0.003, "seed": 1}'}
    for name, search in result["searches"].items():
        assert set(search["trials"]) == keys, name
    per_pass = [result["searches"][n]["trials"]['{"lr": 0.003, "seed": 0}']["seconds"] for n in ("baseline-1", "baseline-2")]
    assert result["rows"][0]["baseline_s"] == pytest.approx(sum(per_pass) / 2)
    assert len(result["per_pass"]) == 2 and all(p["median_speedup"] > 0 for p in result["per_pass"])
    # Both seeds of the one point, compared by their means.
    assert result["seeds"] == [0, 1]
    [point] = result["seed_means"]["points"]
    assert point["params"] == {"lr": 0.003} and point["seeds"] == [0, 1]
    assert point["new"] == [r["new_val_top1"] for r in result["rows"]]
