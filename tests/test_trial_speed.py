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


def _finished_search(run_dir, points, base_seed=0, l2_decay=1e-4):
    """A search directory holding COMPLETE trials: ``points`` is [(params, seconds, val_top1)]."""
    from search.journal import META_NAME, SearchMeta

    space = {name: {"type": "categorical", "choices": sorted({p[name] for p, _, _ in points}, key=str)}
             for name in points[0][0]}
    run_dir.mkdir(parents=True)
    meta = SearchMeta(strategy="grid", space=space, extra={"base_config": {"seed": base_seed, "l2_decay": l2_decay}})
    (run_dir / META_NAME).write_text(json.dumps(meta.to_dict()))
    lines = []
    for i, (params, seconds, val) in enumerate(points, 1):
        lines.append({"trial": i, "state": "COMPLETE" if val is not None else "FAILED", "params": params, "value": val,
                      "metrics": {"val_top1": val, "train_history": [{"train_images_per_s": 10.0, "val_top1": val}]},
                      "error": None, "timings": {}, "started_at": 1000.0, "finished_at": 1000.0 + seconds,
                      "worker": 0, "written_at": 1000.0 + seconds})
    (run_dir / "journal.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


def test_compare_runs_pairs_searches_with_and_without_a_seed_dimension(tmp_path, capsys):
    from bench.cli import main
    from bench.perf.trial_speed import compare_runs

    a = {"lr": 0.1, "mixup": False}
    # Seed 0 from searches without a seed dimension (the recipe's seed), seeds 1-2 from later ones.
    base = [_finished_search(tmp_path / "b0", [(a, 100.0, 0.70), ({"lr": 0.1, "mixup": True}, 5.0, None)]),
            _finished_search(tmp_path / "b12", [({**a, "seed": 1}, 90.0, 0.90), ({**a, "seed": 2}, 95.0, 0.80)])]
    # This side's seeds 1-2 come from a search whose space also names l2_decay (at the base value).
    new = [_finished_search(tmp_path / "n0", [(a, 25.0, 0.84)]),
           _finished_search(tmp_path / "n12", [({**a, "l2_decay": 1e-4, "seed": 1}, 20.0, 0.80),
                                               ({**a, "l2_decay": 1e-4, "seed": 2}, 21.0, 0.86)])]
    result = compare_runs(base, new)
    assert sorted(r["params"]["seed"] for r in result["rows"]) == [0, 1, 2]
    assert all(r["params"]["l2_decay"] == 1e-4 for r in result["rows"])
    assert result["not_complete"]["baseline"] == [{"run_dir": str(base[0]), "params": {"lr": 0.1, "mixup": True},
                                                   "state": "FAILED"}]
    [point] = result["seed_means"]["points"]
    assert point["params"] == {**a, "l2_decay": 1e-4}
    assert point["seeds"] == [0, 1, 2] and point["baseline"] == [0.70, 0.90, 0.80] and point["new"] == [0.84, 0.80, 0.86]
    assert point["abs_diff_points"] == pytest.approx(abs(0.80 - (0.84 + 0.80 + 0.86) / 3) * 100)
    # The command reads the same searches and prints the seed means.
    out = tmp_path / "cmp"
    assert main(["trial-speed", "--baseline-runs", *map(str, base), "--new-runs", *map(str, new),
                 "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean |Δ| of seed means over the points" in printed and "not side by side" in printed
    assert json.loads((out / "trial_speed.json").read_text())["seed_means"] == json.loads(json.dumps(result["seed_means"]))
    # One side holding one point twice is refused, and so is one side alone.
    with pytest.raises(TlbenchError, match="also in an earlier search"):
        compare_runs([base[0], base[0]], new)
    # A search trained at another l2 does not pair with these.
    other = _finished_search(tmp_path / "n3", [({**a, "seed": 1}, 20.0, 0.5)], l2_decay=3e-4)
    with_other = compare_runs(base, [*new, other])
    assert len(with_other["rows"]) == 3 and with_other["seed_means"]["points"][0]["new"] == [0.84, 0.80, 0.86]
    assert main(["trial-speed", "--baseline-runs", str(base[0])]) == 2
    assert "--baseline-runs and --new-runs go together" in capsys.readouterr().err
