"""bench seed-table on run directories cut from the committed flowers12 grid slice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.seed_table import build_table
from common.errors import ConfigError, TlbenchError

SLICE = Path(__file__).parent / "data" / "flowers12_grid_slice"


def _records():
    return [json.loads(line) for line in (SLICE / "journal.jsonl").read_text().splitlines() if line.strip()]


def _run_dir(root: Path, name: str, records: list[dict], strategy: str, test_top1: float) -> Path:
    """A finished search directory holding ``records`` (in order), as bench search leaves it."""
    run = root / name
    run.mkdir()
    meta = json.loads((SLICE / "search.json").read_text())
    meta["strategy"] = strategy
    (run / "search.json").write_text(json.dumps(meta))
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    best = max(records, key=lambda r: r["value"])
    (run / "summary.json").write_text(json.dumps({
        "strategy": strategy, "trials": len(records),
        "best": {"trial": best["trial"], "params": best["params"], "val": best["value"]},
        "test": {"top1": test_top1}}))
    return run


def test_rows_from_a_grid_and_searches_over_its_points(tmp_path):
    records = _records()
    grid = _run_dir(tmp_path, "grid", records, "grid", 0.9)
    # Two "Bayesian" searches that ran some grid points (renumbered, in a different order).
    picks = [records[i] for i in (7, 3, 20, 41)], [records[i] for i in (2, 30)]
    bayes = []
    for n, chosen in enumerate(picks):
        renumbered, clock = [], 1.0e9
        for i, r in enumerate(chosen, 1):
            duration = r["finished_at"] - r["started_at"]
            renumbered.append(dict(r, trial=i, started_at=clock, finished_at=clock + duration))
            clock += duration + 1.0
        bayes.append(_run_dir(tmp_path, f"bayes{n}", renumbered, "bayes", 0.8 + n / 10))
    table = build_table({"grid": [grid], "bayes": bayes}, dataset="slice")

    g = table["entries"]["grid"][0]
    assert g["trials"] == 56 and g["val"] == max(r["value"] for r in records) and g["test_top1"] == 0.9
    for entry, chosen in zip(table["entries"]["bayes"], picks):
        values = [r["value"] for r in chosen]
        assert entry["val"] == max(values)
        assert entry["found_at_trial"] == values.index(max(values)) + 1
        # The grid's recorded times of the same points.
        assert entry["grid_time_s"] == pytest.approx(sum(r["finished_at"] - r["started_at"] for r in chosen))
    md = "\n".join(table["markdown"])
    assert "| Grid search (56 trials) |" in md and "| Grid search time |" in md
    assert "Bayesian search (2/4 trials), mean of 2 search seeds" in md
    mean_val = (table["entries"]["bayes"][0]["val"] + table["entries"]["bayes"][1]["val"]) / 2
    assert f"| {100 * mean_val:.2f} | {100 * (0.8 + 0.9) / 2:.2f} |" in md


def test_a_point_outside_the_grid_has_no_grid_time(tmp_path):
    records = _records()
    grid = _run_dir(tmp_path, "grid", records, "grid", 0.9)
    other = dict(records[0], trial=1, params=dict(records[0]["params"], lr=0.01))
    meta_space_run = _run_dir(tmp_path, "fixed", [other], "fixed", 0.7)
    spec = json.loads((meta_space_run / "search.json").read_text())
    spec["space"]["lr"]["choices"].append(0.01)
    (meta_space_run / "search.json").write_text(json.dumps(spec))
    table = build_table({"grid": [grid], "fixed": [meta_space_run]})
    assert table["entries"]["fixed"][0]["grid_time_s"] is None


def test_without_a_summary_the_journals_best_has_no_test_score(tmp_path):
    records = _records()[:3]
    run = _run_dir(tmp_path, "r", records, "bayes", 0.5)
    (run / "summary.json").unlink()
    (entry,) = build_table({"bayes": [run]})["entries"]["bayes"]
    assert entry["val"] == max(r["value"] for r in records) and entry["test_top1"] is None
    with pytest.raises(ConfigError, match="unknown row kind"):
        build_table({"random": [run]})
    shutil.rmtree(run)
    with pytest.raises(TlbenchError, match="not a search run directory"):
        build_table({"bayes": [run]})


def test_a_multi_fidelity_search_costs_the_epochs_its_rungs_added(tmp_path):
    records = _records()
    grid = _run_dir(tmp_path, "grid", records, "grid", 0.9)
    a, b = records[4], records[9]
    clock = 1.0e9

    def rung(source, trial, rung_index, epochs, state):
        nonlocal clock
        clock += 10.0
        value = source["metrics"]["train_history"][epochs - 1]["val_top1"] if state == "PRUNED" else source["value"]
        return {"trial": trial, "state": state, "params": source["params"], "value": value, "rung": rung_index,
                "epochs": epochs, "metrics": {}, "started_at": clock - 5.0, "finished_at": clock}

    jobs = [rung(a, 1, 0, 1, "PRUNED"), rung(b, 2, 0, 1, "PRUNED"), rung(a, 1, 1, 2, "PRUNED"),
            rung(a, 1, 2, 4, "PRUNED"), rung(a, 1, 3, 8, "COMPLETE")]
    bohb = _run_dir(tmp_path, "bohb", jobs, "bohb", 0.95)
    (entry,) = build_table({"grid": [grid], "multi_fidelity": [bohb]})["entries"]["multi_fidelity"]
    assert entry["trials"] == 2 and entry["fte"] == pytest.approx(1 + 1 / 8)
    seconds = {json.dumps(r["params"], sort_keys=True): r["finished_at"] - r["started_at"] for r in records}
    expected = seconds[json.dumps(a["params"], sort_keys=True)] + seconds[json.dumps(b["params"], sort_keys=True)] / 8
    assert entry["grid_time_s"] == pytest.approx(expected)
    assert entry["wall_s"] == pytest.approx(jobs[-1]["finished_at"] - jobs[0]["started_at"])
    assert entry["val"] == a["value"]
