"""Run a search: ask the strategy, run the objective, journal every trial, tell the result.

The objective is any callable ``objective(params) -> dict`` (or a picklable object with
``__call__``) returning::

    {"value": float,                 # to maximise (e.g. exported-model val top-1 in [0, 1])
     "metrics": {...},               # optional, JSON-able (e.g. top5, latency_p99_ms, img_per_s)
     "timings": {"train_s": ..., }}  # optional, seconds

A bare number is accepted as ``{"value": number}``. Raising :class:`~search.trial.TrialPruned`
ends the trial PRUNED; any other exception (and a non-finite value) ends it FAILED with the
error and traceback in the journal, and the search goes on. The strategy is told a penalty for
FAILED and PRUNED trials (see ``Strategy.penalty``).

While a trial runs, :func:`current_trial` (read from environment variables, so it works in
worker processes too) tells the objective its trial id, worker slot, device and run directory.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from common.errors import ConfigError, TlbenchError
from common.validate import optional_positive_int, positive_int

from .journal import Journal, SearchMeta
from .space import to_python
from .strategies import Strategy, make_strategy
from .trial import Trial, TrialPruned, TrialState

log = logging.getLogger(__name__)

ENV_TRIAL = "TLBENCH_TRIAL"
ENV_WORKER = "TLBENCH_WORKER"
ENV_DEVICE = "TLBENCH_DEVICE"
ENV_RUN_DIR = "TLBENCH_RUN_DIR"

BACKENDS = ("process", "ray")


@dataclass(frozen=True)
class TrialContext:
    """Where the current trial runs: ``trial`` id, ``worker`` slot (0-based), ``device`` (or None), ``run_dir``."""

    trial: int
    worker: int
    device: Optional[str]
    run_dir: Optional[str]


def current_trial() -> Optional[TrialContext]:
    """Context of the trial running in this process, or ``None`` outside a search trial."""
    if ENV_TRIAL not in os.environ:
        return None
    return TrialContext(
        trial=int(os.environ[ENV_TRIAL]),
        worker=int(os.environ.get(ENV_WORKER, "0")),
        device=os.environ.get(ENV_DEVICE) or None,
        run_dir=os.environ.get(ENV_RUN_DIR) or None,
    )


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`run_search`: every trial of the journal (by id) and how the run ended."""

    trials: list[Trial]
    run_dir: str
    interrupted: bool = False
    exhausted: bool = False
    n_new: int = 0

    @property
    def best(self) -> Optional[Trial]:
        """The COMPLETE trial with the highest value (earliest on ties), or None."""
        complete = [t for t in self.trials if t.state is TrialState.COMPLETE]
        return max(complete, key=lambda t: (t.value, -t.id)) if complete else None

    def count(self, state: TrialState) -> int:
        """Number of trials in ``state``."""
        return sum(t.state is state for t in self.trials)


def strategy_for(meta: SearchMeta) -> Strategy:
    """A fresh strategy as a search's metadata describes it: its name, space, seed and options.

    To continue a search, hand it to :func:`run_search` with the search's journal, which tells
    it the journal's finished trials first.
    """
    if not isinstance(meta, SearchMeta):
        raise ConfigError(f"strategy_for needs a SearchMeta, got {type(meta).__name__}: {meta!r}")
    return make_strategy(meta.strategy, meta.build_space(), seed=meta.seed, **meta.options)


@dataclass
class _Outcome:
    """What a trial execution sends back across a process boundary (always picklable)."""

    state: str
    value: Optional[float] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None
    traceback: Optional[str] = None
    started_at: float = 0.0
    finished_at: float = 0.0


def _json_clean(value: Any) -> Any:
    """to_python, with non-finite floats replaced by None (the journal is strict JSON)."""
    value = to_python(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_clean(v) for v in value]
    if not isinstance(value, (bool, int, float, str, type(None))):
        return str(value)
    return value


