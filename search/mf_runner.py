"""Run a multi-fidelity search (asha, bohb): rung jobs through the runner's executors, one journal record per rung.

The objective is an object with a ``run_rung(params, epochs, final)`` method returning what a
plain objective returns (``{"value", "metrics", "timings"}``): train ``params`` until ``epochs``
(continuing from the trial's checkpoint when it has one) and score it; ``final`` is True at
the top rung, where the model is trained in full. The current trial id
(:func:`search.runner.current_trial`) names the trial's directory, so a promoted trial finds its
checkpoint.

Journal records (on top of the usual trial keys) carry ``rung`` and ``epochs``:

- ``RUNNING`` when a rung job starts;
- ``PRUNED`` with the rung's value when a lower rung finishes (the trial is paused there; it
  may be promoted later, which writes a ``RUNNING`` record for the next rung);
- ``COMPLETE`` with the value when the top rung finishes;
- ``FAILED`` when a rung job fails (the configuration is never promoted).

So every reader of journals sees a trial's latest state: PRUNED at the rung it stopped at, or
COMPLETE with its full-budget value (the only values ``SearchResult.best`` compares). On resume,
every finished rung is told to the strategy again, and a rung job with a ``RUNNING`` record but
no final one runs again first, continuing from the trial's last saved state.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from common.errors import ConfigError
from common.validate import optional_positive_int

from .journal import Journal, SearchMeta
from .multifidelity import MultiFidelityStrategy, RungJob, make_multi_fidelity_strategy
from .runner import SearchResult, TrialContext, _execute_trial, check_execution, drive, make_executor, outcome_of
from .space import point_key
from .trial import Trial, TrialState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RungCall:
    """``objective.run_rung(params, epochs, final)`` as a one-argument callable (picklable)."""

    objective: Any
    epochs: int
    final: bool

    def __call__(self, params: dict[str, Any]) -> Any:
        return self.objective.run_rung(params, epochs=self.epochs, final=self.final)


def multi_fidelity_strategy_for(meta: SearchMeta) -> MultiFidelityStrategy:
    """A fresh multi-fidelity strategy as the search's metadata describes it."""
    return make_multi_fidelity_strategy(meta.strategy, meta.build_space(), seed=meta.seed, **meta.options)


