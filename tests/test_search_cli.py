"""`bench search` end to end on the demo dataset: real fine-tuning, export, exported eval, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("paddle")

from bench.cli import main  # noqa: E402
from search import load_trials  # noqa: E402

TINY = ["--dataset", "demo", "--model", "ResNet_tiny", "--image-size", "32", "--epochs", "1",
        "--max-steps-per-epoch", "2", "--batch-size", "16", "--eval-batch-size", "8",
        "--latency-seconds", "0.2"]


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    argv = ["search", *TINY, "--strategy", "random", "--trials", "1", "--out-dir", str(root / "runs"),
            "--name", "s", "--export-dir", str(root / "best"), "--json"]
    assert main(argv) == 0
    run_dir = root / "runs" / "s"
    # Resume the same search to two trials: the first is kept, one more runs.
    assert main(["search", "--resume", str(run_dir), "--trials", "2", "--overwrite", "--json"]) == 0
    return root, run_dir


def test_json_output_is_only_the_summary(finished_search, capsys, tmp_path):
    _, run_dir = finished_search
    # A resume that has nothing left to run still prints the summary.
    assert main(["search", "--resume", str(run_dir), "--trials", "2", "--overwrite", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 2 and summary["best"]["trial"] in (1, 2)


def test_search_trials_are_scored_on_exported_models(finished_search):
    root, run_dir = finished_search
    trials = load_trials(run_dir / "journal.jsonl")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert [t.id for t in complete] == [1, 2]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 2
    for t in complete:
        assert 0.0 <= t.value <= 1.0
        assert t.value == pytest.approx(t.metrics["val_top1"])  # demo's protocol metric is top-1
        assert t.metrics["latency_p99_ms"] >= t.metrics["latency_p50_ms"] > 0
        assert t.metrics["latency_batch"] == 1
        assert {"train_s", "export_s", "eval_s"} <= set(t.timings)
        assert (Path(t.metrics["exported_dir"]) / "manifest.json").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    best = max(complete, key=lambda t: t.value)
    assert summary["best"]["trial"] == best.id
    manifest = json.loads((root / "best" / "manifest.json").read_text())
    assert manifest["model_name"] == "ResNet_tiny"
    assert manifest["hyperparameters"]["lr"] == pytest.approx(best.params["lr"])
    test_eval = json.loads((run_dir / "test_eval.json").read_text())
    assert test_eval["num_images"] == 240  # demo: 40 test images for each of 6 classes


def test_search_refuses_to_overwrite_best_model(finished_search, capsys):
    root, _ = finished_search
    argv = ["search", *TINY, "--strategy", "fixed", "--out-dir", str(root / "runs"), "--name", "other",
            "--export-dir", str(root / "best")]
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_report_on_search(finished_search):
    root, run_dir = finished_search
    out = root / "report"
    assert main(["report", str(run_dir), "--out-dir", str(out)]) == 0
    for name in ("report.md", "report.json", "convergence.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    trials = [t for t in load_trials(run_dir / "journal.jsonl") if t.state.name == "COMPLETE"]
    best = max(trials, key=lambda t: t.value)
    (run,) = report["runs"]
    assert run["n_finished"] == len(trials)
    assert run["best"]["trial"] == best.id


def test_fixed_search_with_retrain_on_train_and_val(tmp_path):
    argv = ["search", *TINY, "--strategy", "fixed", "--out-dir", str(tmp_path), "--name", "fx",
            "--export-dir", str(tmp_path / "best"), "--retrain-full"]
    assert main(argv) == 0
    trials = load_trials(tmp_path / "fx" / "journal.jsonl")
    assert [(t.params["lr"], t.params["l2_decay"], t.params["label_smoothing"], t.params["mixup"])
            for t in trials if t.state.name == "COMPLETE"] == [(0.003, 1e-4, False, False)]
    final = json.loads((tmp_path / "fx" / "final-train+val" / "metrics.json").read_text())
    assert final["num_images"]["train"] == 360 + 120  # demo: train + val
    assert json.loads((tmp_path / "best" / "test_eval.json").read_text())["trained_on"] == "train+val"
    assert json.loads((tmp_path / "best" / "manifest.json").read_text())["trained_on"] == "train+val"


def test_int8_search_scores_and_delivers_int8_exports(tmp_path):
    argv = ["search", *TINY, "--strategy", "fixed", "--out-dir", str(tmp_path), "--name", "q",
            "--export-dir", str(tmp_path / "best"), "--eval-precision", "int8", "--retrain-full"]
    assert main(argv) == 0
    (trial,) = [t for t in load_trials(tmp_path / "q" / "journal.jsonl") if t.state.name == "COMPLETE"]
    assert trial.metrics["eval_backend"] == "cpu/int8"
    assert 0.0 <= trial.metrics["int8_agreement"] <= 1.0
    scored = json.loads((Path(trial.metrics["exported_dir"]) / "manifest.json").read_text())
    assert scored["precision"] == "int8"
    assert json.loads((Path(trial.metrics["float_exported_dir"]) / "manifest.json").read_text())["precision"] == "fp32"
    best = json.loads((tmp_path / "best" / "manifest.json").read_text())
    assert best["precision"] == "int8" and best["trained_on"] == "train+val"
    assert json.loads((tmp_path / "best" / "test_eval.json").read_text())["num_images"] == 240


def test_resume_refuses_flags_that_would_be_ignored(finished_search, capsys):
    _, run_dir = finished_search
    assert main(["search", "--resume", str(run_dir), "--epochs", "5"]) == 2
    err = capsys.readouterr().err
    assert "--epochs" in err and "search.json" in err


def test_two_worker_processes_run_real_trials(tmp_path):
    argv = ["search", *TINY, "--strategy", "random", "--trials", "2", "--workers", "2", "--out-dir", str(tmp_path),
            "--name", "par", "--export-dir", str(tmp_path / "best")]
    assert main(argv) == 0
    trials = [t for t in load_trials(tmp_path / "par" / "journal.jsonl") if t.state.name == "COMPLETE"]
    assert sorted(t.id for t in trials) == [1, 2]
    assert {t.worker for t in trials} == {0, 1}


def test_real_trials_on_a_local_ray_cluster(tmp_path):
    pytest.importorskip("ray")
    argv = ["search", *TINY, "--strategy", "random", "--trials", "2", "--workers", "2", "--ray", "local",
            "--out-dir", str(tmp_path), "--name", "ray", "--export-dir", str(tmp_path / "best")]
    assert main(argv) == 0
    trials = [t for t in load_trials(tmp_path / "ray" / "journal.jsonl") if t.state.name == "COMPLETE"]
    assert sorted(t.id for t in trials) == [1, 2]
    assert all((Path(t.metrics["exported_dir"]) / "manifest.json").is_file() for t in trials)
    import ray

    assert not ray.is_initialized()  # the local cluster the search started is stopped again


def test_resume_without_trials_keeps_the_original_count(tmp_path):
    argv = ["search", *TINY, "--strategy", "random", "--trials", "1", "--out-dir", str(tmp_path), "--name", "r",
            "--export-dir", str(tmp_path / "best")]
    assert main(argv) == 0
    assert main(["search", "--resume", str(tmp_path / "r"), "--overwrite"]) == 0
    assert [t.id for t in load_trials(tmp_path / "r" / "journal.jsonl")] == [1]  # not 20 more


@pytest.mark.parametrize("bad, message", [
    (["--dataset", "folder", "--data-root", "/nonexistent/data"], "nonexistent"),
    (["--eval-backend", "gpu"], "gpu"),
    (["--trials", "0"], "--trials must be at least 1"),
    (["--eval-batch-size", "0"], "batch"),
    (["--eval-backend", "cpu-plain", "--eval-precision", "int8"], "--eval-precision int8 scores with --eval-backend cpu"),
])
def test_mistakes_stop_before_any_training_and_leave_no_search(tmp_path, capsys, bad, message):
    argv = ["search", *TINY, "--strategy", "random", "--trials", "1", "--out-dir", str(tmp_path), "--name", "x",
            "--export-dir", str(tmp_path / "best"), *bad]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_empty_export_dir_is_accepted(tmp_path):
    (tmp_path / "best").mkdir()
    argv = ["search", *TINY, "--strategy", "fixed", "--out-dir", str(tmp_path), "--name", "e",
            "--export-dir", str(tmp_path / "best")]
    assert main(argv) == 0
    assert (tmp_path / "best" / "manifest.json").is_file()
    assert oct((tmp_path / "best").stat().st_mode & 0o777) != oct(0o700)  # readable by a server user


def test_resume_refuses_search_flags(finished_search, capsys):
    _, run_dir = finished_search
    assert main(["search", "--resume", str(run_dir), "--strategy", "grid", "--data-workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "--strategy" in err and "--data-workers" in err