def _set_trial_env(ctx: TrialContext) -> dict[str, Optional[str]]:
    names = (ENV_TRIAL, ENV_WORKER, ENV_DEVICE, ENV_RUN_DIR) + (("CUDA_VISIBLE_DEVICES",) if ctx.device is not None else ())
    saved = {k: os.environ.get(k) for k in names}
    os.environ[ENV_TRIAL] = str(ctx.trial)
    os.environ[ENV_WORKER] = str(ctx.worker)
    os.environ[ENV_DEVICE] = ctx.device or ""
    os.environ[ENV_RUN_DIR] = ctx.run_dir or ""
    if ctx.device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ctx.device
    return saved


def _restore_env(saved: dict[str, Optional[str]]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# prctl option that asks the kernel to signal this process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: Optional[int]) -> None:
    """Make this worker end when the search process dies, even by SIGKILL.

    On Linux the kernel sends SIGTERM to the worker when the thread that spawned it ends
    (``PR_SET_PDEATHSIG``); without it a killed search leaves its workers training on for
    hours, holding GPUs. The parent may already have died between the spawn and this call,
    which the kernel would never report: then the worker exits at once. Elsewhere this is a
    no-op beyond that check.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d); workers may outlive a killed search",
                            ctypes.get_errno())
        except OSError as exc:  # no loadable libc (e.g. a static build): best effort only
            log.warning("cannot load libc for prctl: %s; workers may outlive a killed search", exc)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _init_worker_process(device: Optional[str], parent_pid: Optional[int] = None) -> None:
    """Pool initializer: pin the device before the objective (and Paddle) is imported in the worker.

    Workers ignore SIGINT: on Ctrl-C the parent alone decides, journals and terminates them.
    They end with the search process (``parent_pid``, see :func:`_die_with_parent`).
    """
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device


def _execute_trial(objective: Callable[[dict[str, Any]], Any], params: dict[str, Any], ctx: TrialContext) -> _Outcome:
    """Run one trial; every exception but KeyboardInterrupt becomes a FAILED (or PRUNED) outcome."""
    saved = _set_trial_env(ctx)
    started = time.time()
    t0 = time.perf_counter()
    try:
        result = objective(dict(params))
        value, metrics, timings = _parse_result(result)
        state, error, tb = TrialState.COMPLETE.value, None, None
    except TrialPruned as exc:
        value, metrics, timings = None, {}, {}
        state, error, tb = TrialState.PRUNED.value, f"pruned: {exc}", None
    except Exception as exc:  # noqa: BLE001 - a trial's failure must not stop the search
        value, metrics, timings = None, {}, {}
        state, error, tb = TrialState.FAILED.value, f"{type(exc).__name__}: {exc}", traceback.format_exc()
    finally:
        _restore_env(saved)
    timings = {**timings, "trial_s": time.perf_counter() - t0}
    return _Outcome(state, value, _json_clean(metrics), _json_clean(timings), error, tb, started, time.time())


def _parse_result(result: Any) -> tuple[float, dict[str, Any], dict[str, float]]:
    if isinstance(result, (int, float)) and not isinstance(result, bool) or type(result).__module__ == "numpy":
        result = {"value": result}
    if not isinstance(result, Mapping) or "value" not in result:
        raise TlbenchError(f"the objective must return a number or a dict with a 'value' key, got {result!r}")
    try:
        value = float(result["value"])
    except (TypeError, ValueError):
        raise TlbenchError(f"the objective's value must be a number, got {result['value']!r}") from None
    if not math.isfinite(value):
        raise TlbenchError(f"the objective returned a non-finite value {value!r} (diverged?)")
    metrics = result.get("metrics") or {}
    timings = result.get("timings") or {}
    if not isinstance(metrics, Mapping) or not isinstance(timings, Mapping):
        raise TlbenchError("the objective's 'metrics' and 'timings' must be dicts")
    return value, dict(metrics), dict(timings)


class _Executor(Protocol):
    """Where trials run: what :func:`run_search` needs of an executor."""

    def submit(self, slot: int, fn: Callable[..., Any], *args: Any) -> cf.Future:
        """Run ``fn(*args)`` in worker ``slot``; the future holds its result (or the worker's failure)."""
        ...

    def shutdown(self, interrupt: bool = False) -> None:
        """Release the workers; ``interrupt`` stops running calls instead of waiting for them."""
        ...


class _InlineExecutor:
    """Runs each trial in this process, at submit time (workers=1)."""

    def submit(self, slot: int, fn: Callable[..., Any], *args: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, interrupt: bool = False) -> None:
        pass


class _ProcessExecutor:
    """One single-process pool per worker slot (spawn), so each slot keeps its device.

    With ``fresh_process`` each trial runs in a new process: GPU memory and leaks do not carry
    over from one trial to the next.
    """

    def __init__(self, workers: int, devices: Optional[Sequence[str]], fresh_process: bool) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._devices = devices
        self._fresh = fresh_process and sys.version_info >= (3, 11)
        self._pools: list[Optional[cf.ProcessPoolExecutor]] = [None] * workers

    def _pool(self, slot: int) -> cf.ProcessPoolExecutor:
        pool = self._pools[slot]
        if pool is None:
            kwargs: dict[str, Any] = {"max_tasks_per_child": 1} if self._fresh else {}
            device = self._devices[slot] if self._devices else None
            pool = cf.ProcessPoolExecutor(1, mp_context=self._ctx, initializer=_init_worker_process,
                                          initargs=(device, os.getpid()), **kwargs)
            self._pools[slot] = pool
        return pool

    def submit(self, slot: int, fn: Callable[..., Any], *args: Any) -> cf.Future:
        try:
            return self._pool(slot).submit(fn, *args)
        except cf.process.BrokenProcessPool:
            # The slot's worker died (its trial has already failed): start a fresh one.
            self.reset(slot)
            return self._pool(slot).submit(fn, *args)

    def reset(self, slot: int) -> None:
        """Drop a slot's pool; the next submit starts a fresh process."""
        pool = self._pools[slot]
        self._pools[slot] = None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self, interrupt: bool = False) -> None:
        for pool in self._pools:
            if pool is None:
                continue
            if interrupt:
                # Worker processes are private to the pool; stopping them is the only way to end a running trial.
                for process in list(getattr(pool, "_processes", {}).values()):
                    process.terminate()
            pool.shutdown(wait=not interrupt, cancel_futures=True)


class _RayExecutor:
    """Runs trials as Ray tasks (``pip install 'ray[default]'``); Ray assigns GPUs when ``gpus_per_trial`` > 0."""

    def __init__(self, address: Optional[str], gpus_per_trial: float) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("the Ray backend needs the 'ray' package, which is not installed: pip install 'ray[default]'") from None
        self._ray = ray
        # A cluster connection this search opened is closed again when it ends (a local
        # cluster started here is stopped); one the caller opened is left alone.
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self._task_options = {"num_cpus": 1, "num_gpus": gpus_per_trial, "max_retries": 0}
        self._remotes: dict[Callable[..., Any], Any] = {}  # fn -> its Ray remote function
        self._refs: list[Any] = []

    def submit(self, slot: int, fn: Callable[..., Any], *args: Any) -> cf.Future:
        remote = self._remotes.get(fn)
        if remote is None:
            remote = self._remotes[fn] = self._ray.remote(**self._task_options)(fn)
        ref = remote.remote(*args)
        self._refs.append(ref)
        return ref.future()

    def shutdown(self, interrupt: bool = False) -> None:
        if interrupt:
            for ref in self._refs:
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - finished tasks cannot be cancelled; nothing to do
                    pass
        if self._owns_connection:
            self._ray.shutdown()


def check_execution(workers: int, devices: Optional[Sequence[str]], backend: str) -> Optional[list[str]]:
    """Validate how trials are to run; returns ``devices`` as strings (None stays None)."""
    positive_int(workers, "workers")
    if devices is not None:
        devices = [str(d) for d in devices]
        if len(devices) < workers:
            raise ConfigError(f"{workers} workers need at least {workers} devices, got {devices}")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return devices


def make_executor(workers: int, devices: Optional[Sequence[str]], backend: str, fresh_process: bool,
                  ray_address: Optional[str], ray_gpus_per_trial: float) -> _Executor:
    """The executor for these settings: Ray tasks, this process (one worker, no devices) or worker processes."""
    if backend == "ray":
        return _RayExecutor(ray_address, ray_gpus_per_trial)
    if workers == 1 and devices is None:
        return _InlineExecutor()
    return _ProcessExecutor(workers, devices, fresh_process)


def outcome_of(future: cf.Future, started_at: Optional[float]) -> _Outcome:
    """What a submitted trial (or rung job) returned; a worker that died fails it alone."""
    try:
        return future.result()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a dead worker process fails its trial only
        # The executor replaces a dead worker at the slot's next submit.
        return _Outcome(TrialState.FAILED.value, error=f"worker failed: {type(exc).__name__}: {exc}",
                        traceback="".join(traceback.format_exception(exc)),
                        started_at=started_at or time.time(), finished_at=time.time())


def drive(executor: Any, fill: Callable[[], None], active: dict[cf.Future, Any],
          finish: Callable[[cf.Future], None], trial_id: Callable[[cf.Future], int]) -> bool:
    """The event loop of a search: ``fill`` free worker slots, wait for the first of ``active`` to
    end, ``finish`` those that did (in trial-id order), until nothing is running after a fill.

    Returns whether Ctrl-C interrupted it (running jobs are then abandoned; they stay RUNNING in
    the journal). Any other exception stops the workers and propagates; on a normal end the
    executor is shut down cleanly."""
    try:
        while True:
            fill()
            if not active:
                break
            done, _ = cf.wait(list(active), return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=trial_id):
                finish(future)
    except KeyboardInterrupt:
        executor.shutdown(interrupt=True)
        return True
    except BaseException:
        # A failing callback or journal write: stop the workers rather than leave them running.
        executor.shutdown(interrupt=True)
        raise
    executor.shutdown()
    return False


def run_search(
    objective: Callable[[dict[str, Any]], Any],
    strategy: Strategy,
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
    """Run (or continue) the search journaled in ``journal`` until ``n_trials`` trials are finished.

    - ``n_trials``: total finished trials wanted in the journal, counting those of earlier runs
      (so a resume with the same number finishes the search); ``None`` runs until the strategy
      is exhausted (only when its ``max_points`` is bounded).
    - The journal's finished trials are told to ``strategy`` first (those it was not told yet),
      so a fresh strategy (e.g. ``strategy_for(journal.meta)``) continues the search. Trials
      left RUNNING by an interrupted run are run again first, under their old ids.
    - ``workers``: trials at a time. ``workers=1`` without ``devices`` runs in this process;
      otherwise each worker slot is a spawned process (the objective must be picklable), a new
      one per trial when ``fresh_process``. ``devices[i]`` (e.g. ``"0"``) becomes
      ``CUDA_VISIBLE_DEVICES`` of slot ``i`` before the objective is unpickled, and
      :func:`current_trial` gives the slot and device.
    - ``backend="ray"`` runs trials as Ray tasks on ``ray_address`` (needs ``ray``).
    - ``on_trial_start``/``on_trial_end`` are called in this process with each Trial (e.g. to
      refresh a live table).

    Ctrl-C stops the search: running trials stay RUNNING in the journal (they run again on
    resume), the lock is kept until the caller closes the journal, and the result has
    ``interrupted=True``. It returns instead of re-raising.
    """
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"run_search needs a Strategy, got {type(strategy).__name__}")
    if not isinstance(journal, Journal):
        raise ConfigError(f"run_search needs a Journal, got {type(journal).__name__}")
    if not callable(objective):
        raise ConfigError(f"the objective must be callable, got {objective!r}")
    optional_positive_int(n_trials, "n_trials")
    if n_trials is None and strategy.max_points is None:
        raise ConfigError(f"n_trials is required: the {strategy.name} strategy has no bound on how many points "
                          "it proposes (max_points is None, as on a space with continuous dimensions)")
    devices = check_execution(workers, devices, backend)

    # Bring the strategy up to date with the journal.
    untold = [t for t in journal.finished_trials() if not strategy.is_told(t.params)]
    if untold:
        strategy.replay(untold)
        log.info("resumed %s: %d finished trial(s) told to the %s strategy", journal.run_dir, len(untold), strategy.name)
    retry = journal.interrupted_trials()
    for trial in retry:
        strategy.register_pending(trial.params)
    if retry:
        log.info("running %d interrupted trial(s) again: %s", len(retry), [t.id for t in retry])

    executor = make_executor(workers, devices, backend, fresh_process, ray_address, ray_gpus_per_trial)

    run_dir = str(journal.run_dir)
    next_id = journal.next_trial_id()
    n_finished = len(journal.finished_trials())
    active: dict[cf.Future, Trial] = {}
    free_slots = list(range(workers))
    exhausted = False
    n_new = 0

    def budget() -> int:
        if n_trials is None:
            return len(free_slots)
        return max(0, n_trials - n_finished - len(active))

    def start(trial: Trial) -> None:
        journal.write_running(trial)
        if on_trial_start is not None:
            on_trial_start(trial)
        ctx = TrialContext(trial.id, trial.worker, devices[trial.worker] if devices else None, run_dir)
        active[executor.submit(trial.worker, _execute_trial, objective, trial.params, ctx)] = trial

    def finish(future: cf.Future) -> None:
        nonlocal n_finished
        trial = active.pop(future)
        free_slots.append(trial.worker)
        free_slots.sort()
        outcome = outcome_of(future, trial.started_at)
        final = Trial(
            id=trial.id, params=trial.params, state=TrialState(outcome.state), value=outcome.value,
            metrics=outcome.metrics, error=outcome.error, timings=outcome.timings,
            started_at=outcome.started_at, finished_at=outcome.finished_at, worker=trial.worker,
        )
        journal.write_final(final, traceback=outcome.traceback)
        strategy.tell(final.params, final.value if final.state is TrialState.COMPLETE else None)
        n_finished += 1
        if final.state is TrialState.FAILED:
            log.warning("trial %d failed: %s", final.id, final.error)
        if on_trial_end is not None:
            on_trial_end(final)

    def fill() -> None:
        nonlocal exhausted, next_id, n_new
        # Fill free worker slots: interrupted trials first, then new points (one batch ask).
        while free_slots and budget() > 0 and retry:
            trial = retry.pop(0)
            start(Trial(trial.id, trial.params, TrialState.RUNNING, started_at=time.time(), worker=free_slots.pop(0)))
        want = min(len(free_slots), budget())
        if want > 0 and not exhausted:
            points = strategy.ask_batch(want)
            # Fewer points than asked for means the strategy has nothing more to give.
            exhausted = len(points) < want
            for params in points:
                start(Trial(next_id, params, TrialState.RUNNING, started_at=time.time(), worker=free_slots.pop(0)))
                next_id += 1
                n_new += 1

    interrupted = drive(executor, fill, active, finish, lambda f: active[f].id)

    trials = journal.trials()
    if interrupted:
        running = [t.id for t in trials if t.state is TrialState.RUNNING]
        log.warning("search in %s interrupted; %d trial(s) %s will run again when it is resumed",
                    run_dir, len(running), running)
    return SearchResult(trials=trials, run_dir=run_dir, interrupted=interrupted, exhausted=exhausted, n_new=n_new)

