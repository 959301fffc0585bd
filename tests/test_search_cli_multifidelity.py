"""`bench search --strategy asha|bohb` end to end on the demo dataset: rungs continue from checkpoints,
lower rungs are scored on the per-epoch validation, the top rung through the exported model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("paddle")

from bench.cli import main  # noqa: E402

TINY = ["--dataset", "demo", "--model", "ResNet_tiny", "--image-size", "32", "--epochs", "2",
        "--max-steps-per-epoch", "2", "--batch-size", "16", "--eval-batch-size", "8", "--latency-seconds", "0"]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("strategy, workers", [("asha", 1), ("bohb", 2)])
def test_multi_fidelity_search_on_real_trials(tmp_path, strategy, workers):
    argv = ["search", *TINY, "--strategy", strategy, "--min-epochs", "1", "--eta", "2", "--trials", "3",
            "--workers", str(workers), "--out-dir", str(tmp_path), "--name", "mf", "--export-dir", str(tmp_path / "best"),
            "--json"]
    assert main(argv) == 0
    run_dir = tmp_path / "mf"
    finals = [r for r in records(run_dir) if r["state"] != "RUNNING"]
    assert all("rung" in r for r in finals)
    lower = [r for r in finals if r["rung"] == 0]
    top = [r for r in finals if r["rung"] == 1]
    assert len(lower) == 3 and top and all(r["state"] == "PRUNED" for r in lower)
    for r in lower:  # scored with the epoch's validation, not exported
        assert r["value"] == r["metrics"]["train_history"][-1]["val_top1"] and "exported_dir" not in r["metrics"]
    for r in top:  # continued from epoch 1 (history holds both epochs) and scored through the export
        assert r["state"] == "COMPLETE" and len(r["metrics"]["train_history"]) == 2
        assert (Path(r["metrics"]["exported_dir"]) / "manifest.json").is_file()
        first = next(x for x in lower if x["trial"] == r["trial"])
        assert r["metrics"]["train_history"][0] == first["metrics"]["train_history"][0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best"]["trial"] in {r["trial"] for r in top}
    assert (tmp_path / "best" / "manifest.json").is_file()
    if workers == 2:
        assert {r["worker"] for r in finals} == {0, 1}


def test_multi_fidelity_flags_are_checked(tmp_path, capsys):
    argv = ["search", *TINY, "--strategy", "asha", "--min-epochs", "3", "--out-dir", str(tmp_path), "--name", "bad"]
    assert main(argv) == 2
    assert "--min-epochs" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
