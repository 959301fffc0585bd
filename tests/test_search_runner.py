"""The runner: failures, pruning, Ctrl-C, parallel workers, Ray's absence, and replay."""

from __future__ import annotations

import concurrent.futures as cf
import json
import operator
import os
import sys
import types

import pytest

from bench.cli import main
from common.errors import ConfigError, TlbenchError
from search.analytic import ANALYTIC_OPTIMUM, AnalyticObjective, analytic_value
from search.journal import JOURNAL_NAME, Journal, SearchMeta, read_records
from search.replay import ReplayObjective, StrategyConfig, compare_strategies, parse_strategy_configs
from search.runner import current_trial, run_search, strategy_for
from search.space import Boolean, Categorical, Space, default_space, point_key
from search.trial import TrialPruned, TrialState

SMALL = Space({"lr": Categorical([0.1, 0.01, 0.001]), "l2_decay": Categorical([1e-4]), "mixup": Boolean()})


def start(tmp_path, strategy="grid", space=SMALL, **options):
    meta = SearchMeta(strategy=strategy, space=space, seed=0, options=options, dataset="demo")
    return Journal.create(tmp_path, meta), meta


def test_failed_trial_is_journaled_with_its_error_and_the_search_goes_on(tmp_path):
    bad = SMALL.grid()[1]
    journal, meta = start(tmp_path)
    strategy = strategy_for(meta)
    with journal:
        result = run_search(AnalyticObjective(fail_on=[bad]), strategy, journal)
    assert result.exhausted and len(result.trials) == 6
    failed = [t for t in result.trials if t.state is TrialState.FAILED]
    assert [t.params for t in failed] == [bad]
    assert failed[0].error.startswith("RuntimeError: synthetic failure")
    record = next(r for r in read_records(tmp_path / JOURNAL_NAME) if r["state"] == "FAILED")
    assert "Traceback" in record["traceback"] and "synthetic failure" in record["traceback"]
    # The strategy was told the penalty: the worst value seen before the failure.
    assert strategy._told[point_key(bad)] == result.trials[0].value
    assert result.best.value == max(t.value for t in result.trials if t.value is not None)


def test_non_finite_values_fail_and_pruned_trials_are_pruned(tmp_path):
    def objective(params):
        if params["mixup"]:
            raise TrialPruned("not promising")
        return {"value": float("nan") if params["lr"] == 0.1 else analytic_value(params)}

    journal, meta = start(tmp_path)
    with journal:
        result = run_search(objective, strategy_for(meta), journal)
    states = {(t.params["lr"], t.params["mixup"]): t.state for t in result.trials}
    assert states[(0.1, False)] is TrialState.FAILED
    assert all(states[(lr, True)] is TrialState.PRUNED for lr in (0.1, 0.01, 0.001))
    assert states[(0.01, False)] is TrialState.COMPLETE
    nan_trial = next(t for t in result.trials if t.params == {"lr": 0.1, "l2_decay": 1e-4, "mixup": False})
    assert "non-finite" in nan_trial.error


def test_keyboard_interrupt_stops_cleanly_and_the_search_resumes(tmp_path):
    calls = []

    def objective(params):
        calls.append(params)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return analytic_value(params)

    journal, meta = start(tmp_path)
    with journal:
        result = run_search(objective, strategy_for(meta), journal, n_trials=5)
    assert result.interrupted
    assert result.run_dir == str(tmp_path)
    assert [t.state for t in result.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]

    with Journal.resume(tmp_path, meta) as journal:
        result = run_search(objective, strategy_for(journal.meta), journal, n_trials=5)
    assert not result.interrupted
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 5
    assert calls[3] == calls[2]  # the interrupted point ran first, under its old id
    assert len({point_key(t.params) for t in result.trials}) == 5


def test_objective_sees_its_trial_context(tmp_path):
    seen = []

    def objective(params):
        seen.append(current_trial())
        return 0.5

    journal, meta = start(tmp_path)
    with journal:
        run_search(objective, strategy_for(meta), journal, n_trials=2)
    assert [c.trial for c in seen] == [1, 2]
    assert seen[0].worker == 0 and seen[0].run_dir == str(tmp_path)
    assert current_trial() is None  # restored after each trial