def _rung_records(journal: Journal) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(final rung records in journal order, RUNNING rung records with no final record after them)."""
    finals: list[dict[str, Any]] = []
    open_jobs: dict[tuple[int, int], dict[str, Any]] = {}
    for record in journal.records:
        if "rung" not in record:
            continue
        slot = (int(record["trial"]), int(record["rung"]))
        if record["state"] == TrialState.RUNNING.value:
            open_jobs[slot] = record
        else:
            open_jobs.pop(slot, None)
            finals.append(record)
    return finals, list(open_jobs.values())


def run_multi_fidelity_search(
    objective: Any,
    strategy: MultiFidelityStrategy,
    journal: Journal,
    *,
    n_trials: Optional[int] = None,
    workers: int = 1,
    devices: Optional[Sequence[str]] = None,
    backend: str = "process",
    fresh_process: bool = True,
    ray_address: Optional[str] = None,
    ray_gpus_per_trial: float = 0.0,
    on_trial_start: Optional[Callable[[Trial], None]] = None,
    on_trial_end: Optional[Callable[[Trial], None]] = None,
) -> SearchResult:
    """Run (or continue) the multi-fidelity search journaled in ``journal``.

    - ``n_trials``: configurations to start in all (earlier runs included); ``None``: until the
      space is exhausted. After the last one starts, promotions go on until none follows the rule
      (and at least one configuration is trained in full).
    - ``workers``, ``devices``, ``backend`` (``"process"`` or ``"ray"``), ``fresh_process``,
      ``ray_address``, ``ray_gpus_per_trial``, ``on_trial_start``/``on_trial_end``: as in
      :func:`search.runner.run_search`. Workers never wait for a rung to fill: a free worker
      gets a promotion if one is due and a new configuration otherwise (asynchronous).

    Ctrl-C stops the search: running rung jobs stay RUNNING in the journal (they run again on
    resume, from the trial's last saved state) and the result has ``interrupted=True``.
    """
    if not isinstance(strategy, MultiFidelityStrategy):
        raise ConfigError(f"run_multi_fidelity_search needs a MultiFidelityStrategy, got {type(strategy).__name__}")
    if not isinstance(journal, Journal):
        raise ConfigError(f"run_multi_fidelity_search needs a Journal, got {type(journal).__name__}")
    if not callable(getattr(objective, "run_rung", None)):
        raise ConfigError(f"a multi-fidelity search needs an objective with a run_rung(params, epochs, final) method, "
                          f"got {type(objective).__name__}")
    optional_positive_int(n_trials, "n_trials")
    devices = check_execution(workers, devices, backend)

    # Bring the strategy up to date: every finished rung, then the rung jobs that were cut.
    finals, cut = _rung_records(journal)
    ids: dict[str, int] = {}
    for record in finals + cut:
        ids.setdefault(point_key(record["params"]), int(record["trial"]))
    strategy.replay((r["params"], int(r["rung"]), r["value"] if r["state"] != TrialState.FAILED.value else None)
                    for r in finals)
    retry: list[tuple[int, RungJob]] = []
    for record in cut:
        rung = int(record["rung"])
        job = RungJob(dict(record["params"]), rung, strategy.rungs[rung], strategy.rungs[rung - 1] if rung else 0,
                      rung == len(strategy.rungs) - 1)
        strategy.register_running(job)
        retry.append((int(record["trial"]), job))
    if finals or retry:
        log.info("resumed %s: %d rung result(s) told to the %s strategy, %d cut rung job(s) run again",
                 journal.run_dir, len(finals), strategy.name, len(retry))

    executor = make_executor(workers, devices, backend, fresh_process, ray_address, ray_gpus_per_trial)
    run_dir = str(journal.run_dir)
    next_id = journal.next_trial_id()
    active: dict[cf.Future, tuple[Trial, RungJob]] = {}
    free_slots = list(range(workers))
    n_new = 0

    def start(trial_id: int, job: RungJob) -> None:
        trial = Trial(trial_id, job.params, TrialState.RUNNING, started_at=time.time(), worker=free_slots.pop(0))
        journal.append({**trial.to_record(), "rung": job.rung, "epochs": job.epochs})
        if on_trial_start is not None:
            on_trial_start(trial)
        ctx = TrialContext(trial.id, trial.worker, devices[trial.worker] if devices else None, run_dir)
        call = RungCall(objective, job.epochs, job.top)
        active[executor.submit(trial.worker, _execute_trial, call, trial.params, ctx)] = (trial, job)

    def finish(future: cf.Future) -> None:
        trial, job = active.pop(future)
        free_slots.append(trial.worker)
        free_slots.sort()
        outcome = outcome_of(future, trial.started_at)
        state = TrialState(outcome.state)
        if state is TrialState.COMPLETE and not job.top:
            state = TrialState.PRUNED  # paused at a lower rung; a promotion continues it
        final = Trial(id=trial.id, params=trial.params, state=state, value=outcome.value,
                      metrics={**outcome.metrics, "rung": job.rung, "epochs": job.epochs}, error=outcome.error,
                      timings=outcome.timings, started_at=outcome.started_at, finished_at=outcome.finished_at,
                      worker=trial.worker)
        journal.append({**final.to_record(), "rung": job.rung, "epochs": job.epochs, "traceback": outcome.traceback})
        ok = outcome.state == TrialState.COMPLETE.value
        strategy.tell(job, outcome.value if ok else None)
        if not ok:
            log.warning("trial %d failed at rung %d (%d epochs): %s", trial.id, job.rung, job.epochs, outcome.error)
        if on_trial_end is not None:
            on_trial_end(final)

    def fill() -> None:
        nonlocal next_id, n_new
        while free_slots and retry:
            start(*retry.pop(0))
        while free_slots:
            if n_trials is not None and strategy.n_configs >= n_trials:
                strategy.stop_new()
            job = strategy.ask()
            if job is None:
                break
            trial_id = ids.get(job.key)
            if trial_id is None:
                trial_id = ids[job.key] = next_id
                next_id += 1
                n_new += 1
            start(trial_id, job)

    interrupted = drive(executor, fill, active, finish, lambda f: active[f][0].id)

    trials = journal.trials()
    if interrupted:
        log.warning("search in %s interrupted; its cut rung job(s) will run again when it is resumed", run_dir)
    return SearchResult(trials=trials, run_dir=run_dir, interrupted=interrupted, exhausted=strategy.finished, n_new=n_new)
