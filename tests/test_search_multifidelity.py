"""Multi-fidelity strategies (asha, bohb): rungs, the promotion rule, failures, the density model, replay.

Analytic objectives only; no Paddle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from search.analytic import analytic_value
from search.density import ProductKDE
from search.multifidelity import (
    BohbStrategy,
    RungJob,
    is_multi_fidelity,
    make_multi_fidelity_strategy,
    rung_epochs,
)
from search.replay import ReplayObjective, StrategyConfig, compare_strategies, multi_fidelity_to_target
from search.space import Boolean, Categorical, Space, default_space, point_key

SLICE = Path(__file__).parent / "data" / "flowers12_grid_slice"


def analytic_at(params, epochs, max_epochs=8):
    """A learning curve that rises towards analytic_value: rankings at low epochs are mostly kept."""
    return analytic_value(params) * (1 - 0.5 * math.exp(-epochs / 2)) / (1 - 0.5 * math.exp(-max_epochs / 2))


def run_serially(strategy, value_at=analytic_at, fail=lambda job: False):
    jobs = []
    while (job := strategy.ask()) is not None:
        jobs.append(job)
        strategy.tell(job, None if fail(job) else value_at(job.params, job.epochs))
    return jobs


def test_rungs_and_their_flag_errors():
    assert rung_epochs(1, 8, 2) == [1, 2, 4, 8]
    assert rung_epochs(2, 8, 2) == [2, 4, 8]
    assert rung_epochs(1, 6, 2) == [1, 2, 4, 6]
    assert rung_epochs(1, 9, 3) == [1, 3, 9]
    assert rung_epochs(3, 3, 2) == [3]
    with pytest.raises(ConfigError, match="--eta"):
        rung_epochs(1, 8, 1)
    with pytest.raises(ConfigError, match="--min-epochs"):
        rung_epochs(0, 8, 2)
    with pytest.raises(ConfigError, match="--epochs .* --min-epochs"):
        rung_epochs(4, 2, 2)


def test_promotion_follows_the_successive_halving_rule():
    space = Space({"x": Categorical([1, 2, 3, 4, 5, 6, 7, 8])})
    asha = make_multi_fidelity_strategy("asha", space, seed=0, max_epochs=4, min_epochs=1, eta=2)
    assert asha.rungs == [1, 2, 4]
    first = asha.ask()
    assert (first.rung, first.start_epochs, first.epochs, first.top) == (0, 0, 1, False)
    asha.tell(first, 0.2)
    second = asha.ask()  # one result: floor(1 / 2) = 0 promotable, so a new configuration
    assert second.rung == 0 and second.key != first.key
    asha.tell(second, 0.5)
    third = asha.ask()  # two results: the top one (0.5) is promoted, continuing from epoch 1
    assert (third.key, third.rung, third.start_epochs, third.epochs) == (second.key, 1, 1, 2)
    asha.tell(third, 0.6)
    fourth = asha.ask()  # rung 1 has one result: nothing to promote there; rung 0's top is taken
    assert fourth.rung == 0 and fourth.key not in (first.key, second.key)
    asha.tell(fourth, 0.9)
    fifth = asha.ask()  # rung 0: [0.9, 0.5, 0.2] -> top 1 is the new one
    assert (fifth.key, fifth.rung) == (fourth.key, 1)
    asha.tell(fifth, 0.95)
    sixth = asha.ask()  # rung 1: [0.95, 0.6] -> top 1 goes to the top rung, trained from epoch 2 to 4
    assert (sixth.key, sixth.rung, sixth.start_epochs, sixth.epochs, sixth.top) == (fourth.key, 2, 2, 4, True)


@pytest.mark.parametrize("name", ["asha", "bohb"])
def test_a_search_drains_the_space_without_repeats(name):
    space = default_space()
    strategy = make_multi_fidelity_strategy(name, space, seed=3, max_epochs=8)
    jobs = run_serially(strategy)
    assert strategy.finished and strategy.ask() is None
    starts = [j.key for j in jobs if j.rung == 0]
    assert len(starts) == len(set(starts)) == space.size()
    # Every configuration climbs one rung at a time, continuing where it stopped.
    by_key: dict[str, list[RungJob]] = {}
    for job in jobs:
        by_key.setdefault(job.key, []).append(job)
    for seq in by_key.values():
        assert [j.rung for j in seq] == list(range(len(seq)))
        assert all(j.start_epochs == (strategy.rungs[j.rung - 1] if j.rung else 0) for j in seq)
    assert sum(j.cost_epochs for j in jobs) == sum(strategy.rungs[len(s) - 1] for s in by_key.values())
    # Draining trains every configuration to the top in the end: the best one is found.
    top = strategy.results(len(strategy.rungs) - 1)
    assert max(top.values()) == pytest.approx(max(analytic_at(p, 8) for p in space.grid()))


def test_early_promotions_pick_the_better_configurations():
    space = default_space()
    jobs = []
    strategy = make_multi_fidelity_strategy("asha", space, seed=1, max_epochs=8)
    while len(jobs) < 60:
        job = strategy.ask()
        jobs.append(job)
        strategy.tell(job, analytic_at(job.params, job.epochs))
    promoted = {j.key for j in jobs if j.rung == 1}
    started = [j for j in jobs if j.rung == 0]
    mean_all = np.mean([analytic_value(j.params) for j in started])
    mean_promoted = np.mean([analytic_value(strategy.params_of(k)) for k in promoted])
    assert promoted and mean_promoted > mean_all


@pytest.mark.parametrize("name", ["asha", "bohb"])
def test_a_failure_at_a_rung_stops_that_configuration_only(name):
    space = default_space()
    strategy = make_multi_fidelity_strategy(name, space, seed=0, max_epochs=4)
    failing: set[str] = set()

    def fail(job):
        # Every configuration with mixup fails when it reaches rung 1.
        if job.params["mixup"] and job.rung == 1:
            failing.add(job.key)
            return True
        return False

    jobs = run_serially(strategy, fail=fail)
    assert failing
    assert not any(j.key in failing and j.rung > 1 for j in jobs)
    assert all(strategy.params_of(k)["mixup"] is False for k in strategy.results(len(strategy.rungs) - 1))
    assert strategy.finished


def test_resumed_strategy_continues_where_the_journal_stopped():
    space = default_space()
    a = make_multi_fidelity_strategy("bohb", space, seed=5, max_epochs=8)
    told = []
    for _ in range(40):
        job = a.ask()
        value = analytic_at(job.params, job.epochs)
        a.tell(job, value)
        told.append((job.params, job.rung, value))
    cut = a.ask()  # this job was running when the search was killed
    b = make_multi_fidelity_strategy("bohb", space, seed=5, max_epochs=8)
    assert b.replay(told) == 40
    b.register_running(cut)
    for _ in range(40):
        job = b.ask()
        assert not (job.key == cut.key and job.rung == cut.rung)
        assert job.rung > 0 or job.key not in {point_key(p) for p, _, _ in told}
        b.tell(job, analytic_at(job.params, job.epochs))


def test_bohb_uses_its_model_and_beats_random_proposals_on_an_analytic_objective():
    space = default_space()

    def mean_of_new_configs(name, seed):
        strategy = make_multi_fidelity_strategy(name, space, seed=seed, max_epochs=8)
        jobs = []
        while len([j for j in jobs if j.rung == 0]) < 60:
            job = strategy.ask()
            jobs.append(job)
            strategy.tell(job, analytic_at(job.params, job.epochs))
        return np.mean([analytic_value(j.params) for j in jobs if j.rung == 0][20:]), strategy

    bohb = [mean_of_new_configs("bohb", s) for s in range(4)]
    asha = [mean_of_new_configs("asha", s)[0] for s in range(4)]
    assert all(s.n_model_proposals > 0 for _, s in bohb)
    assert np.mean([m for m, _ in bohb]) > np.mean(asha)


def test_bohb_options_are_checked():
    with pytest.raises(ConfigError, match="top_fraction"):
        BohbStrategy(default_space(), top_fraction=0)
    with pytest.raises(ConfigError, match="does not take option"):
        make_multi_fidelity_strategy("bohb", default_space(), acq_func="EI")
    assert is_multi_fidelity("asha") and is_multi_fidelity("bohb") and not is_multi_fidelity("bayes")


def test_product_kde_is_a_distribution_over_the_grid():
    space = Space({"lr": Categorical([0.1, 0.03, 0.01, 0.003]), "ls": Boolean()})
    kde = ProductKDE(space).fit([{"lr": 0.1, "ls": True}, {"lr": 0.03, "ls": True}, {"lr": 0.1, "ls": False}])
    total = sum(kde.pdf(p) for p in space.grid())
    assert total == pytest.approx(1.0)
    # Mass follows the fitted points and the order of the ordinal values.
    assert kde.pdf({"lr": 0.1, "ls": True}) > kde.pdf({"lr": 0.01, "ls": True}) > kde.pdf({"lr": 0.003, "ls": True})
    rng = np.random.default_rng(0)
    draws = [kde.sample(rng, 3.0) for _ in range(200)]
    assert all(space.validate(d) == d for d in draws)
    assert len({point_key(d) for d in draws}) > 3  # widened bandwidths explore


def test_replay_counts_epochs_and_reads_lower_rungs_from_the_history():
    objective = ReplayObjective(SLICE)
    assert objective.max_epochs == 8
    trial = objective.trials[0]
    assert objective.at_epochs(trial.params, 2) == trial.metrics["train_history"][1]["val_top1"]
    assert objective.at_epochs(trial.params, 8) == trial.value
    strategy = make_multi_fidelity_strategy("asha", objective.space, seed=0, max_epochs=8)
    run = multi_fidelity_to_target(strategy, objective, objective.best_value, 56, curve_fte=56)
    assert run.reached_fte is not None and run.reached_fte * 8 == int(run.reached_fte * 8)
    assert len(run.curve) == 56
    seen = [v for v in run.curve if v is not None]
    assert seen == sorted(seen) and seen[-1] == objective.best_value
    assert run.curve[math.ceil(run.reached_fte) - 1] == objective.best_value


def test_multi_fidelity_strategies_replayed_on_the_slice():
    objective = ReplayObjective(SLICE)
    configs = [StrategyConfig("random", "random"), StrategyConfig("asha", "asha"),
               StrategyConfig("bohb", "bohb", {"min_epochs": 2})]
    result = compare_strategies(objective, configs, seeds=5, within=1 / 144, budgets=(8, 12, 20))
    rows = {r["label"]: r for r in result["strategies"]}
    assert rows["asha"]["rungs"] == [1, 2, 4, 8] and rows["bohb"]["rungs"] == [2, 4, 8]
    for row in result["strategies"]:
        assert row["reached"] == 5  # the slice is complete, so draining reaches the target
        assert {"median_fte", "iqr_fte", "reached_share", "median_trials"} <= set(row)
        shares = [row["reached_share"][b] for b in ("8", "12", "20")]
        assert shares == sorted(shares)
        assert len(row["best_so_far"]["median"]) == 20
    # A multi-fidelity seed pays at least one full trial, and lower rungs cost fractions of one.
    assert all(f >= 1 for f in rows["asha"]["fte"])
    assert any(f != int(f) for f in rows["asha"]["fte"] + rows["bohb"]["fte"])
    assert rows["random"]["fte"] == [float(t) for t in rows["random"]["trials"]]
    json.dumps(result, allow_nan=False)
