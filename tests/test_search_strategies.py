"""Strategies on analytic objectives: one contract for all, then each strategy's own promises."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from harness.config import TrainConfig
from common.errors import ConfigError
from search.analytic import ANALYTIC_OPTIMUM, analytic_value
from search.space import Boolean, Categorical, Integer, Real, Space, default_space, point_key
from search.strategies import FIXED_PARAMS, STRATEGIES, BayesStrategy, bit_rule, make_strategy, skopt_dimension
from search.trial import Trial, TrialState

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
TINY = Space({"lr": Categorical([0.1, 0.01]), "mixup": Boolean()})  # 4 points
BIT_OPTIONS = {"train_size": 8144, "image_hw": (360, 640)}

# (strategy, options, whether its points come from the space)
CONTRACT = [
    ("fixed", {}, True),
    ("grid", {}, True),
    ("random", {}, True),
    ("bayes", {"acq_func": "EI", "n_initial_points": 3}, True),
    ("bit", BIT_OPTIONS, False),
]
#: max_points of each strategy on TINY and on a space with a continuous dimension (None: unbounded,
#: "refuses": the strategy cannot be built there).
MAX_POINTS = {
    "fixed": (1, 1),
    "grid": (TINY.size(), "refuses"),
    "random": (TINY.size(), None),
    "bayes": (TINY.size(), None),
    "bit": (1, 1),
}
CONTINUOUS = Space({"lr": Real(1e-4, 1e-1, log=True), "mixup": Boolean()})


def objective(params):
    return analytic_value({"l2_decay": 1e-4, **params})


def drive(strategy, n):
    """Ask/tell up to n times; returns the asked points."""
    asked = []
    for _ in range(n):
        params = strategy.ask()
        if params is None:
            break
        asked.append(params)
        strategy.tell(params, objective(params))
    return asked


def test_contract_covers_every_strategy():
    assert {name for name, _, _ in CONTRACT} == set(STRATEGIES) == set(MAX_POINTS)


@pytest.mark.parametrize("name, options, in_space", CONTRACT, ids=[c[0] for c in CONTRACT])
class TestStrategyContract:
    """Every strategy keeps these promises on the seed's space and on a tiny one."""

    def test_asks_are_json_safe_points_of_the_space(self, name, options, in_space):
        space = default_space()
        strategy = make_strategy(name, space, seed=0, **options)
        asked = drive(strategy, 8)
        assert asked
        for params in asked:
            assert json.loads(json.dumps(params)) == params
            assert {type(v) for v in params.values()} <= {bool, int, float, str}
            assert set(params) <= TRAIN_FIELDS
            TrainConfig().replace(**params)
            if in_space:
                assert space.validate(params) == params

    def test_no_duplicates_and_exhaustion_on_a_discrete_space(self, name, options, in_space):
        strategy = make_strategy(name, TINY, seed=1, **options)
        asked = drive(strategy, 10)
        assert len({point_key(p) for p in asked}) == len(asked)
        assert len(asked) == strategy.max_points == MAX_POINTS[name][0]
        assert strategy.remaining == 0
        assert strategy.ask() is None
        assert strategy.ask_batch(3) == []

    def test_max_points_bounds_what_it_proposes(self, name, options, in_space):
        tiny, continuous = MAX_POINTS[name]
        strategy = make_strategy(name, TINY, seed=5, **options)
        assert strategy.max_points == strategy.remaining == tiny
        strategy.ask_batch(1)
        assert strategy.remaining == tiny - 1  # the pending point counts
        if continuous == "refuses":
            with pytest.raises(ConfigError):
                make_strategy(name, CONTINUOUS, seed=5, **options)
            return
        strategy = make_strategy(name, CONTINUOUS, seed=5, **options)
        assert strategy.max_points == continuous
        if continuous is None:
            assert strategy.remaining is None
            assert len(drive(strategy, 6)) == 6  # goes on as long as it is asked

    def test_pending_points_are_not_handed_out_twice(self, name, options, in_space):
        strategy = make_strategy(name, TINY, seed=2, **options)
        batch = strategy.ask_batch(3)
        more = strategy.ask_batch(3)
        keys = [point_key(p) for p in batch + more]
        assert len(set(keys)) == len(keys)
        assert len(keys) == strategy.max_points

    def test_replay_rebuilds_the_state(self, name, options, in_space):
        first = make_strategy(name, TINY, seed=3, **options)
        asked = drive(first, 2)
        trials = [Trial(i + 1, p, TrialState.COMPLETE, value=objective(p)) for i, p in enumerate(asked)]
        rebuilt = make_strategy(name, TINY, seed=3, **options)
        assert rebuilt.replay(trials) == len(trials)
        rest = drive(rebuilt, 10)
        assert not {point_key(p) for p in rest} & {point_key(p) for p in asked}
        assert len(asked) + len(rest) == rebuilt.max_points

    def test_failure_is_told_as_a_penalty_and_never_revisited(self, name, options, in_space):
        strategy = make_strategy(name, TINY, seed=4, **options)
        first = strategy.ask()
        strategy.tell(first, 0.8)
        second = strategy.ask()
        if second is None:  # one-trial strategies
            assert strategy.max_points == 1
            return
        strategy.tell(second, None)
        assert strategy.penalty() == 0.8  # the worst value observed so far
        rest = drive(strategy, 10)
        assert point_key(second) not in {point_key(p) for p in rest}
        assert point_key(first) not in {point_key(p) for p in rest}


