"""Strategies, trial runner and journal. Never imports Paddle.

Typical use (the objective trains, exports and evaluates one point)::

    from search import SearchMeta, Journal, default_space, run_search, strategy_for

    space = default_space()
    meta = SearchMeta(strategy="bayes", space=space, seed=0, options={"acq_func": "EI"}, dataset="cars")
    with Journal.create("runs/cars-bayes", meta) as journal:
        result = run_search(objective, strategy_for(meta), journal, n_trials=30)
    print(result.best)
"""

from .journal import Journal, JournalError, SearchExistsError, SearchMeta, load_meta, load_trials
from .runner import SearchResult, TrialContext, current_trial, run_search, strategy_for
from .space import (
    Boolean,
    Categorical,
    Dimension,
    Integer,
    Real,
    Space,
    default_space,
    load_space,
    point_key,
    to_python,
)
from .strategies import FIXED_PARAMS, STRATEGIES, Strategy, bit_rule, make_strategy
from .trial import Trial, TrialPruned, TrialState

__all__ = [
    "Boolean", "Categorical", "Dimension", "FIXED_PARAMS", "Integer", "Journal", "JournalError", "Real",
    "STRATEGIES", "SearchExistsError", "SearchMeta", "SearchResult", "Space", "Strategy", "Trial", "TrialContext",
    "TrialPruned", "TrialState", "bit_rule", "current_trial", "default_space", "load_meta", "load_space",
    "load_trials", "make_strategy", "point_key", "run_search", "strategy_for", "to_python",
]
