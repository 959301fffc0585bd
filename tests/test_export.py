"""Export round trip of a tiny model: files, inference.yml, label map, manifest hashes, safety."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

paddle = pytest.importorskip("paddle")

from harness.config import TrainConfig  # noqa: E402
from common.errors import ConfigError, ExportError, IntegrityError  # noqa: E402
from harness.artifact import (  # noqa: E402
    CONFIG_FILE,
    LABEL_FILE,
    MANIFEST_FILE,
    PARAMS_FILE,
    ExportedModel,
    read_label_file,
    sha256_file,
)
from harness.export import export  # noqa: E402
from harness.parity import compare_logits  # noqa: E402
from harness.models import create_model  # noqa: E402
from harness.preprocess_spec import PreprocessSpec  # noqa: E402
from harness.results import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME  # noqa: E402

CLASSES = ("daisy", "tiger lily", "rose")
IMAGE_SIZE = 32


def make_run_dir(root: Path, *, classes=CLASSES, image_size: int = IMAGE_SIZE, resize_short=None, seed: int = 0) -> Path:
    """A finished-run directory for ResNet_tiny as fine_tune writes it (checkpoint, config, metrics).

    Batch-norm statistics are randomised so that eval-mode normalisation is exercised.
    """
    run_dir = root / "tiny_run"
    run_dir.mkdir(parents=True)
    paddle.seed(seed)
    model = create_model("ResNet_tiny", len(classes))
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for key, tensor in state.items():
        if key.endswith("_mean"):
            tensor.set_value(rng.normal(0, 0.1, tensor.shape).astype("float32"))
        elif key.endswith("_variance"):
            tensor.set_value(rng.uniform(0.5, 2.0, tensor.shape).astype("float32"))
    paddle.save(model.state_dict(), str(run_dir / CHECKPOINT_NAME))
    TrainConfig(model="ResNet_tiny", dataset="folder", image_size=image_size, resize_short=resize_short,
                epochs=1).write_yaml(run_dir / CONFIG_NAME)
    (run_dir / METRICS_NAME).write_text(json.dumps({
        "classes": list(classes), "history": [{"epoch": 1, "val_top1": 0.5}], "val": {"top1": 0.5, "top5": 1.0},
        "metric": "top1", "dataset": "folder",
    }))
    return run_dir


def dygraph_model(run_dir: Path, num_classes: int = len(CLASSES)):
    """The checkpoint of ``run_dir`` loaded into a dygraph model in eval mode."""
    model = create_model("ResNet_tiny", num_classes)
    model.set_state_dict(paddle.load(str(run_dir / CHECKPOINT_NAME)))
    model.eval()
    return model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("run"), resize_short=40)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> ExportedModel:
    return export(run_dir, tmp_path_factory.mktemp("exp") / "tiny")


def test_export_writes_the_files_paddle_produces_and_nothing_half_written(exported):
    names = {p.name for p in exported.model_dir.iterdir()}
    model_file = "inference.json" if paddle.__version__.startswith("3") else "inference.pdmodel"
    assert names == {model_file, PARAMS_FILE, CONFIG_FILE, LABEL_FILE, MANIFEST_FILE}
    assert exported.model_file.name == model_file
    leftovers = [p.name for p in exported.model_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_inference_yml_is_paddleclas_deploy_format_and_round_trips_the_spec(exported, run_dir):
    data = yaml.safe_load((exported.model_dir / CONFIG_FILE).read_text())
    expected_spec = TrainConfig.from_yaml(run_dir / CONFIG_NAME).preprocess
    assert expected_spec.resize_short == 40 and expected_spec.crop_size == IMAGE_SIZE
    assert PreprocessSpec.from_transform_ops(data["PreProcess"]["transform_ops"]) == expected_spec
    ops = [next(iter(op)) for op in data["PreProcess"]["transform_ops"]]
    assert ops == ["ResizeImage", "CropImage", "NormalizeImage", "ToCHWImage"]
    for key in ("infer_imgs", "inference_model_dir", "batch_size", "use_gpu", "enable_mkldnn", "cpu_num_threads",
                "enable_benchmark", "use_fp16", "ir_optim", "use_tensorrt", "gpu_mem", "enable_profile"):
        assert key in data["Global"], key
    assert data["PostProcess"]["main_indicator"] == "Topk"
    assert data["PostProcess"]["Topk"] == {"topk": len(CLASSES), "class_id_map_file": LABEL_FILE}
    assert exported.preprocess == expected_spec


def test_label_list_is_id_space_name(exported):
    lines = (exported.model_dir / LABEL_FILE).read_text().splitlines()
    assert lines == [f"{i} {name}" for i, name in enumerate(CLASSES)]
    assert read_label_file(exported.model_dir / LABEL_FILE) == CLASSES
    assert exported.classes == CLASSES


def test_manifest_records_run_and_hashes_every_file(exported):
    manifest = json.loads((exported.model_dir / MANIFEST_FILE).read_text())
    files = {p.name for p in exported.model_dir.iterdir()} - {MANIFEST_FILE}
    assert set(manifest["files"]) == files
    for name, digest in manifest["files"].items():
        assert sha256_file(exported.model_dir / name) == digest
    assert manifest["model_name"] == "ResNet_tiny"
    assert manifest["classes"] == list(CLASSES)
    assert manifest["image_size"] == IMAGE_SIZE
    assert manifest["hyperparameters"]["lr"] == TrainConfig().lr
    assert manifest["metrics"]["val"]["top1"] == 0.5
    assert manifest["paddle_version"] == paddle.__version__
    assert manifest["created_at"].endswith("+00:00")
    parity = manifest["parity"]
    assert parity["argmax_agree"] == parity["num_inputs"] > 0
    assert 0 <= parity["max_abs_diff"] <= parity["tolerance"]


def test_exported_predictor_matches_dygraph(exported, run_dir):
    from harness.predictor import Predictor, PredictorOptions

    x = np.random.default_rng(1).standard_normal((6, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    with paddle.no_grad():
        reference = dygraph_model(run_dir)(paddle.to_tensor(x)).numpy()
    predictor = Predictor(exported, PredictorOptions(backend="cpu-plain", batch_size=4))  # 2 chunks
    logits = predictor.predict(x)
    assert logits.shape == reference.shape
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)
    assert (logits.argmax(1) == reference.argmax(1)).all()


def test_existing_export_is_never_overwritten_silently(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = export(run_dir)
    assert first.model_dir == Path("exported_models") / run_dir.name
    before = json.loads((first.model_dir / MANIFEST_FILE).read_text())
    with pytest.raises(ExportError, match="overwrite=True"):
        export(run_dir)
    assert json.loads((first.model_dir / MANIFEST_FILE).read_text()) == before
    kept = shutil.copytree(first.model_dir, tmp_path / "first")
    second = export(run_dir, overwrite=True)
    after = ExportedModel.load(second.model_dir).manifest["files"]
    for name in (CONFIG_FILE, LABEL_FILE):
        assert after[name] == before["files"][name]
    # Program and weight files carry generated variable names (their order in the weights
    # file follows the names), so the same model is checked by what it computes.
    from harness.predictor import Predictor, PredictorOptions

    x = np.random.default_rng(3).standard_normal((2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    plain = PredictorOptions(backend="cpu-plain")
    np.testing.assert_array_equal(Predictor(kept, plain).predict(x), Predictor(second, plain).predict(x))
    assert sorted(p.name for p in Path("exported_models").iterdir()) == [run_dir.name]


def test_failed_parity_is_an_error_and_leaves_nothing(run_dir, tmp_path, monkeypatch):
    from harness import predictor as predictor_mod

    real_predict = predictor_mod.Predictor.predict

    def skewed(self, batch):
        out = real_predict(self, batch)
        out[:, 0] += 10.0
        return out

    monkeypatch.setattr(predictor_mod.Predictor, "predict", skewed)
    with pytest.raises(ExportError, match="disagrees with dygraph"):
        export(run_dir, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []


def test_parity_on_real_preprocessed_images(run_dir, tmp_path):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((48, 64), (70, 41), (40, 40))]
    result = export(run_dir, tmp_path / "imgs", parity_inputs=images)
    assert result.manifest["parity"]["input_kind"] == "images"
    assert result.manifest["parity"]["num_inputs"] == 3
    with pytest.raises(ConfigError, match="parity_inputs"):
        export(run_dir, tmp_path / "shape", parity_inputs=np.zeros((2, 3, 8, 8), np.float32))


def test_damaged_params_file_is_named(exported, tmp_path):
    from harness.predictor import Predictor

    copy = tmp_path / "damaged"
    shutil.copytree(exported.model_dir, copy)
    params = copy / PARAMS_FILE
    original = params.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    params.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=PARAMS_FILE):
        ExportedModel.load(copy)
    with pytest.raises(IntegrityError, match=PARAMS_FILE):
        Predictor(copy)
    params.write_bytes(original)
    assert ExportedModel.load(copy).classes == CLASSES
    (copy / LABEL_FILE).unlink()
    with pytest.raises(IntegrityError, match=f"{LABEL_FILE}.*missing"):
        ExportedModel.load(copy)
    assert ExportedModel.load(copy, verify=False).model_name == "ResNet_tiny"


def test_checkpoint_that_does_not_fit_the_classes_is_refused(tmp_path):
    run = make_run_dir(tmp_path)
    metrics = json.loads((run / METRICS_NAME).read_text())
    metrics["classes"] = ["a", "b", "c", "d"]
    (run / METRICS_NAME).write_text(json.dumps(metrics))
    with pytest.raises(ExportError, match="does not fit"):
        export(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        export(tmp_path / "nope", tmp_path / "out")


def test_compare_logits_treats_only_near_ties_as_ties():
    ref = np.array([[10.0, 0.0, 0.0], [5.0, 5.0 + 1e-6, 0.0]])
    cand = np.array([[0.0, 10.0, 0.0], [5.0 + 1e-6, 5.0, 0.0]])
    diff, tol, agree, ties, bad = compare_logits(ref, cand, rtol=1e-4, atol=1e-3)
    assert diff == pytest.approx(10.0)
    assert tol == pytest.approx(1e-3 + 1e-4 * 10.0)
    assert agree == 0 and ties == 1 and bad == [0]



@pytest.mark.parametrize("fast", ["1", "0"])
def test_checkpoints_exported_in_turn_each_get_their_own_weights(tmp_path, monkeypatch, fast):
    # A search exports one checkpoint per trial in one process; the traced layer is reused
    # across them (TLBENCH_FAST_TRIALS=1) and must carry each checkpoint's weights.
    from harness import export as export_mod
    from harness.predictor import Predictor, PredictorOptions

    monkeypatch.setenv("TLBENCH_FAST_TRIALS", fast)
    monkeypatch.setattr(export_mod, "_TRACED", export_mod.OrderedDict())
    runs = [make_run_dir(tmp_path / f"r{i}", seed=seed) for i, seed in enumerate((11, 12, 11))]
    x = np.random.default_rng(4).standard_normal((3, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    plain = PredictorOptions(backend="cpu-plain")
    outputs = []
    for i, run in enumerate(runs):
        exported = export(run, tmp_path / f"e{i}")
        with paddle.no_grad():
            reference = dygraph_model(run)(paddle.to_tensor(x)).numpy()
        got = Predictor(exported, plain).predict(x)
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)
        outputs.append(got)
    assert not np.allclose(outputs[0], outputs[1])  # different checkpoints, different logits
    np.testing.assert_allclose(outputs[0], outputs[2], rtol=1e-5, atol=1e-5)
    assert len(export_mod._TRACED) == (1 if fast == "1" else 0)


def test_export_with_predictor_returns_the_parity_predictor_of_the_published_export(run_dir, tmp_path):
    from harness.export import export_with_predictor
    from harness.predictor import Predictor, PredictorOptions

    options = PredictorOptions(backend="cpu", batch_size=4)
    exported, predictor = export_with_predictor(run_dir, tmp_path / "scored", options)
    assert predictor.model.model_dir == exported.model_dir == tmp_path / "scored"
    assert predictor.options == options
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # staging renamed away
    x = np.random.default_rng(5).standard_normal((5, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    np.testing.assert_allclose(predictor.predict(x), Predictor(exported, options).predict(x), rtol=1e-5, atol=1e-5)
    # Another backend than the parity check's: a predictor of its own, built after the export.
    plain = PredictorOptions(backend="cpu-plain", batch_size=4)
    exported2, predictor2 = export_with_predictor(run_dir, tmp_path / "plain", plain)
    assert predictor2.options == plain and predictor2.model.model_dir == exported2.model_dir
