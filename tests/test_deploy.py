"""bench deploy: paddle2onnx conversion, onnxruntime parity, Triton model repository."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddle2onnx")
ort = pytest.importorskip("onnxruntime")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

from google.protobuf import text_format  # noqa: E402

from harness.data import read_image_rgb  # noqa: E402
from common.errors import ConfigError, ExportError  # noqa: E402
from harness.artifact import ExportedModel  # noqa: E402
from harness.export import export  # noqa: E402
from harness.onnx_export import (  # noqa: E402
    DEPLOY_REPORT_FILE,
    ONNX_MODEL_FILE,
    PREPROCESS_FILE,
    TRITON_CONFIG_FILE,
    TRITON_LABEL_FILE,
    OnnxRunner,
    check_onnx_parity,
    deploy_onnx,
    find_images,
    load_triton_config,
    triton_model_config,
    write_triton_config,
)
from harness.predictor import Predictor, PredictorOptions  # noqa: E402
from test_export import CLASSES, make_run_dir  # noqa: E402

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FLOWERS12_TEST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "flowers12" / "test"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> ExportedModel:
    """A ResNet_tiny export (32-px crop after a 40-px short-side resize, three classes)."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("run"), resize_short=40)
    return export(run_dir, tmp_path_factory.mktemp("exp") / "tiny")


@pytest.fixture(scope="module")
def parity_images(tmp_path_factory) -> Path:
    """Real flowers12 test images when present; otherwise photos-like smooth random images."""
    if FLOWERS12_TEST.is_dir():
        return FLOWERS12_TEST
    import cv2

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(12):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = cv2.resize(small, (80 + 7 * i, 60 + 5 * i), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / f"{i:02d}.png" if i % 2 else root / f"{i:02d}.jpg"), img)
    return root


@pytest.fixture(scope="module")
def deployed(exported, parity_images, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    result = deploy_onnx(exported.model_dir, repo, name="tiny_cls", max_batch=16, images=parity_images)
    return result


def test_deploy_writes_a_triton_repository_that_parses_with_tritons_protobuf(deployed, exported):
    model_dir = deployed.repository / "tiny_cls"
    assert sorted(p.name for p in deployed.repository.iterdir()) == ["tiny_cls"]  # no staging left behind
    assert model_dir.stat().st_mode & 0o055 == 0o055 & ~_umask()  # readable by a server running as another user
    for name in (TRITON_CONFIG_FILE, TRITON_LABEL_FILE, PREPROCESS_FILE, DEPLOY_REPORT_FILE, f"1/{ONNX_MODEL_FILE}"):
        assert (model_dir / name).is_file(), name

    # Parsed here independently of the code under test, with Triton's own message type.
    config = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / TRITON_CONFIG_FILE).read_text(), config)
    assert config.name == "tiny_cls"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    (inp,) = config.input
    (out,) = config.output
    assert inp.name == "x" and list(inp.dims) == [3, 32, 32] and inp.data_type == model_config_pb2.TYPE_FP32
    assert inp.format == model_config_pb2.ModelInput.FORMAT_NCHW
    assert out.name == "logits" and list(out.dims) == [len(CLASSES)]
    assert out.label_filename == TRITON_LABEL_FILE
    assert config.HasField("dynamic_batching")
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert load_triton_config(model_dir / TRITON_CONFIG_FILE).max_batch_size == 16

    # Triton's label file: line i is the name of class i.
    assert (model_dir / TRITON_LABEL_FILE).read_text().splitlines() == list(CLASSES)
    pre = json.loads((model_dir / PREPROCESS_FILE).read_text())
    spec = exported.preprocess
    assert (pre["resize_short"], pre["crop"], pre["scale"]) == (spec.resize_short, spec.crop_size, spec.scale)
    assert pre["mean"] == list(spec.mean) and pre["std"] == list(spec.std)
    assert (pre["color_order"], pre["layout"], pre["input"]["name"]) == ("RGB", "NCHW", "x")
    report = json.loads((model_dir / DEPLOY_REPORT_FILE).read_text())
    assert report["parity"]["passed"] is True
    assert report["parity"]["argmax_agree"] == report["parity"]["num_inputs"] > 0
    assert report["files"][f"1/{ONNX_MODEL_FILE}"] == deployed.onnx.sha256