def test_grid_yields_every_point_once_in_fixed_order():
    strategy = make_strategy("grid", default_space())
    asked = drive(strategy, 500)
    assert len(asked) == 196
    assert len({point_key(p) for p in asked}) == 196
    assert asked == default_space().grid()


def test_grid_refuses_a_continuous_space():
    with pytest.raises(ConfigError, match="discrete"):
        make_strategy("grid", Space({"lr": Real(1e-4, 1e-1, log=True)}))


def test_random_is_seeded_and_without_replacement():
    a = drive(make_strategy("random", default_space(), seed=7), 196)
    b = drive(make_strategy("random", default_space(), seed=7), 20)
    c = drive(make_strategy("random", default_space(), seed=8), 20)
    assert a[:20] == b
    assert a[:20] != c
    assert len({point_key(p) for p in a}) == 196


def test_random_on_a_mixed_space_samples_within_bounds():
    space = Space({"lr": Real(1e-4, 1e-1, log=True), "epochs": Integer(2, 40, log=True), "mixup": Boolean()})
    asked = drive(make_strategy("random", space, seed=0), 200)
    assert len(asked) == 200
    lrs = [p["lr"] for p in asked]
    assert all(1e-4 <= v <= 1e-1 for v in lrs)
    # Log-uniform: about a third of the draws per decade.
    assert 40 < sum(v < 1e-3 for v in lrs) < 100
    assert {p["epochs"] for p in asked} >= {2, 40}


def test_fixed_is_the_seeds_scheme():
    strategy = make_strategy("fixed", default_space())
    assert strategy.ask() == FIXED_PARAMS == {"lr": 0.003, "l2_decay": 1e-4, "label_smoothing": False, "mixup": False}


def test_bayes_finds_the_optimum_of_the_analytic_function_within_25_trials():
    strategy = make_strategy("bayes", default_space(), seed=0, acq_func="EI", n_initial_points=8)
    asked = drive(strategy, 25)
    values = [analytic_value(p) for p in asked]
    assert max(values) >= analytic_value(ANALYTIC_OPTIMUM) - 0.005
    assert len({point_key(p) for p in asked}) == len(asked)


def test_bayes_answers_repeated_proposals_from_the_journal():
    # Four points and one random initial point: skopt proposes evaluated points again and again.
    strategy = make_strategy("bayes", TINY, seed=0, acq_func="EI", n_initial_points=1, max_retries=2)
    told_before = []
    asked = []
    while (params := strategy.ask()) is not None:
        asked.append(params)
        told_before.append(len(strategy._opt.Xi))
        strategy.tell(params, objective(params))
    assert len(asked) == 4 and len({point_key(p) for p in asked}) == 4
    assert strategy.n_repeated + strategy.n_fallbacks > 0
    # Repeated proposals were told their cached value, so skopt saw more points than trials ran.
    assert len(strategy._opt.Xi) == len(asked) + strategy.n_repeated


