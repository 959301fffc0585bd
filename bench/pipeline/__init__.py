"""The search pipeline that joins ``search`` and ``harness``: the trial objective (fine-tune →
export → score), the presets a search starts from, and finalizing the best trial (export,
optional retraining on train+val, one test evaluation).

``search`` calls the objective without knowing Paddle; the objective calls ``harness`` without
knowing the search. Modules are imported directly; this package imports nothing.
"""
