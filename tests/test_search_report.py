"""``bench report``: report.md, report.json and plots from fixed / grid / bayes runs (analytic objective)."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.report import REPORT_JSON, REPORT_MD, convergence, pareto_front, write_report
from search.analytic import AnalyticObjective, analytic_value
from search.journal import Journal, SearchMeta
from search.runner import run_search, strategy_for
from search.space import default_space
from search.trial import Trial, TrialState


def make_run(path, strategy, n_trials=None, fail_on=None, **options):
    meta = SearchMeta(strategy=strategy, space=default_space(), seed=0, options=options, dataset="demo")
    with Journal.create(path, meta) as journal:
        run_search(AnalyticObjective(fail_on=fail_on), strategy_for(meta), journal, n_trials=n_trials)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    bad = default_space().grid()[5]
    return [
        make_run(root / "fixed", "fixed"),
        make_run(root / "grid", "grid", fail_on=[bad]),
        make_run(root / "bayes", "bayes", n_trials=5, acq_func="EI", n_initial_points=4),
    ]


def test_report_files_and_the_seeds_table(runs, tmp_path):
    report = write_report(runs, tmp_path)
    for name in (REPORT_MD, REPORT_JSON, "convergence.png", "effects-demo-grid.png", "pareto-demo-grid.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    on_disk = json.loads((tmp_path / REPORT_JSON).read_text())
    assert on_disk["seed_table"] == report["seed_table"]
    (table,) = report["seed_table"]
    fixed, grid, bayes = report["runs"]
    entries = table["entries"]
    assert table["dataset"] == "demo"
    assert entries["fixed"][0]["val"] == pytest.approx(analytic_value({"lr": 0.003, "l2_decay": 1e-4}))
    assert entries["grid"][0]["val"] == pytest.approx(0.91) == grid["best"]["value"]
    assert entries["bayes"][0]["val"] == bayes["best"]["value"] and entries["bayes"][0]["trials"] == 5
    assert entries["grid"][0]["trials"] == 195 and entries["grid"][0]["test_top1"] is None
    # Bayes ran grid points: its cost at the grid's recorded trial times is known.
    assert entries["bayes"][0]["grid_time_s"] is not None
    assert grid["counts"] == {"RUNNING": 0, "COMPLETE": 195, "FAILED": 1, "PRUNED": 0}
    # Effects: one row per level, means computed over the complete trials of that level.
    lr_rows = {r["level"]: r for r in grid["effects"]["lr"]}
    assert sorted(lr_rows) == [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1]
    assert lr_rows[0.01]["n"] == 28 and lr_rows[0.01]["max"] == pytest.approx(0.91)
    md = (tmp_path / REPORT_MD).read_text()
    assert "## The seed's table: demo" in md and "| Grid search (195 trials) | 91.00 |" in md
    assert "| Bayesian search time |" in md and "| Fixed scheme |" in md
    assert "91.00" in md and "![convergence](convergence.png)" in md and "RuntimeError: synthetic failure" in md


def test_convergence_is_the_running_best():
    trials = [Trial(1, {}, TrialState.COMPLETE, 0.5), Trial(2, {}, TrialState.FAILED),
              Trial(3, {}, TrialState.COMPLETE, 0.4), Trial(4, {}, TrialState.COMPLETE, 0.7),
              Trial(5, {}, TrialState.RUNNING)]
    assert convergence(trials) == [0.5, 0.5, 0.5, 0.7]
    assert convergence([Trial(1, {}, TrialState.FAILED)]) == [None]


def test_pareto_front_matches_brute_force():
    points = [(1, 0.90, 20.0), (2, 0.85, 10.0), (3, 0.80, 12.0), (4, 0.92, 30.0), (5, 0.90, 25.0), (6, 0.70, 9.0)]
    assert pareto_front(points) == [6, 2, 1, 4]


def test_bench_report_command(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", *map(str, runs), "--out-dir", str(out)]) == 0
    assert (out / REPORT_MD).stat().st_size > 0 and (out / "pareto-demo-bayes.png").stat().st_size > 0
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "not a search run directory" in capsys.readouterr().err


def test_runs_sharing_dataset_and_strategy_get_distinct_labels(tmp_path):
    first = make_run(tmp_path / "grid-lr", "grid", n_trials=3)
    second = make_run(tmp_path / "grid-wide", "grid", n_trials=4)
    other = make_run(tmp_path / "only-bayes", "bayes", n_trials=3, n_initial_points=2)
    report = write_report([first, second, other], tmp_path / "out")
    labels = [r["label"] for r in report["runs"]]
    assert labels == ["demo-grid-grid-lr", "demo-grid-grid-wide", "demo-bayes"]
    md = (tmp_path / "out" / REPORT_MD).read_text()
    assert "## demo-grid-grid-lr" in md and "## demo-grid-grid-wide" in md


def _trial_with_history(trial_id, history, state=TrialState.COMPLETE):
    return Trial(id=trial_id, params={"lr": trial_id}, state=state, value=history[-1] if history else None,
                 metrics={"train_history": [{"epoch": i + 1, "val_top1": v} for i, v in enumerate(history)]})


def test_fidelity_correlation_ranks_early_epochs_against_the_last():
    from bench.report import fidelity_correlation

    trials = [
        # epoch 1 ranks the trials exactly as epoch 4 does; epoch 2 exactly backwards.
        _trial_with_history(1, [0.1, 0.9, 0.5, 0.2]),
        _trial_with_history(2, [0.2, 0.8, 0.5, 0.4]),
        _trial_with_history(3, [0.3, 0.7, 0.5, 0.6]),
        _trial_with_history(4, [0.4, 0.6, 0.5, 0.8]),
        _trial_with_history(5, [0.9, 0.1], state=TrialState.FAILED),  # not COMPLETE: left out
        _trial_with_history(6, [0.5, 0.5, 0.5]),  # history shorter than the longest: left out
    ]
    result = fidelity_correlation(trials, epochs=(1, 2, 3, 4, 9))
    assert result["n_trials"] == 4 and result["last_epoch"] == 4
    assert result["spearman"]["1"] == pytest.approx(1.0)
    assert result["spearman"]["2"] == pytest.approx(-1.0)
    assert result["spearman"]["3"] is None  # a constant column has no rank correlation
    assert result["spearman"]["4"] == pytest.approx(1.0)
    assert "9" not in result["spearman"]
    assert fidelity_correlation([]) == {"n_trials": 0, "last_epoch": None, "spearman": {}}
