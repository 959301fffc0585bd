"""Paddle weights files are read without running code from them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from common.errors import ExportError, ModelError  # noqa: E402
from harness.models.pdparams import read_paddle_state  # noqa: E402
from harness.models.torch_checkpoint import CheckpointFormatError, UnsafeCheckpointError  # noqa: E402


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_file(tmp_path, name="evil.pdparams"):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"fc.weight": np.zeros((2, 2), np.float32), "x": _Payload(marker)}, protocol=4))
    return path, marker


def test_model_and_optimizer_state_of_this_paddle_read_back(tmp_path):
    paddle.seed(0)
    layer = paddle.nn.Linear(3, 2)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(0.1, 10)
    opt = paddle.optimizer.Momentum(learning_rate=schedule, momentum=0.9, parameters=layer.parameters())
    layer(paddle.randn([4, 3])).sum().backward()
    opt.step()
    paddle.save(layer.state_dict(), str(tmp_path / "m.pdparams"))
    paddle.save(opt.state_dict(), str(tmp_path / "m.pdopt"))

    weights = read_paddle_state(tmp_path / "m.pdparams")
    assert set(weights) == {"weight", "bias"}  # the name table is left out, as paddle.load does
    np.testing.assert_array_equal(weights["weight"], layer.weight.numpy())
    state = read_paddle_state(tmp_path / "m.pdopt")
    reference = paddle.load(str(tmp_path / "m.pdopt"))
    velocities = [k for k in reference if k.endswith("_velocity_0")]
    assert velocities and all(np.array_equal(state[k], reference[k].numpy()) for k in velocities)
    assert state["LR_Scheduler"]["last_epoch"] == reference["LR_Scheduler"]["last_epoch"]


def test_a_pickle_payload_never_runs(tmp_path):
    path, marker = _evil_file(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        read_paddle_state(path)
    assert not marker.exists()


def test_every_weights_reader_refuses_the_payload(tmp_path):
    from harness.export import load_trained_model
    from harness.models.pretrained import read_weights_file

    path, marker = _evil_file(tmp_path)
    with pytest.raises(ModelError, match="refusing to load global"):
        read_weights_file(path)

    class Result:  # the part of a TrainResult that load_trained_model reads
        checkpoint = str(path)
        num_classes = 2

        class config:  # noqa: N801 - mirrors TrainResult.config
            model = "ResNet_tiny"

    with pytest.raises(ExportError, match="refusing to load global"):
        load_trained_model(Result())
    assert not marker.exists()


def test_object_arrays_and_non_dicts_are_refused(tmp_path):
    objects = tmp_path / "objects.pdparams"
    objects.write_bytes(pickle.dumps({"w": np.array([1, "a"], dtype=object)}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="Python objects"):
        read_paddle_state(objects)
    listed = tmp_path / "list.pdparams"
    listed.write_bytes(pickle.dumps([np.zeros(2)], protocol=4))
    with pytest.raises(CheckpointFormatError, match="not a state dict"):
        read_paddle_state(listed)
    truncated = tmp_path / "cut.pdparams"
    truncated.write_bytes(pickle.dumps({"w": np.zeros(100, np.float32)}, protocol=4)[:50])
    with pytest.raises(CheckpointFormatError, match="not a readable Paddle weights file"):
        read_paddle_state(truncated)


def test_weights_that_fit_no_tensor_are_an_error_and_few_a_warning(tmp_path, caplog):
    from harness.models import create_model
    from harness.models.pretrained import load_pretrained

    model = create_model("ResNet_tiny", 3)
    with pytest.raises(ModelError, match="none of its 2 tensors fits the model"):
        load_pretrained(model, {"other.weight": np.zeros((2, 2), np.float32), "x": np.zeros(1, np.float32)},
                        source="other.pdparams")
    stem = {k: v.numpy() for k, v in model.state_dict().items() if k.startswith("stem.0.")}
    with caplog.at_level("WARNING"):
        report = load_pretrained(model, stem, source="partial.pdparams")
    assert len(report.loaded) == len(stem)
    assert "only %d of the model's %d tensors" % (len(stem), len(model.state_dict())) in caplog.text


def test_plain_http_weights_are_refused_except_from_this_machine(tmp_path, monkeypatch):
    from common.errors import DownloadError
    from harness.models import pretrained

    fetched = []
    monkeypatch.setattr(pretrained, "_fetch", lambda url, dest, expected: fetched.append(url) or "0" * 64)
    with pytest.raises(DownloadError, match="refusing plain http://"):
        pretrained.download_to_cache("http://weights.example.com/r50.pdparams", cache=tmp_path)
    with pytest.raises(DownloadError, match="refusing plain http://"):
        pretrained.download_to_cache("http://10.0.0.8/r50.pdparams", cache=tmp_path)
    assert fetched == []  # refused before any connection
    for url in ("http://127.0.0.1:8000/a.pdparams", "http://localhost/b.pdparams", "https://host.example/c.pdparams"):
        try:
            pretrained.download_to_cache(url, cache=tmp_path)
        except Exception:  # the stubbed fetch writes no file; only the refusal matters here
            pass
    assert fetched == ["http://127.0.0.1:8000/a.pdparams", "http://localhost/b.pdparams", "https://host.example/c.pdparams"]


# Written by paddlepaddle 2.6.2 (Python 3.11, CPU wheel) in a throwaway venv with
#   model = Sequential(Linear(3, 2), BatchNorm1D(2)); Momentum(0.9, L2Decay(1e-4), cosine lr) after one step
#   paddle.save(model.state_dict(), "paddle26_tiny.pdparams"); paddle.save(opt.state_dict(), "paddle26_tiny.pdopt")
# and the expected arrays with np.savez (read here without pickle).
PADDLE26 = Path(__file__).parent / "data"


def test_files_written_by_paddle_2_6_read_back():
    state = read_paddle_state(PADDLE26 / "paddle26_tiny.pdparams")
    with np.load(PADDLE26 / "paddle26_tiny_expected.npz", allow_pickle=False) as expected:
        assert sorted(state) == sorted(expected.files)
        for key in expected.files:
            assert state[key].dtype == expected[key].dtype
            np.testing.assert_array_equal(state[key], expected[key])
    opt = read_paddle_state(PADDLE26 / "paddle26_tiny.pdopt")
    velocities = sorted(k for k in opt if k.endswith("_velocity_0"))
    assert velocities == ["batch_norm1d_0.b_0_velocity_0", "batch_norm1d_0.w_0_velocity_0",
                          "linear_0.b_0_velocity_0", "linear_0.w_0_velocity_0"]
    assert opt["linear_0.w_0_velocity_0"].shape == (3, 2) and np.abs(opt["linear_0.w_0_velocity_0"]).sum() > 0
    # cosine from 0.1 over 10 steps, after one step: 0.05 * (1 + cos(pi / 10))
    assert opt["LR_Scheduler"] == {"last_epoch": 1, "last_lr": pytest.approx(0.05 * (1 + np.cos(np.pi / 10)), rel=1e-6)}