def test_two_worker_processes_run_trials_in_parallel(tmp_path):
    journal, meta = start(tmp_path, strategy="random")
    with journal:
        result = run_search(AnalyticObjective(sleep_s=0.5, record_context=True), strategy_for(meta), journal,
                            n_trials=4, workers=2, devices=["dev0", "dev1"])
    trials = result.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert {t.worker for t in trials} == {0, 1}
    for t in trials:
        assert t.metrics["worker"] == t.worker
        assert t.metrics["cuda_visible_devices"] == ["dev0", "dev1"][t.worker]
        assert t.metrics["pid"] != os.getpid()
    first, second = trials[0], trials[1]
    assert first.started_at < second.finished_at and second.started_at < first.finished_at  # overlapped
    assert len({point_key(t.params) for t in trials}) == 4


def test_a_crashed_worker_fails_only_its_trial(tmp_path):
    crash = SMALL.grid()[0]
    journal, meta = start(tmp_path)
    with journal:
        result = run_search(AnalyticObjective(crash_on=[crash]), strategy_for(meta), journal, n_trials=3,
                            workers=2, fresh_process=False)
    states = [t.state for t in result.trials]
    assert states[0] is TrialState.FAILED and "worker failed" in result.trials[0].error
    assert states[1:] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    journal, meta = start(tmp_path)
    with journal, pytest.raises(ConfigError, match="pip install 'ray"):
        run_search(AnalyticObjective(), strategy_for(meta), journal, n_trials=1, backend="ray")


class FakeRay:
    """Just enough of Ray's API to run tasks in this process; records the functions it ran."""

    def __init__(self):
        self.initialized = False
        self.ran = []
        self.task_options = []

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.initialized = True

    def shutdown(self):
        self.initialized = False

    def cancel(self, ref, force=False):
        pass

    def remote(self, **options):
        self.task_options.append(options)

        def wrap(fn):
            fake = self

            class RemoteFunction:
                def remote(self, *args):
                    fake.ran.append(fn)
                    future = cf.Future()
                    future.set_result(fn(*args))
                    return types.SimpleNamespace(future=lambda: future)

            return RemoteFunction()

        return wrap


def test_ray_executor_runs_the_function_it_is_given(monkeypatch):
    from search.runner import _RayExecutor

    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    executor = _RayExecutor(None, gpus_per_trial=0.5)
    assert fake.initialized
    assert executor.submit(0, operator.add, 2, 3).result() == 5
    assert executor.submit(1, operator.mul, 2, 3).result() == 6
    assert executor.submit(0, operator.add, 1, 1).result() == 2
    assert fake.ran == [operator.add, operator.mul, operator.add]
    assert fake.task_options == [{"num_cpus": 1, "num_gpus": 0.5, "max_retries": 0}] * 2  # one per function
    executor.shutdown()
    assert not fake.initialized  # the connection it opened is closed again


def test_ray_backend_runs_each_trial_as_a_task(tmp_path, monkeypatch):
    from search.runner import _execute_trial

    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    journal, meta = start(tmp_path)
    with journal:
        result = run_search(AnalyticObjective(), strategy_for(meta), journal, n_trials=3, workers=2, backend="ray")
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 3
    assert fake.ran == [_execute_trial] * 3 and not fake.initialized


def test_run_search_validates_its_arguments(tmp_path):
    journal, meta = start(tmp_path)
    with journal:
        for kwargs, match in (({"n_trials": 0}, "n_trials"), ({"workers": 0}, "workers"),
                              ({"workers": 2, "devices": ["0"]}, "devices"), ({"backend": "dask"}, "backend")):
            with pytest.raises(ConfigError, match=match):
                run_search(AnalyticObjective(), strategy_for(meta), journal, **kwargs)


