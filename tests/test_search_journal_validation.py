"""Journal validation: bad records are named and skipped, params outside the space are rejected,
and a resume whose journal was deleted while trial results remain is refused."""

from __future__ import annotations

import json
import logging

import pytest

from search.analytic import AnalyticObjective
from search.journal import JOURNAL_NAME, Journal, JournalError, SearchMeta, load_trials, read_records, record_problem
from search.runner import run_search, strategy_for
from search.space import Boolean, Categorical, Space

SMALL = Space({"lr": Categorical([0.1, 0.01, 0.001]), "mixup": Boolean()})
GOOD = {"trial": 1, "state": "COMPLETE", "params": {"lr": 0.1, "mixup": True}, "value": 0.5}


@pytest.mark.parametrize("change, problem", [
    ({"trial": "five"}, "'trial' must be an integer >= 1, got 'five'"),
    ({"trial": True}, "'trial' must be an integer"),
    ({"trial": 0}, "'trial' must be an integer >= 1"),
    ({"state": "DONE"}, "'state' must be one of"),
    ({"params": None}, "'params' must be an object"),
    ({"value": "high"}, "'value' must be a finite number or null"),
    ({"value": None}, "a COMPLETE record needs a 'value'"),
    ({"metrics": [1]}, "'metrics' must be an object"),
    ({"started_at": "noon"}, "'started_at' must be a number"),
    ({"worker": 1.5}, "'worker' must be an integer"),
    ({"params": {"lr": 0.5, "mixup": True}}, "params outside the search space: lr=0.5 is outside"),
    ({"params": {"lr": 0.1}}, "params outside the search space: .*missing \\['mixup'\\]"),
    ({"params": {"lr": 0.1, "mixup": True, "epochs": 3}}, "unexpected \\['epochs'\\]"),
    ({"rung": -1}, "'rung' must be an integer >= 0"),
    ({"rung": 1, "epochs": "two"}, "'epochs' must be an integer >= 1"),
])
def test_record_problem_names_what_is_wrong(change, problem):
    import re

    assert record_problem(GOOD, SMALL) is None
    record = {**GOOD, **change}
    found = record_problem(record, SMALL)
    assert found is not None and re.search(problem, found), found


def test_multi_fidelity_rung_records_are_valid():
    assert record_problem({**GOOD, "state": "PRUNED", "rung": 0, "epochs": 1}, SMALL) is None
    assert record_problem({**GOOD, "rung": 3, "epochs": 8}, SMALL) is None


def test_missing_params_are_rejected_even_without_a_space():
    record = {k: v for k, v in GOOD.items() if k != "params"}
    assert record_problem(record) == "no 'params' field"


def _search(run_dir, n=3):
    meta = SearchMeta(strategy="grid", space=SMALL, seed=0, dataset="demo")
    with Journal.create(run_dir, meta) as journal:
        run_search(AnalyticObjective(), strategy_for(meta), journal, n_trials=n)
    return meta


def test_bad_lines_are_named_skipped_and_the_search_resumes(tmp_path, caplog):
    meta = _search(tmp_path, n=2)
    path = tmp_path / JOURNAL_NAME
    with open(path, "a") as f:
        f.write(json.dumps({**GOOD, "trial": "five"}) + "\n")
        f.write(json.dumps({**GOOD, "trial": 9, "params": {"lr": 0.5, "mixup": True}}) + "\n")
        f.write(json.dumps({k: v for k, v in GOOD.items() if k != "params"} | {"trial": 10}) + "\n")
    caplog.set_level(logging.WARNING)
    trials = load_trials(tmp_path)
    assert [t.id for t in trials] == [1, 2]
    warned = [r.getMessage() for r in caplog.records if "invalid record skipped" in r.getMessage()]
    assert [w.split(": invalid")[0] for w in warned] == [f"{path} line {n}" for n in (5, 6, 7)]
    assert "'trial' must be an integer >= 1, got 'five'" in warned[0] and "lr=0.5" in warned[1]
    with Journal.resume(tmp_path, meta) as journal:
        assert [t.id for t in journal.trials()] == [1, 2] and journal.next_trial_id() == 3
        run_search(AnalyticObjective(), strategy_for(meta), journal, n_trials=3)
    assert [t.id for t in load_trials(tmp_path)] == [1, 2, 3]


def test_bit_and_fixed_points_are_their_own_and_not_checked_against_the_space(tmp_path):
    # The BiT rule sets momentum and schedule, which are not dimensions of the space.
    bit_point = {"lr": 0.003, "momentum": 0.9, "l2_decay": 0.0, "schedule": "step", "mixup": False}
    for strategy in ("bit", "fixed"):
        run = tmp_path / strategy
        meta = SearchMeta(strategy=strategy, space=SMALL, seed=0, options={}, dataset="demo")
        with Journal.create(run, meta) as journal:
            journal.append({**GOOD, "params": bit_point})
        assert [t.params for t in load_trials(run)] == [bit_point]
        with Journal.resume(run, meta) as journal:
            assert [t.params for t in journal.trials()] == [bit_point]
    grid = tmp_path / "grid"
    with Journal.create(grid, SearchMeta(strategy="grid", space=SMALL, seed=0, options={}, dataset="demo")) as journal:
        journal.append({**GOOD, "params": bit_point})
    assert load_trials(grid) == []


@pytest.mark.parametrize("damage", ["delete", "empty", "garbage"])
def test_resume_refuses_a_lost_journal_when_trial_results_remain(tmp_path, damage):
    meta = _search(tmp_path)
    (tmp_path / "trials" / "1").mkdir(parents=True)
    path = tmp_path / JOURNAL_NAME
    if damage == "delete":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_text('{"trial": "five", "state": "COMPLETE", "params": {}}\n')
    with pytest.raises(JournalError, match=r"cannot resume .*journal.jsonl (is missing|is empty|holds no valid trial "
                                           r"record), but trials remain from earlier trials; resuming would run every "
                                           r"trial again"):
        Journal.resume(tmp_path, meta)
    assert path.exists() == (damage != "delete")  # a refused resume leaves nothing behind
    # The lock was released: a second attempt is refused for the same reason, not for the lock.
    with pytest.raises(JournalError, match="cannot resume"):
        Journal.resume(tmp_path, meta)


def test_resume_of_a_search_that_never_started_a_trial_is_allowed(tmp_path):
    meta = SearchMeta(strategy="grid", space=SMALL, seed=0, dataset="demo")
    Journal.create(tmp_path, meta).close()
    (tmp_path / JOURNAL_NAME).unlink()
    with Journal.resume(tmp_path, meta) as journal:
        assert journal.trials() == []


def test_search_cli_refuses_resume_without_journal(tmp_path, capsys, tlbench_cache):
    pytest.importorskip("paddle")
    from bench.cli import main
    from bench.commands.search import SEARCH_DEFAULTS
    from bench.pipeline.setup import new_search
    from harness.config import TrainConfig

    base = TrainConfig(model="ResNet_tiny", dataset="demo", image_size=32, epochs=1, out_dir=str(tmp_path))
    flags = {**SEARCH_DEFAULTS, "strategy": "grid", "name": "s", "export_dir": str(tmp_path / "best")}
    meta, run_dir = new_search(base, flags, 2)
    Journal.create(run_dir, meta).close()
    (run_dir / "trials" / "1").mkdir(parents=True)
    (run_dir / JOURNAL_NAME).unlink()
    assert main(["-q", "search", "--resume", str(run_dir), "--trials", "3"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "journal.jsonl is missing, but trials remain" in err[0], err
    assert not (run_dir / JOURNAL_NAME).exists()
