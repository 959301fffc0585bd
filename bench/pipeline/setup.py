"""Starting a search: its meta and run directory from the resolved flags, and every check that
can run before the first trial trains (which also builds the objective)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from common.errors import ConfigError
from common.machine import usable_cores

from .presets import bit_options, search_space
from .scoring import EvalSettings, cached_splits


def new_search(base, flags: dict[str, Any], trials: Optional[int]):
    """Meta and run directory of a new search.

    ``flags`` maps every search setting (``strategy``, ``space``, ``search_seed``, ``acq_func``,
    ``n_initial_points``, ``bit_budget``, ``min_epochs``, ``eta``, ``replay``, ``name``, ``eval_*``,
    ``latency_*``, ``export_dir``, ``retrain_full``) to its value, defaults included; ``trials`` is ``--trials`` (None: unset).
    """
    from search import SearchMeta
    from search.multifidelity import is_multi_fidelity, rung_epochs

    strategy = flags["strategy"]
    space = search_space(flags["space"])
    options: dict[str, Any] = {}
    if strategy == "bayes":
        options = {"acq_func": flags["acq_func"], "n_initial_points": flags["n_initial_points"]}
    elif strategy == "bit":
        options = bit_options(base, flags["bit_budget"])
    elif is_multi_fidelity(strategy):
        options = {"max_epochs": base.epochs, "min_epochs": flags["min_epochs"], "eta": flags["eta"]}
        rung_epochs(flags["min_epochs"], base.epochs, flags["eta"])  # names the flag that is wrong
    if trials is None and strategy in ("random", "bayes"):
        trials = 20
    if trials is None and is_multi_fidelity(strategy):
        trials = MULTI_FIDELITY_TRIALS
    name = flags["name"] or f"{base.dataset}-{strategy}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    run_dir = (Path(base.out_dir) / name).resolve()
    export_dir = flags["export_dir"] or str(Path("exported_models") / f"{base.dataset}-{strategy}-best")
    settings = {
        "trials": trials,
        "eval_backend": flags["eval_backend"], "eval_precision": flags["eval_precision"],
        "eval_batch_size": flags["eval_batch_size"], "export_dir": str(Path(export_dir).resolve()),
        "replay": str(Path(flags["replay"]).resolve()) if flags["replay"] else None,
        "latency_seconds": flags["latency_seconds"], "latency_batch": flags["latency_batch"],
        "retrain_full": bool(flags["retrain_full"]),
    }
    meta = SearchMeta(strategy=strategy, space=space, seed=flags["search_seed"], options=options,
                      dataset=base.dataset, extra={"base_config": base.to_dict(), "settings": settings})
    if max_points(meta) == 1:
        settings["trials"] = 1  # fixed, bit: one point to run
    return meta, run_dir


#: Configurations an asha/bohb search starts unless --trials says otherwise (each costs a fraction
#: of a full trial unless it is promoted).
MULTI_FIDELITY_TRIALS = 40


def max_points(meta) -> Optional[int]:
    """How many points the search's strategy can propose (None: unbounded); asha/bohb: the space's size."""
    from search import strategy_for
    from search.multifidelity import is_multi_fidelity

    if is_multi_fidelity(meta.strategy):
        return meta.build_space().size()
    return strategy_for(meta).max_points


def prepare_objective(meta, run_dir: Path, base, settings, n_trials, *, workers: int, devices: Optional[str],
                      ray: Optional[str]) -> Any:
    """Everything that can be checked before the first trial trains; returns the objective.

    A mistake found here leaves no search directory behind, and one found later would
    otherwise fail every trial after its training.
    """
    import dataclasses

    from harness import runtime
    from harness.predictor import PredictorOptions, check_backend

    from .objective import TrialObjective

    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {n_trials}")
    if n_trials is None and max_points(meta) is None:
        raise ConfigError("--trials is needed: the search space has continuous dimensions")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if settings.get("replay"):
        from search.replay import ReplayObjective

        return ReplayObjective(settings["replay"])
    if settings["latency_seconds"] < 0 or settings["latency_batch"] < 1:
        raise ConfigError("--latency-seconds must be >= 0 and --latency-batch >= 1")
    if settings["eval_precision"] == "int8" and settings["eval_backend"] != "cpu":
        raise ConfigError(f"--eval-precision int8 scores with --eval-backend cpu (oneDNN); got {settings['eval_backend']!r}")
    check_backend(settings["eval_backend"], settings["eval_precision"])
    PredictorOptions(backend=settings["eval_backend"], precision=settings["eval_precision"],
                     batch_size=settings["eval_batch_size"])  # validates the batch size
    if not devices and not ray:
        # Fails now (one line) when --device gpu or --amp cannot run here.
        device = runtime.select_device(base.device)
        if base.amp and not device.startswith("gpu"):
            raise ConfigError(f"--amp {base.amp} needs a GPU; this search would train on {device}")
    splits = cached_splits(base)  # a missing or malformed dataset stops here
    if not splits.val:
        raise ConfigError(f"dataset {splits.name!r} has no validation images to score trials on")
    if workers > 1 and not devices and not ray and base.threads is None:
        # Processes sharing the CPU get an equal share of its cores instead of all of them each.
        base = dataclasses.replace(base, threads=max(1, usable_cores() // workers))
    evaluation = EvalSettings(settings["eval_backend"], settings["eval_precision"], settings["eval_batch_size"],
                              base.threads, settings["latency_seconds"], settings["latency_batch"])
    return TrialObjective(base, str(run_dir / "trials"), evaluation)


def dataset_metric(meta, base) -> str:
    """The dataset protocol's metric name (reading the file list is cheap; no images are decoded)."""
    if meta.extra.get("settings", {}).get("replay"):
        return "top1"
    return cached_splits(base).metric
