"""The multi-fidelity runner: rung records, workers, a failing configuration, resume after kill -9 (analytic objective)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import ConfigError
from search import Journal, SearchMeta, TrialState, default_space, load_trials
from search.analytic import AnalyticObjective, analytic_curve
from search.mf_runner import multi_fidelity_strategy_for, run_multi_fidelity_search

REPO = Path(__file__).resolve().parents[1]


def meta(strategy="asha", **options):
    return SearchMeta(strategy=strategy, space=default_space(), seed=0, dataset="demo",
                      options={"max_epochs": 8, "min_epochs": 1, "eta": 2, **options})


def rung_records(run_dir):
    lines = (Path(run_dir) / "journal.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "rung" in r]


def check_rung_history(records, rungs=(1, 2, 4, 8)):
    """Every (trial, rung) has exactly one final record, rungs are climbed in order, values match the curve."""
    finals = collections.Counter((r["trial"], r["rung"]) for r in records if r["state"] != "RUNNING")
    assert all(n == 1 for n in finals.values()), finals
    by_trial = collections.defaultdict(list)
    for r in records:
        if r["state"] != "RUNNING":
            by_trial[r["trial"]].append(r)
    for seq in by_trial.values():
        assert [r["rung"] for r in seq] == list(range(len(seq)))
        for r in seq:
            assert r["epochs"] == rungs[r["rung"]]
            if r["state"] in ("PRUNED", "COMPLETE"):
                assert r["value"] == pytest.approx(analytic_curve(r["params"], r["epochs"]))
                assert r["state"] == ("COMPLETE" if r["rung"] == len(rungs) - 1 else "PRUNED")
    return by_trial


@pytest.mark.parametrize("strategy", ["asha", "bohb"])
def test_a_search_journals_one_record_per_rung_and_finds_a_complete_best(tmp_path, strategy):
    m = meta(strategy)
    with Journal.create(tmp_path / "s", m) as journal:
        result = run_multi_fidelity_search(AnalyticObjective(), multi_fidelity_strategy_for(m), journal, n_trials=24)
    records = rung_records(tmp_path / "s")
    by_trial = check_rung_history(records)
    assert len(by_trial) == 24 and result.n_new == 24
    assert len({json.dumps(seq[0]["params"], sort_keys=True) for seq in by_trial.values()}) == 24  # no repeats
    assert result.best is not None and result.best.state is TrialState.COMPLETE and result.best.metrics["epochs"] == 8
    promoted = [seq for seq in by_trial.values() if len(seq) > 1]
    assert promoted and len(promoted) < 24  # screening: not every configuration is trained further
    # Readers of plain journals see each trial's latest state.
    states = {t.id: t.state for t in load_trials(tmp_path / "s")}
    assert set(states.values()) <= {TrialState.PRUNED, TrialState.COMPLETE}


def test_two_workers_run_rung_jobs_asynchronously(tmp_path):
    m = meta("asha")
    with Journal.create(tmp_path / "p", m) as journal:
        result = run_multi_fidelity_search(AnalyticObjective(sleep_s=0.05), multi_fidelity_strategy_for(m), journal,
                                           n_trials=10, workers=2)
    records = rung_records(tmp_path / "p")
    check_rung_history(records)
    assert {r["worker"] for r in records if r["state"] != "RUNNING"} == {0, 1}
    assert result.best is not None


def test_a_failing_configuration_is_journaled_and_never_promoted(tmp_path):
    m = meta("asha")
    strategy = multi_fidelity_strategy_for(m)
    bad = [p for p in default_space().grid() if p["lr"] == 0.01]  # the best region fails
    with Journal.create(tmp_path / "f", m) as journal:
        result = run_multi_fidelity_search(AnalyticObjective(fail_on=bad), strategy, journal, n_trials=30)
    records = rung_records(tmp_path / "f")
    failed = [r for r in records if r["state"] == "FAILED"]
    assert failed and all(r["rung"] == 0 and r["params"]["lr"] == 0.01 for r in failed)
    assert all("synthetic failure" in r["error"] for r in failed)
    assert not any(r["params"]["lr"] == 0.01 and r["rung"] > 0 for r in records)
    assert result.best.params["lr"] != 0.01


def test_the_objective_must_know_rungs(tmp_path):
    m = meta("asha")
    with Journal.create(tmp_path / "x", m) as journal, pytest.raises(ConfigError, match="run_rung"):
        run_multi_fidelity_search(lambda params: 0.5, multi_fidelity_strategy_for(m), journal)


_CHILD = """
import sys
from search import Journal, SearchMeta, default_space
from search.analytic import AnalyticObjective
from search.mf_runner import multi_fidelity_strategy_for, run_multi_fidelity_search
m = SearchMeta(strategy="bohb", space=default_space(), seed=0, dataset="demo",
               options={"max_epochs": 8, "min_epochs": 1, "eta": 2})
with Journal.create(sys.argv[1], m) as journal:
    run_multi_fidelity_search(AnalyticObjective(sleep_s=0.15), multi_fidelity_strategy_for(m), journal, n_trials=30)
"""


@pytest.mark.slow
def test_resume_after_kill_9_keeps_finished_rungs_and_reruns_the_cut_one(tmp_path):
    run_dir = tmp_path / "k"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(run_dir)], cwd=REPO)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            time.sleep(0.05)
            journal = run_dir / "journal.jsonl"
            records = [json.loads(x) for x in journal.read_text().splitlines() if x.strip()] if journal.exists() else []
            # Kill while a job at a rung above 0 is running (its trial has a checkpoint to continue from).
            if len(records) > 30 and records[-1]["state"] == "RUNNING" and records[-1]["rung"] > 0:
                os.kill(child.pid, signal.SIGKILL)
                break
        else:
            pytest.fail("the child search never reached a promoted rung job")
    finally:
        child.wait(timeout=30)
    before = rung_records(run_dir)
    cut = before[-1]
    assert cut["state"] == "RUNNING"
    finished_before = [(r["trial"], r["rung"]) for r in before if r["state"] != "RUNNING"]

    m = SearchMeta(strategy="bohb", space=default_space(), seed=0, dataset="demo",
                   options={"max_epochs": 8, "min_epochs": 1, "eta": 2})
    with Journal.resume(run_dir, m) as journal:
        result = run_multi_fidelity_search(AnalyticObjective(), multi_fidelity_strategy_for(m), journal, n_trials=30)
    after = rung_records(run_dir)
    check_rung_history(after)  # no finished rung ran twice
    new = after[len(before):]
    first_new = next(r for r in new if r["state"] == "RUNNING")
    assert (first_new["trial"], first_new["rung"]) == (cut["trial"], cut["rung"])  # the cut job runs first
    assert not any((r["trial"], r["rung"]) in finished_before for r in new)
    assert result.best is not None and len({r["trial"] for r in after}) == 30


@pytest.mark.slow
def test_rung_jobs_run_as_ray_tasks(tmp_path):
    pytest.importorskip("ray")
    m = meta("bohb")
    with Journal.create(tmp_path / "ray", m) as journal:
        result = run_multi_fidelity_search(AnalyticObjective(), multi_fidelity_strategy_for(m), journal, n_trials=8,
                                           workers=2, backend="ray", ray_address="local")
    check_rung_history(rung_records(tmp_path / "ray"))
    assert result.best is not None and result.best.metrics["epochs"] == 8
    import ray

    assert not ray.is_initialized()
