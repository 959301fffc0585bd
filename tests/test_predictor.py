"""Paddle Inference predictor: parity, preprocessing parity, capability checks, PaddleClas dirs."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import yaml

paddle = pytest.importorskip("paddle")

from harness import predictor as predictor_mod  # noqa: E402
from harness.data import EvalTransform  # noqa: E402
from common.errors import BackendUnavailableError, ConfigError, ModelError  # noqa: E402
from harness.artifact import CONFIG_FILE, LABEL_FILE, MANIFEST_FILE, ExportedModel  # noqa: E402
from harness.export import export  # noqa: E402
from harness.predictor import Predictor, PredictorOptions, check_backend  # noqa: E402
from test_export import CLASSES, IMAGE_SIZE, dygraph_model, make_run_dir  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("run"), seed=1)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> ExportedModel:
    return export(run_dir, tmp_path_factory.mktemp("exp") / "tiny")


@pytest.fixture(scope="module")
def predictor(exported) -> Predictor:
    return Predictor(exported, PredictorOptions(backend="cpu", batch_size=8, threads=1))


def random_images(seed: int = 0):
    """RGB uint8 images of assorted sizes and aspect ratios (odd sides included)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((37, 37), (64, 45), (45, 90), (33, 120), (101, 57))]


def paddleclas_deploy_ops(image: np.ndarray, transform_ops: list) -> np.ndarray:
    """PaddleClas deploy semantics of ``transform_ops`` (ResizeImage, CropImage, NormalizeImage, ToCHWImage)."""
    img = image
    for op in transform_ops:
        (name, args), = op.items()
        if name == "ResizeImage":
            h, w = img.shape[:2]
            percent = float(args["resize_short"]) / min(w, h)
            img = cv2.resize(img, (int(round(w * percent)), int(round(h * percent))), interpolation=cv2.INTER_LINEAR)
        elif name == "CropImage":
            size = args["size"]
            h, w = img.shape[:2]
            top, left = (h - size) // 2, (w - size) // 2
            img = img[top : top + size, left : left + size, :]
        elif name == "NormalizeImage":
            mean = np.array(args["mean"]).reshape((1, 1, 3)).astype("float32")
            std = np.array(args["std"]).reshape((1, 1, 3)).astype("float32")
            img = (img.astype("float32") * np.float32(args["scale"]) - mean) / std
        elif name == "ToCHWImage":
            img = img.transpose((2, 0, 1))
        else:
            raise AssertionError(f"unexpected op {name}")
    return img


