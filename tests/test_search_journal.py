"""Journal: durable appends, torn lines, the run-directory lock, resume after a real SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from common.errors import ConfigError
from search.analytic import AnalyticObjective, analytic_value
from search.journal import (JOURNAL_NAME, LOCK_NAME, META_NAME, Journal, JournalError, SearchExistsError, SearchMeta,
                            load_trials, read_records)
from search.runner import run_search, strategy_for
from search.space import Boolean, Categorical, Space, point_key
from search.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
SMALL = Space({"lr": Categorical([0.1, 0.01, 0.001]), "l2_decay": Categorical([1e-4]), "mixup": Boolean()})  # 6 points


def small_meta(strategy: str = "grid", seed: int = 0) -> SearchMeta:
    return SearchMeta(strategy=strategy, space=SMALL, seed=seed, dataset="demo")


def test_records_have_the_documented_keys(tmp_path):
    meta = small_meta()
    with Journal.create(tmp_path, meta) as journal:
        run_search(AnalyticObjective(), strategy_for(meta), journal, n_trials=2)
    records = [json.loads(line) for line in (tmp_path / JOURNAL_NAME).read_text().splitlines()]
    assert [r["state"] for r in records] == ["RUNNING", "COMPLETE", "RUNNING", "COMPLETE"]
    for key in ("trial", "state", "params", "value", "metrics", "error", "timings", "started_at", "finished_at", "worker"):
        assert all(key in r for r in records)
    assert records[1]["value"] == pytest.approx(analytic_value(records[1]["params"]))
    assert records[1]["timings"]["trial_s"] >= 0
    stored = json.loads((tmp_path / META_NAME).read_text())
    assert stored["strategy"] == "grid" and stored["space"] == SMALL.to_dict() and stored["dataset"] == "demo"


def test_the_journal_stores_trials_and_leaves_strategies_to_the_runner(tmp_path):
    import inspect

    import search.journal

    assert "strategies" not in inspect.getsource(search.journal)
    assert not hasattr(SearchMeta, "build_strategy") and not hasattr(Journal, "rebuild_strategy")
    meta = small_meta(strategy="random", seed=3)
    with Journal.create(tmp_path, meta) as journal:
        run_search(AnalyticObjective(), strategy_for(meta), journal, n_trials=2)
    strategy = strategy_for(SearchMeta.from_dict(json.loads((tmp_path / META_NAME).read_text())))
    assert (strategy.name, strategy.seed, strategy.space) == ("random", 3, SMALL)
    with pytest.raises(ConfigError, match="strategy_for needs a SearchMeta, got dict"):
        strategy_for(meta.to_dict())


def test_torn_last_line_is_skipped_with_a_warning_and_cut_on_resume(tmp_path, caplog):
    meta = small_meta()
    with Journal.create(tmp_path, meta) as journal:
        run_search(AnalyticObjective(), strategy_for(meta), journal, n_trials=2)
    path = tmp_path / JOURNAL_NAME
    with open(path, "ab") as f:
        f.write(b'{"trial": 3, "state": "RUNN')  # a write cut short by kill -9
    with caplog.at_level(logging.WARNING, logger="search.journal"):
        trials = load_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert "torn last" in caplog.text

    with Journal.resume(tmp_path, meta) as journal:
        result = run_search(AnalyticObjective(), strategy_for(journal.meta), journal, n_trials=4)
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 4
    # Every line of the file parses again: the torn tail was cut before appending.
    assert len(read_records(path)) == len(path.read_text().splitlines()) == 8


def test_lock_stops_a_second_search_on_the_same_directory(tmp_path):
    meta = small_meta()
    journal = Journal.create(tmp_path, meta)
    try:
        with pytest.raises(JournalError) as info:
            Journal.resume(tmp_path, meta)
        assert str(tmp_path) in str(info.value) and LOCK_NAME in str(info.value)
        # Another process is refused too.
        code = f"from search.journal import Journal; Journal.resume({str(tmp_path)!r})"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode != 0 and "another search is running" in out.stderr
    finally:
        journal.close()
    Journal.resume(tmp_path, meta).close()  # free again once closed


def test_create_refuses_an_existing_search_and_resume_refuses_a_different_one(tmp_path):
    Journal.create(tmp_path, small_meta()).close()
    with pytest.raises(SearchExistsError, match="already holds a search.*resume it or choose another") as info:
        Journal.create(tmp_path, small_meta())
    assert "--" not in str(info.value)  # the CLI adds its flags itself
    with pytest.raises(JournalError, match=r"differs .* in \['seed', 'strategy'\]"):
        Journal.resume(tmp_path, small_meta("random", seed=3))
    with pytest.raises(JournalError, match="not a directory"):
        Journal.resume(tmp_path / "missing")


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from search.analytic import AnalyticObjective
    from search.journal import Journal, SearchMeta
    from search.runner import run_search, strategy_for
    from search.space import Space

    meta = SearchMeta.from_dict({"strategy": "grid", "space": %r, "seed": 0, "dataset": "demo"})
    with Journal.create(sys.argv[1], meta) as journal:
        run_search(AnalyticObjective(sleep_s=0.3), strategy_for(meta), journal, n_trials=6)
    """
)


def test_resume_after_sigkill_loses_nothing_and_reruns_the_interrupted_trial(tmp_path):
    run_dir = tmp_path / "run"
    script = tmp_path / "search_script.py"
    script.write_text(KILL_SCRIPT % (SMALL.to_dict(),))
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    journal_path = run_dir / JOURNAL_NAME
    deadline = time.monotonic() + 60
    try:
        while True:
            assert time.monotonic() < deadline, "the search subprocess made no progress"
            assert proc.poll() is None, "the search subprocess ended before it could be killed"
            if journal_path.exists():
                trials = load_trials(run_dir)
                if sum(t.state is TrialState.COMPLETE for t in trials) >= 2 and trials[-1].state is TrialState.RUNNING:
                    break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    before = load_trials(run_dir)
    done_before = {t.id: t for t in before if t.state is TrialState.COMPLETE}
    interrupted = [t for t in before if t.state is TrialState.RUNNING]
    assert len(interrupted) == 1 and len(done_before) >= 2

    meta = small_meta()
    with Journal.resume(run_dir, meta) as journal:  # the killed process's lock is gone with it
        result = run_search(AnalyticObjective(), strategy_for(journal.meta), journal, n_trials=6)

    after = {t.id: t for t in result.trials}
    assert sorted(after) == list(range(1, 7))
    assert all(t.state is TrialState.COMPLETE for t in after.values())
    for tid, trial in done_before.items():  # nothing lost, nothing re-run
        assert after[tid].params == trial.params and after[tid].value == trial.value
        assert after[tid].finished_at == trial.finished_at
    rerun = after[interrupted[0].id]
    assert rerun.params == interrupted[0].params
    assert len({point_key(t.params) for t in after.values()}) == 6
    finals = [r for r in read_records(journal_path) if r["state"] != "RUNNING"]
    assert len(finals) == 6  # exactly one final record per trial