def test_bayes_tells_skopt_the_negated_value_and_the_penalty():
    strategy = make_strategy("bayes", TINY, seed=0, acq_func="EI", n_initial_points=4)
    a, b = strategy.ask_batch(2)
    strategy.tell(a, 0.7)
    strategy.tell(b, None)
    assert strategy._opt.yi == [-0.7, -0.7]


def test_bayes_batch_ask_with_constant_liar_gives_distinct_points():
    strategy = make_strategy("bayes", default_space(), seed=0, acq_func="EI", n_initial_points=2)
    drive(strategy, 2)
    batch = strategy.ask_batch(3)
    assert len(batch) == 3 and len({point_key(p) for p in batch}) == 3
    assert strategy.n_pending == 3
    extra = strategy.ask()
    assert point_key(extra) not in {point_key(p) for p in batch}


def test_skopt_round_trip_is_exact_and_plain_python():
    space = default_space().with_dimensions({"epochs": Integer(2, 9), "schedule": Categorical(["cosine", "step"]),
                                             "mixup_alpha": Real(0.1, 0.4), "warmup_epochs": Categorical([2])})
    sk = [(name, skopt_dimension(dim)) for name, dim in space.items()]
    assert len(sk) == 8
    rng = np.random.default_rng(0)
    for _ in range(50):
        point = space.sample(rng)
        sk_point = [d.to_skopt(point[name]) for name, d in sk]
        back = {name: d.from_skopt(np.asarray(v).item() if not isinstance(v, str) else v)
                for (name, d), v in zip(sk, sk_point)}
        assert back == point
        assert all(type(back[k]) is type(point[k]) for k in point)
    # skopt hands out numpy scalars; ours come back as Python types.
    from skopt import Optimizer

    x = Optimizer([d.dimension for _, d in sk], random_state=1).ask()
    params = {name: d.from_skopt(v) for (name, d), v in zip(sk, x)}
    assert space.validate(params) == params
    assert {type(v) for v in params.values()} <= {bool, int, float, str}


def test_ordinal_categorical_is_a_rank_index_for_skopt():
    from skopt.space import Integer as SkInteger

    sk = skopt_dimension(Categorical([0.1, 0.01, 0.001]))
    assert isinstance(sk.dimension, SkInteger) and (sk.dimension.low, sk.dimension.high) == (0, 2)
    assert sk.to_skopt(0.001) == 0 and sk.to_skopt(0.1) == 2
    assert sk.from_skopt(np.int64(1)) == 0.01


def test_skopt_dimension_says_what_it_cannot_model():
    with pytest.raises(ConfigError, match=r"got \(0.1, 0.2\) of type tuple"):
        skopt_dimension((0.1, 0.2))
    with pytest.raises(ConfigError, match="is not one of the choices"):
        skopt_dimension(Boolean()).to_skopt("yes")


@pytest.mark.parametrize(
    "options, match",
    [
        ({"acq_func": "UCB"}, "acq_func"),
        ({"n_initial_points": 0}, "n_initial_points"),
        ({"liar": "lie"}, "liar"),
    ],
)
def test_bayes_options_are_validated(options, match):
    with pytest.raises(ConfigError, match=match):
        BayesStrategy(default_space(), **options)


def test_make_strategy_rejects_unknown_names_and_options():
    with pytest.raises(ConfigError, match="unknown strategy 'tpe'"):
        make_strategy("tpe", default_space())
    with pytest.raises(ConfigError, match="does not take option.*kappa"):
        make_strategy("random", default_space(), kappa=2.0)
    with pytest.raises(ConfigError, match="train_size"):
        make_strategy("bit", default_space())


@pytest.mark.parametrize(
    "train_size, hw, steps, image_size, resize_short, mixup",
    [
        (1_000, (32, 32), 500, 128, 160, False),
        (19_999, (500, 375), 500, 384, 448, False),
        (50_000, (64, 96), 10_000, 128, 160, True),
        (600_000, (256, 256), 20_000, 384, 448, True),
    ],
)
def test_bit_hyperrule(train_size, hw, steps, image_size, resize_short, mixup):
    rule = bit_rule(train_size, hw)
    assert rule.steps == steps
    assert rule.epochs == math.ceil(steps * 512 / train_size)
    params = make_strategy("bit", default_space(), train_size=train_size, image_hw=hw).ask()
    assert params["lr"] == 0.003 and params["momentum"] == 0.9 and params["l2_decay"] == 0.0
    assert params["schedule"] == "step"
    assert (params["image_size"], params["resize_short"]) == (image_size, resize_short)
    assert params["mixup"] is mixup
    assert params.get("mixup_alpha") == (0.1 if mixup else None)
    cfg = TrainConfig().replace(**params)  # every key is a TrainConfig field
    assert cfg.epochs == rule.epochs