def test_predictor_matches_dygraph_with_onednn(predictor, run_dir):
    x = np.random.default_rng(5).standard_normal((5, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    with paddle.no_grad():
        reference = dygraph_model(run_dir)(paddle.to_tensor(x)).numpy()
    logits = predictor.predict(x)
    assert logits.dtype == np.float32 and logits.shape == (5, len(CLASSES))
    scale = np.abs(reference).max()
    assert np.abs(logits - reference).max() <= 1e-3 + 1e-4 * scale
    assert (logits.argmax(1) == reference.argmax(1)).all()
    # A different batch size on the same predictor (dynamic batch) gives the same rows.
    np.testing.assert_allclose(predictor.predict(x[:2]), logits[:2], rtol=1e-5, atol=1e-5)


def test_training_eval_transform_equals_inference_yml_path(predictor, exported):
    ops = yaml.safe_load((exported.model_dir / CONFIG_FILE).read_text())["PreProcess"]["transform_ops"]
    images = random_images()
    deploy = np.stack([paddleclas_deploy_ops(img, ops) for img in images])
    training = EvalTransform(exported.preprocess).batch(images)
    ours = predictor.preprocess(images)
    assert deploy.shape == training.shape == ours.shape == (len(images), 3, IMAGE_SIZE, IMAGE_SIZE)
    # Bilinear resizing may differ by one uint8 step between OpenCV and the fused kernel.
    one_step = (1 / 255) / min(exported.preprocess.std) + 1e-5
    assert np.abs(training - deploy).max() <= one_step
    assert np.abs(ours - deploy).max() <= one_step
    np.testing.assert_allclose(predictor.predict_images(images), predictor.predict(ours), rtol=1e-6, atol=1e-6)


def test_clone_shares_weights_and_runs_concurrently(predictor):
    import threading

    x = np.random.default_rng(11).standard_normal((4, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    expected = predictor.predict(x)
    clones = [predictor.clone() for _ in range(2)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = clones[i].predict(x)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        np.testing.assert_allclose(results[i], expected, rtol=1e-5, atol=1e-5)


def test_predict_rejects_wrong_input(predictor):
    with pytest.raises(ConfigError, match=r"\[N, 3, 32, 32\]"):
        predictor.predict(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(ConfigError, match="float32"):
        predictor.predict(np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float64))


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="this Paddle has CUDA")
def test_gpu_and_trt_on_cpu_build_fail_with_one_clear_line(exported):
    with pytest.raises(BackendUnavailableError, match="paddlepaddle-gpu") as gpu_err:
        check_backend("gpu", "fp32")
    with pytest.raises(BackendUnavailableError, match="TensorRT") as trt_err:
        check_backend("trt", "fp16")
    for err in (gpu_err, trt_err):
        assert "\n" not in str(err.value) and "CPU build" in str(err.value)
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        Predictor(exported, PredictorOptions(backend="trt", precision="fp32"))


def test_trt_check_names_tensorrt_on_a_cuda_build_without_it(monkeypatch):
    import paddle.inference as pi

    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(predictor_mod, "_cuda_devices", lambda: 1)
    monkeypatch.setattr(pi, "get_trt_compile_version", lambda: (0, 0, 0))
    with pytest.raises(BackendUnavailableError, match="built without it.*TensorRT"):
        check_backend("trt", "fp32")


def test_invalid_backend_precision_pairs_are_config_errors():
    with pytest.raises(ConfigError, match="bf16"):
        check_backend("cpu", "fp16")
    with pytest.raises(ConfigError, match="backend must be one of"):
        check_backend("tpu", "fp32")
    with pytest.raises(ConfigError, match="cpu-plain"):
        check_backend("cpu-plain", "int8")
    with pytest.raises(ConfigError, match="batch_size"):
        PredictorOptions(batch_size=0)
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        PredictorOptions(trt_min_batch=4, trt_max_batch=2)


def test_bf16_needs_the_cpu_flag(monkeypatch, exported):
    monkeypatch.setattr(predictor_mod, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(BackendUnavailableError, match="AVX512-BF16"):
        Predictor(exported, PredictorOptions(precision="bf16"))


@pytest.mark.skipif(not {"avx512_bf16", "amx_bf16"} & predictor_mod.cpu_flags(), reason="CPU lacks AVX512-BF16")
def test_bf16_predictor_stays_close_to_fp32(exported, predictor):
    bf16 = Predictor(exported, PredictorOptions(precision="bf16", threads=1))
    x = np.random.default_rng(9).standard_normal((8, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    ref = predictor.predict(x)
    out = bf16.predict(x)
    scale = np.abs(ref).max()
    # bfloat16 keeps 8 mantissa bits: a few percent of the logit scale after a dozen layers.
    assert np.abs(out - ref).max() <= 0.1 * scale
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.1 * scale
    assert (out.argmax(1) == ref.argmax(1))[clear].all()


def test_cpu_int8_on_a_float_model_says_what_is_needed(exported):
    with pytest.raises(BackendUnavailableError, match="needs an int8 export.*quantize_int8"):
        Predictor(exported, PredictorOptions(precision="int8"))


@pytest.mark.parametrize("layout", ["exported", "deploy"])
def test_plain_paddleclas_directory_loads_without_manifest(exported, predictor, tmp_path, layout):
    plain = tmp_path / "paddleclas"
    shutil.copytree(exported.model_dir, plain)
    (plain / MANIFEST_FILE).unlink()
    if layout == "deploy":
        # deploy/configs style: PostProcess {name: Topk, ...} and a class map elsewhere.
        cfg = yaml.safe_load((plain / CONFIG_FILE).read_text())
        labels = tmp_path / "labels.txt"
        shutil.move(plain / LABEL_FILE, labels)
        cfg["PostProcess"] = {"name": "Topk", "topk": 5, "class_id_map_file": str(labels)}
        cfg["PreProcess"]["transform_ops"][2]["NormalizeImage"]["scale"] = "1.0/255.0"
        (plain / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    model = ExportedModel.load(plain)
    assert model.manifest is None and model.classes == CLASSES
    assert model.preprocess == exported.preprocess
    plain_predictor = Predictor(model, PredictorOptions(backend="cpu", threads=1))
    x = np.random.default_rng(2).standard_normal((3, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    np.testing.assert_allclose(plain_predictor.predict(x), predictor.predict(x), rtol=1e-5, atol=1e-5)


def test_directory_without_yml_or_model_is_a_model_error(exported, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        ExportedModel.load(tmp_path / "missing")
    bare = tmp_path / "bare"
    shutil.copytree(exported.model_dir, bare)
    (bare / MANIFEST_FILE).unlink()
    (bare / CONFIG_FILE).unlink()
    with pytest.raises(ModelError, match="inference.yml"):
        ExportedModel.load(bare)
    for p in bare.glob("inference.*"):
        p.unlink()
    with pytest.raises(ModelError, match="inference.pdiparams"):
        ExportedModel.load(bare)