def test_without_n_trials_a_search_runs_until_max_points(tmp_path):
    from search.space import Real

    continuous = Space({"lr": Real(1e-3, 0.1, log=True), "l2_decay": Categorical([1e-4]), "mixup": Boolean()})
    fixed = {"lr": 0.01, "l2_decay": 1e-4, "mixup": False}
    journal, meta = start(tmp_path / "fixed", strategy="fixed", space=continuous, params=fixed)
    with journal:
        result = run_search(AnalyticObjective(), strategy_for(meta), journal)
    assert result.exhausted and [t.params for t in result.trials] == [fixed]
    journal, meta = start(tmp_path / "random", strategy="random", space=continuous)
    with journal, pytest.raises(ConfigError, match="n_trials is required: the random strategy"):
        run_search(AnalyticObjective(), strategy_for(meta), journal)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("grid")
    meta = SearchMeta(strategy="grid", space=default_space(), dataset="demo")
    with Journal.create(run_dir, meta) as journal:
        run_search(AnalyticObjective(), strategy_for(meta), journal)
    return run_dir


def test_replay_objective_answers_from_the_journal(grid_run):
    objective = ReplayObjective(grid_run)
    point = default_space().grid()[17]
    assert objective(point)["value"] == pytest.approx(analytic_value(point))
    assert objective.best_value == pytest.approx(analytic_value(ANALYTIC_OPTIMUM))
    assert objective.space == default_space()
    with pytest.raises(TlbenchError, match="not in the replayed journal"):
        objective({**point, "lr": 0.5})


def test_replayed_search_reproduces_the_grid(grid_run, tmp_path):
    meta = SearchMeta(strategy="random", space=default_space(), seed=5)
    with Journal.create(tmp_path, meta) as journal:
        result = run_search(ReplayObjective(grid_run), strategy_for(meta), journal, n_trials=10)
    assert all(t.value == pytest.approx(analytic_value(t.params)) for t in result.trials)


def test_compare_strategies_counts_trials_to_the_target(grid_run):
    configs = [StrategyConfig("random", "random"),
               StrategyConfig("bayes-EI", "bayes", {"acq_func": "EI", "n_initial_points": 5})]
    result = compare_strategies(ReplayObjective(grid_run), configs, seeds=3, within=0.02)
    assert result["grid_size"] == 196 and result["target"] == pytest.approx(0.91 - 0.02)
    for row in result["strategies"]:
        assert len(row["trials"]) == 3 and row["reached"] == 3
        assert all(1 <= n <= 196 for n in row["trials"])
        assert row["q1"] <= row["median"] <= row["q3"]
    json.dumps(result, allow_nan=False)
    # Within 0 of the best, random search needs the rank of the optimum in its permutation.
    exact = compare_strategies(ReplayObjective(grid_run), [StrategyConfig("r", "random")], seeds=2, within=0.0)
    assert exact["strategies"][0]["reached"] == 2


