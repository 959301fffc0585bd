"""Process-level behaviour: SIGTERM exits 143, ``--threads`` sets OMP_NUM_THREADS (and Paddle's
import notice about it stays out of the output), and exploding logits are a divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.runtime import prepare_environment

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_threads_set_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    prepare_environment()
    assert os.environ["OMP_NUM_THREADS"] == "7"  # a value the user set is kept without --threads
    prepare_environment(3)
    assert os.environ["OMP_NUM_THREADS"] == "3"  # --threads N replaces it
    monkeypatch.delenv("OMP_NUM_THREADS")
    prepare_environment()
    assert int(os.environ["OMP_NUM_THREADS"]) >= 1


def test_paddle_thread_notice_is_dropped_and_nothing_else():
    import io

    from bench.cli import _PaddleThreadNotice

    out = io.StringIO()
    stream = _PaddleThreadNotice(out)
    print("WARNING: OMP_NUM_THREADS set to 2, not 1. The computation speed ...", file=stream)
    print("PLEASE USE OMP_NUM_THREADS WISELY.", file=stream)
    print("WARNING: something else", file=stream)
    print("", file=stream)
    assert out.getvalue() == "WARNING: something else\n\n"


def test_sigterm_exits_143_and_threads_reach_openmp(tmp_path):
    pytest.importorskip("paddle")
    probe = tmp_path / "omp.txt"
    # A tiny wrapper records OMP_NUM_THREADS as the process sees it once bench has set up the environment.
    code = (
        "import os, sys, bench.cli as c\n"
        "orig = c.prepare_environment if hasattr(c, 'prepare_environment') else None\n"
        "import harness.runtime as r\n"
        "real = r.prepare_environment\n"
        f"def spy(threads=None):\n    real(threads)\n    open({str(probe)!r}, 'w').write(os.environ['OMP_NUM_THREADS'])\n"
        "r.prepare_environment = spy\n"
        "sys.exit(c.main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", code, "train", "--dataset", "demo", "--model", "ResNet_tiny", "--image-size", "32",
           "--epochs", "200", "--batch-size", "8", "--threads", "2", "--out-dir", str(tmp_path / "runs"),
           "--run-name", "t"]
    env = {**os.environ, "TLBENCH_CACHE": str(tmp_path / "cache")}
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    metrics = tmp_path / "runs" / "t" / "metrics.json"
    deadline = time.monotonic() + 240
    while not metrics.exists():  # written after the first epoch: training is under way
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    text = err.decode(errors="replace")
    assert proc.returncode == 143, text[-2000:]
    assert "terminated" in text and "Traceback" not in text
    assert probe.read_text() == "2"
    assert "OMP_NUM_THREADS" not in text  # Paddle's import notice is not shown


def test_exploding_logits_are_a_divergence_not_a_parity_failure(tmp_path):
    pytest.importorskip("paddle")
    from common.errors import DivergenceError
    from harness.config import TrainConfig
    from harness.train import fine_tune

    cfg = TrainConfig(model="ResNet_tiny", dataset="demo", image_size=32, epochs=2, batch_size=16,
                      max_steps_per_epoch=4, lr=1000.0, out_dir=str(tmp_path), run_name="boom")
    with pytest.raises(DivergenceError, match="training diverged: (validation logits are not finite|loss is)"):
        fine_tune(cfg)


def test_export_of_a_checkpoint_with_exploded_weights_says_diverged(tmp_path):
    paddle = pytest.importorskip("paddle")
    from common.errors import DivergenceError
    from harness.export import export
    from harness.results import CHECKPOINT_NAME
    from test_export import make_run_dir

    run_dir = make_run_dir(tmp_path)
    state = paddle.load(str(run_dir / CHECKPOINT_NAME))
    state["fc.weight"] = paddle.to_tensor(np.full(state["fc.weight"].shape, 3e38, np.float32))
    paddle.save(state, str(run_dir / CHECKPOINT_NAME))
    with pytest.raises(DivergenceError, match="non-finite logits .* training diverged"):
        export(run_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_search_trial_at_lr_1000_is_reported_as_diverged(tmp_path):
    pytest.importorskip("paddle")
    from bench.cli import main
    from search import load_trials

    space = tmp_path / "space.yaml"
    space.write_text("replace: true\ndimensions:\n  lr: [1000.0]\n")
    argv = ["-q", "search", "--dataset", "demo", "--model", "ResNet_tiny", "--image-size", "32", "--epochs", "2",
            "--max-steps-per-epoch", "4", "--batch-size", "16", "--latency-seconds", "0", "--strategy", "grid",
            "--space", str(space), "--out-dir", str(tmp_path), "--name", "s", "--export-dir", str(tmp_path / "best"),
            "--json"]
    assert main(argv) == 1  # no trial completed
    (trial,) = load_trials(tmp_path / "s")
    assert trial.state.name == "FAILED"
    assert "diverged" in trial.error and "disagrees with dygraph" not in trial.error, trial.error
    assert json.loads((tmp_path / "s" / "search.json").read_text())["strategy"] == "grid"