def test_onnx_model_reproduces_paddle_inference_on_real_images(deployed, exported, parity_images):
    assert deployed.parity.input_kind == "images" and deployed.parity.passed
    assert deployed.parity.max_abs_diff <= deployed.parity.tolerance
    # An independent check: onnxruntime straight from the repository, at batch sizes 1 and 5.
    paths = find_images(parity_images, 5)
    predictor = Predictor(exported, PredictorOptions(batch_size=8))
    batch = predictor.preprocess([read_image_rgb(p) for p in paths])
    expected = predictor.predict(batch)
    session = ort.InferenceSession(str(deployed.repository / "tiny_cls" / "1" / ONNX_MODEL_FILE),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    got_all = session.run(["logits"], {"x": batch})[0]
    got_one = session.run(["logits"], {"x": batch[:1]})[0]
    np.testing.assert_allclose(got_all, expected, atol=1e-3 + 1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(got_one[0], got_all[0], atol=1e-5)
    assert (got_all.argmax(1) == expected.argmax(1)).all()
    # No dead nodes or constants left by the converter (onnxruntime and Triton warn about each).
    import onnx

    graph = onnx.load(str(deployed.onnx.path)).graph
    consumed = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    assert all(any(out in consumed for out in node.output) for node in graph.node)
    assert all(init.name in consumed for init in graph.initializer)


def test_parity_failure_is_an_error_and_leaves_nothing(exported, parity_images, tmp_path, monkeypatch):
    # A runtime that returns other logits (as a wrongly converted graph would) must fail the deploy.
    real_run = OnnxRunner.run
    monkeypatch.setattr(OnnxRunner, "run", lambda self, batch: real_run(self, batch)[:, ::-1] * 3.0)
    with pytest.raises(ExportError, match="disagrees with Paddle Inference"):
        deploy_onnx(exported.model_dir, tmp_path / "repo", name="bad", images=parity_images)
    assert list((tmp_path / "repo").iterdir()) == []


def test_existing_model_is_not_overwritten_silently(deployed, exported, parity_images):
    before = (deployed.repository / "tiny_cls" / DEPLOY_REPORT_FILE).read_text()
    with pytest.raises(ExportError, match="already exists"):
        deploy_onnx(exported.model_dir, deployed.repository, name="tiny_cls", images=parity_images)
    assert (deployed.repository / "tiny_cls" / DEPLOY_REPORT_FILE).read_text() == before


def test_triton_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="preferred batch sizes"):
        triton_model_config("m", input_name="x", output_name="y", crop_size=32, num_classes=3, max_batch=8,
                            preferred_batch_sizes=[4, 16])
    with pytest.raises(ConfigError, match="max_batch"):
        triton_model_config("m", input_name="x", output_name="y", crop_size=32, num_classes=3, max_batch=0)
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    config = triton_model_config("m", input_name="x", output_name="y", crop_size=32, num_classes=3, max_batch=8)
    write_triton_config(model_dir / TRITON_CONFIG_FILE, config)
    # The label file named by the config is missing.
    with pytest.raises(ExportError, match="label_filename"):
        load_triton_config(model_dir / TRITON_CONFIG_FILE)
    (model_dir / TRITON_LABEL_FILE).write_text("a\nb\nc\n")
    assert load_triton_config(model_dir / TRITON_CONFIG_FILE).output[0].dims == [3]
    # A field Triton does not know is rejected by its protobuf, as the server would reject it.
    text = (model_dir / TRITON_CONFIG_FILE).read_text()
    (model_dir / TRITON_CONFIG_FILE).write_text(text + "max_batch: 4\n")
    with pytest.raises(ExportError, match="not a valid Triton model configuration"):
        load_triton_config(model_dir / TRITON_CONFIG_FILE)
    (model_dir / TRITON_CONFIG_FILE).write_text(text.replace("max_batch_size: 8", "max_batch_size: 2"))
    with pytest.raises(ExportError, match="exceeds max_batch_size"):
        load_triton_config(model_dir / TRITON_CONFIG_FILE)


def test_parity_without_images_falls_back_to_random_inputs_and_says_so(deployed, exported, caplog):
    # The tiny run's dataset ("folder" without a data root) cannot be found again.
    report = check_onnx_parity(exported, deployed.onnx.path)
    assert report.input_kind == "random" and report.passed and report.num_inputs > 0
    assert "random inputs" in caplog.text


def test_bench_deploy_cli(exported, parity_images, tmp_path, capfd):
    from bench.cli import main

    status = main(["deploy", "--model", str(exported.model_dir), "--format", "onnx", "--out", str(tmp_path / "repo"),
                   "--max-batch", "8", "--images", str(parity_images), "--parity-images", "6", "--json"])
    assert status == 0
    # stdout is exactly the JSON report: paddle2onnx's native prints must not leak into it.
    report = json.loads(capfd.readouterr().out)
    assert report["name"] == "tiny"
    assert report["parity"]["num_inputs"] == 6 and report["parity"]["passed"]
    assert report["triton"]["max_batch_size"] == 8
    assert load_triton_config(tmp_path / "repo" / "tiny" / TRITON_CONFIG_FILE).max_batch_size == 8
    # A user error is one line and exit status 2.
    assert main(["deploy", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    assert "does not exist" in capfd.readouterr().err