def test_bench_search_adds_its_resume_flag_to_an_existing_search_error(grid_run, tmp_path, capsys):
    argv = ["search", "--replay", str(grid_run), "--strategy", "random", "--trials", "2", "--out-dir", str(tmp_path),
            "--name", "x", "--export-dir", str(tmp_path / "best"), "--json"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds a search" in err and f"bench search --resume {tmp_path / 'x'}" in err


def test_bench_search_checks_the_strategy_before_creating_the_search(grid_run, tmp_path, capsys):
    space_file = tmp_path / "space.yaml"
    space_file.write_text("dimensions:\n  lr: {type: real, low: 1.0e-4, high: 0.1, log: true}\n")
    argv = ["search", "--replay", str(grid_run), "--strategy", "grid", "--space", str(space_file),
            "--out-dir", str(tmp_path), "--name", "g", "--export-dir", str(tmp_path / "best")]
    assert main(argv) == 2
    assert "needs a discrete space" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_parse_strategy_configs():
    configs = parse_strategy_configs(["random", "bayes:acq_func=EI,n_initial_points=5,failure_value=0.1"])
    assert configs[1].options == {"acq_func": "EI", "n_initial_points": 5, "failure_value": 0.1}
    with pytest.raises(TlbenchError, match="key=value"):
        parse_strategy_configs(["bayes:EI"])


def test_bench_replay_command(grid_run, tmp_path, capsys):
    out = tmp_path / "replay.json"
    rc = main(["replay", str(grid_run), "--strategies", "random", "--seeds", "4", "--within", "0.4", "--json",
               "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["within"] == pytest.approx(0.004) and printed["strategies"][0]["reached"] == 4
    assert main(["replay", str(grid_run), "--seeds", "0"]) == 2
    assert main(["replay", str(grid_run), "--budgets", "0"]) == 2


def test_replay_reports_budget_shares_fte_and_best_so_far(grid_run, tmp_path, capsys):
    objective = ReplayObjective(grid_run)
    result = compare_strategies(objective, [StrategyConfig("random", "random")], seeds=6, within=0.01,
                                budgets=(3, 10, 40))
    row = result["strategies"][0]
    counts = row["trials"]
    # Shares recomputed from the per-seed counts.
    for budget in (3, 10, 40):
        assert row["reached_share"][str(budget)] == sum(c is not None and c <= budget for c in counts) / 6
    assert row["median_fte"] == row["median_trials"] == row["median"] and row["iqr_fte"] == row["iqr"]
    band = row["best_so_far"]
    assert band["trials"] == list(range(1, 41)) and len(band["median"]) == 40
    medians = [m for m in band["median"] if m is not None]
    assert medians == sorted(medians)  # best so far never decreases
    assert all(q1 <= m <= q3 for q1, m, q3 in zip(band["q1"], band["median"], band["q3"]) if m is not None)
    assert medians[-1] <= objective.best_value
    # Every seed has reached the target by the trial where the curve's lowest quartile crosses it.
    first_all = next((i + 1 for i, q in enumerate(band["q1"]) if q is not None and q >= result["target"]), None)
    if first_all is not None:
        assert sum(c is not None and c <= first_all for c in counts) >= 6 * 0.75

    png = tmp_path / "best.png"
    assert main(["replay", str(grid_run), "--strategies", "random", "bayes:n_initial_points=3", "--seeds", "2",
                 "--budgets", "5", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "within 5" in capsys.readouterr().out


@pytest.mark.slow
def test_ray_backend_on_a_local_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        journal, meta = start(tmp_path, strategy="random")
        with journal:
            result = run_search(AnalyticObjective(sleep_s=0.2, record_context=True), strategy_for(meta), journal,
                                n_trials=4, workers=2, backend="ray")
    finally:
        ray.shutdown()
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 4
    assert all(t.metrics["worker"] == t.worker and t.metrics["pid"] != os.getpid() for t in result.trials)


WORKER_SCRIPT = """
import os
import sys
import time
from pathlib import Path


class SlowObjective:
    # Marks its start, then runs far longer than the test waits.
    def __init__(self, marks):
        self.marks = marks

    def __call__(self, params):
        (Path(self.marks) / str(os.getpid())).touch()
        time.sleep(60)
        return 0.0


if __name__ == "__main__":
    from search.journal import Journal, SearchMeta
    from search.runner import run_search, strategy_for

    meta = SearchMeta.from_dict({"strategy": "random", "space": %r, "seed": 0, "dataset": "demo"})
    with Journal.create(sys.argv[1], meta) as journal:
        run_search(SlowObjective(sys.argv[2]), strategy_for(meta), journal, n_trials=4, workers=2)
"""


def _worker_children(parent: int) -> list[int]:
    """Live pool worker processes (spawned with ``spawn_main``) whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, ...
        if int(fields[1]) == parent and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux-only")
def test_worker_processes_die_with_a_killed_search(tmp_path):
    import signal
    import subprocess
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "search_script.py"
    script.write_text(WORKER_SCRIPT % (SMALL.to_dict(),))
    marks = tmp_path / "started"
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), str(marks)], cwd=repo,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2:  # both trials run inside their workers
            assert time.monotonic() < deadline, "the search never ran two trials at once"
            assert proc.poll() is None, "the search subprocess ended early"
            time.sleep(0.05)
        workers = sorted(int(p.name) for p in marks.iterdir())
        assert sorted(_worker_children(proc.pid)) == workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [pid for pid in workers if _alive(pid)]
    finally:
        for pid in workers:  # never leave 60 s sleepers behind, whatever the outcome
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert survivors == [], f"worker processes {survivors} outlived the killed search"


def test_compare_strategies_counts_missing_points_and_refuses_sparse_or_continuous(tmp_path, caplog):
    import logging

    from search.space import Real

    def partial_grid(name, n_trials):
        journal, meta = start(tmp_path / name)
        with journal:
            run_search(AnalyticObjective(), strategy_for(meta), journal, n_trials=n_trials)
        return ReplayObjective(tmp_path / name)

    configs = [StrategyConfig("random", "random")]
    with caplog.at_level(logging.WARNING, logger="search.replay"):
        result = compare_strategies(partial_grid("four", 4), configs, seeds=2, within=10.0)
    assert result["missing_points"] == 2 and result["grid_size"] == 6
    assert "2 of the 6 grid points are missing" in caplog.text
    with pytest.raises(ConfigError, match="4 of the 6 grid points are missing"):
        compare_strategies(partial_grid("two", 2), configs, seeds=2, within=10.0)
    continuous = Space({"lr": Real(1e-3, 0.1, log=True), "l2_decay": Categorical([1e-4]), "mixup": Boolean()})
    with pytest.raises(ConfigError, match="continuous"):
        compare_strategies(partial_grid("full", 6), configs, seeds=2, within=10.0, space=continuous)


def test_restrict_space_cuts_dimensions_to_listed_values():
    from search.replay import restrict_space

    space = default_space()
    cut = restrict_space(space, ["lr=0.03,0.1", "mixup=true"])
    assert cut["lr"].values() == [0.03, 0.1] and cut["mixup"].values() == [True]
    assert cut["l2_decay"] == space["l2_decay"] and cut.size() == 2 * 7 * 2 * 1
    assert restrict_space(space, ["lr=3e-2"])["lr"].values() == [0.03]  # numbers compare by value
    for bad, match in [(["lr"], "expected NAME=VALUE"), (["momentum=0.9"], "has no dimension 'momentum'"),
                       (["lr=0.5"], "'0.5' is not one of 'lr'"), (["lr=0.1", "lr=0.03"], "restricted twice"),
                       (["mixup=1"], "'1' is not one of 'mixup'")]:
        with pytest.raises(ConfigError, match=match):
            restrict_space(space, bad)


def test_bench_replay_restrict_replays_the_sub_grid_against_the_whole_best(grid_run, capsys):
    best = ReplayObjective(grid_run).best_value
    optimum = ANALYTIC_OPTIMUM
    # Knowing the optimum's lr and l2 leaves 4 points: random search reaches it within 4 trials.
    rc = main(["replay", str(grid_run), "--strategies", "random", "--seeds", "5", "--within", "0", "--json",
               "--restrict", f"lr={optimum['lr']}", f"l2_decay={optimum['l2_decay']}"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["grid_size"] == 4 and result["best"] == pytest.approx(best)
    assert result["restrict"] == [f"lr={optimum['lr']}", f"l2_decay={optimum['l2_decay']}"]
    assert all(1 <= n <= 4 for n in result["strategies"][0]["trials"])
    # A sub-grid without the optimum never reaches the whole journal's best.
    other_lr = next(v for v in default_space()["lr"].values() if v != optimum["lr"])
    assert main(["replay", str(grid_run), "--strategies", "random", "--seeds", "2", "--within", "0", "--json",
                 "--restrict", f"lr={other_lr}"]) == 0
    assert json.loads(capsys.readouterr().out)["strategies"][0]["reached"] == 0
    assert main(["replay", str(grid_run), "--restrict", "lr=7"]) == 2
    assert "'7' is not one of 'lr'" in capsys.readouterr().err