def test_bit_recipe_budget_keeps_the_callers_epochs_and_size():
    # 576 images of ~230 kpx: the rule asks for 445 epochs at 384 px; "recipe" keeps only its optimiser.
    rule_params = make_strategy("bit", default_space(), train_size=576, image_hw=(500, 500)).ask()
    assert rule_params["epochs"] == math.ceil(500 * 512 / 576) and rule_params["image_size"] == 384
    params = make_strategy("bit", default_space(), train_size=576, image_hw=(500, 500), budget="recipe").ask()
    assert not {"epochs", "image_size", "resize_short"} & set(params)
    assert {k: params[k] for k in ("lr", "l2_decay", "schedule", "mixup")} == {
        k: rule_params[k] for k in ("lr", "l2_decay", "schedule", "mixup")}
    base = TrainConfig(epochs=8, image_size=96)
    cfg = base.replace(**params)
    assert (cfg.epochs, cfg.image_size, cfg.schedule, cfg.lr) == (8, 96, "step", 0.003)
    with pytest.raises(ConfigError, match="budget"):
        make_strategy("bit", default_space(), train_size=576, image_hw=(500, 500), budget="gpu")


def test_bayes_on_a_mixed_space_from_a_space_file():
    space = Space({
        "lr": Real(1e-4, 1e-1, log=True),
        "epochs": Integer(2, 20),
        "schedule": Categorical(["cosine", "step"]),
        "mixup": Boolean(),
    })
    strategy = make_strategy("bayes", space, seed=0, acq_func="LCB", n_initial_points=3)
    asked = []
    for _ in range(6):
        params = strategy.ask()
        asked.append(params)
        strategy.tell(params, objective({"l2_decay": 1e-4, **params}) - 0.001 * params["epochs"])
    for params in asked:
        assert space.validate(params) == params
        assert type(params["epochs"]) is int and params["schedule"] in ("cosine", "step")
        assert type(params["mixup"]) is bool
    assert len({point_key(p) for p in asked}) == 6


def test_random_and_bayes_fallback_sample_a_space_too_large_to_enumerate():
    # 2000 * 1017 * 2 ≈ 4 million points: above the grid limit, so no grid may be built.
    space = Space({"lr": Categorical([0.1, 0.01]), "epochs": Integer(1, 2000), "batch": Integer(8, 1024)})
    with pytest.raises(ConfigError, match="more than the limit"):
        space.grid()
    asked = drive(make_strategy("random", space, seed=3), 60)
    assert len(asked) == 60 and len({point_key(p) for p in asked}) == 60
    assert all(1 <= p["epochs"] <= 2000 and 8 <= p["batch"] <= 1024 for p in asked)
    assert asked[:10] == drive(make_strategy("random", space, seed=3), 10)
    bayes = make_strategy("bayes", space, seed=0, n_initial_points=2)
    taken = {point_key(p) for p in asked}
    fallback = bayes._random_free(taken)
    assert fallback is not None and point_key(fallback) not in taken and space.validate(fallback) == fallback


def test_bayes_defaults_are_the_search_commands():
    # `bench replay --strategies bayes` must replay what `bench search --strategy bayes` runs.
    from bench.commands.search import SEARCH_DEFAULTS

    live = make_strategy("bayes", default_space(), seed=3, acq_func=SEARCH_DEFAULTS["acq_func"],
                         n_initial_points=SEARCH_DEFAULTS["n_initial_points"])
    replayed = make_strategy("bayes", default_space(), seed=3)
    from search.analytic import analytic_value

    for _ in range(SEARCH_DEFAULTS["n_initial_points"] + 3):  # past the random start, into the GP's proposals
        a, b = live.ask(), replayed.ask()
        assert a == b
        live.tell(a, analytic_value(a))
        replayed.tell(b, analytic_value(b))
