"""CPU int8: post-training calibration of a run, the int8 export, and running it with oneDNN int8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

paddle = pytest.importorskip("paddle")

from bench.cli import main  # noqa: E402
from common.errors import BackendUnavailableError, ConfigError, ExportError  # noqa: E402
from harness.artifact import CONFIG_FILE, LEGACY_MODEL_FILE, MANIFEST_FILE, ExportedModel  # noqa: E402
from harness.export import export, load_trained_model  # noqa: E402
from harness.predictor import Predictor, PredictorOptions, default_precision  # noqa: E402
from harness.quantize import CALIBRATION_SEED, DEFAULT_ALGO, dataset_images, quantize_int8  # noqa: E402

CALIBRATION = 32
CHECK = 48


@pytest.fixture(scope="module")
def run(tiny_flowers_run, tmp_path_factory):
    """The shared tiny flowers12 run (conftest), its float32 export and its int8 export (via the CLI)."""
    exports = tmp_path_factory.mktemp("exp")
    fp32 = export(tiny_flowers_run, exports / "fp32")
    int8_dir = exports / "int8"
    rc = main(["-q", "export", "--run", tiny_flowers_run.run_dir, "--out-dir", str(int8_dir), "--precision", "int8",
               "--calibration-images", str(CALIBRATION), "--check-images", str(CHECK), "--min-agreement", "0.5"])
    assert rc == 0
    return tiny_flowers_run, fp32, ExportedModel.load(int8_dir)


def test_int8_export_holds_a_calibrated_program_and_a_complete_manifest(run):
    result, fp32, int8 = run
    files = sorted(p.name for p in int8.model_dir.iterdir())
    assert files == sorted([LEGACY_MODEL_FILE, "inference.pdiparams", CONFIG_FILE, "label_list.txt", MANIFEST_FILE])
    program = int8.model_file.read_bytes()
    # Per-channel weight scales and per-tensor activation scales are in the graph.
    assert b"fake_channel_wise_dequantize_max_abs" in program and b"fake_quantize" in program
    manifest = int8.manifest
    assert manifest["precision"] == "int8" and fp32.manifest["precision"] == "fp32"
    quant = manifest["quantization"]
    assert quant["algo"] == DEFAULT_ALGO and quant["calibration_images"] == CALIBRATION
    assert manifest["parity"]["num_inputs"] == CHECK and manifest["parity"]["min_agreement"] == 0.5
    assert set(manifest["files"]) == set(files) - {MANIFEST_FILE}
    # Same deployment preprocessing and classes as the float32 export of the run.
    assert yaml.safe_load((int8.model_dir / CONFIG_FILE).read_text()) == yaml.safe_load((fp32.model_dir / CONFIG_FILE).read_text())
    assert int8.classes == fp32.classes == tuple(result.classes)
    assert int8.preprocess == fp32.preprocess


def test_int8_predictor_tracks_float32_and_the_manifest_reports_the_truth(run):
    result, _, int8 = run
    # The manifest's check images are the run's validation images sampled with CALIBRATION_SEED + 1.
    images, labels = dataset_images(result, "val", CHECK, seed=CALIBRATION_SEED + 1)
    predictor = Predictor(int8, PredictorOptions(backend="cpu", precision="int8", batch_size=16))
    batch = predictor.preprocess(images)
    quantized = predictor.predict(batch)
    model = load_trained_model(result)
    with paddle.no_grad():
        reference = model(paddle.to_tensor(batch)).numpy()
    agree = int(np.sum(quantized.argmax(1) == reference.argmax(1)))
    parity = int8.manifest["parity"]
    assert agree == parity["argmax_agree"]
    assert parity["top1_int8"] == pytest.approx(np.mean(quantized.argmax(1) == np.asarray(labels)))
    assert parity["top1_fp32"] == pytest.approx(np.mean(reference.argmax(1) == np.asarray(labels)))
    # int8 really ran (rounding shows) and follows float32: a wrong scale, layout or graph
    # gives logits uncorrelated with float32 (this barely trained tiny model is harder to
    # quantize than a pretrained one: measured correlation 0.88 here, 0.98 for Lite0).
    assert np.abs(quantized - reference).max() > 1e-4 * np.abs(reference).max()
    # The same program run in float (fake-quantize ops simulate the rounding) is not what the
    # int8 predictor returns: oneDNN's int8 kernels ran.
    simulated = Predictor(int8, PredictorOptions(backend="cpu-plain", batch_size=16)).predict(batch)
    assert np.abs(quantized - simulated).max() > 1e-3 * np.abs(simulated).max()
    assert np.corrcoef(quantized.ravel(), reference.ravel())[0, 1] > 0.7
    assert agree >= 0.75 * CHECK


def test_int8_test_accuracy_is_within_a_few_points_of_float32(run, flowers12_splits):
    from harness.evaluate import evaluate

    _, fp32, int8 = run
    flowers = flowers12_splits
    test = list(flowers.test)[::2]
    acc = {}
    for name, model, precision in (("fp32", fp32, "fp32"), ("int8", int8, "int8")):
        predictor = Predictor(model, PredictorOptions(backend="cpu", precision=precision, batch_size=16))
        acc[name] = evaluate(predictor, test, flowers.classes, batch_size=16, workers=1).top1
    assert acc["fp32"] > 2 / 12  # the run learned something, so the comparison means something
    assert abs(acc["int8"] - acc["fp32"]) <= 0.08, acc


def test_precision_defaults_to_int8_only_for_int8_exports(run):
    _, fp32, int8 = run
    assert default_precision(int8.model_dir) == "int8"
    assert default_precision(int8, "trt") == "int8"
    assert default_precision(int8, "gpu") == "fp32"
    assert default_precision(fp32.model_dir) == "fp32"


def test_eval_command_runs_an_int8_export_at_int8_by_default(run, flowers12_root, tmp_path, capsys):
    _, _, int8 = run
    rc = main(["-q", "eval", "--model", str(int8.model_dir), "--dataset", "folder", "--data-root", str(flowers12_root),
               "--limit", "8", "--batch-size", "4", "--out-dir", str(tmp_path), "--json"])
    assert rc == 0
    record = json.loads(capsys.readouterr().out)
    assert record["predictor"]["precision"] == "int8" and record["predictor"]["backend"] == "cpu"
    assert record["num_images"] == 8


def test_onnx_deploy_refuses_an_int8_export_with_a_clear_error(run, tmp_path):
    from harness.onnx_export import convert_to_onnx

    _, fp32, int8 = run
    assert int8.quantized and not fp32.quantized
    # paddle2onnx would abort the process on fake-quantize ops; the export is refused first.
    with pytest.raises(ExportError, match="int8 export .* float32 export"):
        convert_to_onnx(int8, tmp_path / "model.onnx")


def test_float32_export_refuses_cpu_int8_and_names_the_way_to_quantize(run):
    _, fp32, _ = run
    with pytest.raises(BackendUnavailableError, match="int8 export.*harness.quantize.quantize_int8"):
        Predictor(fp32, PredictorOptions(backend="cpu", precision="int8"))


def test_int8_that_disagrees_with_float32_is_an_error_and_leaves_nothing(run, tmp_path, monkeypatch):
    result, _, _ = run

    def reversed_classes(self, batch):
        return np.ascontiguousarray(np.asarray(original(self, batch))[:, ::-1])

    original = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", reversed_classes)
    out = tmp_path / "bad"
    with pytest.raises(ExportError, match="min_agreement"):
        quantize_int8(result, out, num_calibration=8, num_check=16, min_agreement=0.9)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory left behind


def test_existing_int8_export_is_not_overwritten_and_flags_are_checked(run, capsys):
    result, _, int8 = run
    before = (int8.model_dir / MANIFEST_FILE).read_bytes()
    assert main(["export", "--run", result.run_dir, "--out-dir", str(int8.model_dir), "--precision", "int8"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (int8.model_dir / MANIFEST_FILE).read_bytes() == before
    assert main(["export", "--run", result.run_dir, "--out-dir", str(Path(int8.model_dir).parent / "x"),
                 "--calibration-images", "8"]) == 2
    assert "only apply with --precision int8" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"algo": "median"}, "algo must be one of"),
        ({"min_agreement": 1.5}, "min_agreement"),
        ({"num_calibration": 0}, "num_calibration"),
        ({"calibration_images": []}, "calibration_images is empty"),
    ],
)
def test_bad_int8_arguments_are_named(run, tmp_path, kwargs, message):
    result, _, _ = run
    with pytest.raises(ConfigError, match=message):
        quantize_int8(result, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_int8_bench_compares_the_precisions_side_by_side(run, tmp_path, capsys):
    result, _, _ = run
    precisions = "fp32,int8" if "bf16" not in _cpu_precisions() else "fp32,bf16,int8"
    rc = main(["-q", "int8-bench", "--run", result.run_dir, "--limit", "16", "--latency-batches", "1,2",
               "--duration", "0.1", "--repeats", "2", "--calibration-images", "8", "--precisions", precisions,
               "--out-dir", str(tmp_path), "--json"])
    assert rc == 0
    record = json.loads(capsys.readouterr().out)
    assert record == json.loads((tmp_path / "int8_bench.json").read_text())
    rows = record["precisions"]
    assert list(rows) == precisions.split(",")
    assert rows["fp32"]["agreement_with_fp32"] == 1.0
    assert record["quantization"]["calibration_images"] == 8
    for row in rows.values():
        assert row["num_images"] == 16 and 0.0 <= row["top1"] <= 1.0
        for batch in ("b1", "b2"):
            assert row[batch]["rounds"] == 2 and row[batch]["img_per_s"] > 0
    assert rows["fp32"]["b1"]["speedup_vs_fp32"] == 1.0
    assert rows["int8"]["b2"]["speedup_vs_fp32"] == pytest.approx(
        rows["int8"]["b2"]["img_per_s"] / rows["fp32"]["b2"]["img_per_s"])

    assert main(["int8-bench", "--run", result.run_dir, "--precisions", "fp16"]) == 2
    assert "--precisions takes a comma-separated subset of fp32,bf16,int8" in capsys.readouterr().err


def _cpu_precisions() -> set[str]:
    from common.errors import BackendUnavailableError as Unavailable
    from harness.predictor import check_backend

    try:
        check_backend("cpu", "bf16")
    except Unavailable:
        return {"fp32", "int8"}
    return {"fp32", "bf16", "int8"}


def test_a_float_legacy_program_is_not_taken_for_an_int8_one(run, tmp_path):
    """Legacy programs name every registered op in their version table, quantize ops included."""
    from harness.artifact import PARAMS_FILE, program_op_types
    from harness.quantize import _legacy_static_graph

    result, fp32, int8 = run
    model = load_trained_model(result)
    with _legacy_static_graph() as legacy_paddle:
        legacy_paddle.jit.save(model, str(tmp_path / "inference"),
                               input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32", name="x")])
    float_legacy = ExportedModel(model_dir=tmp_path, model_file=tmp_path / LEGACY_MODEL_FILE,
                                 params_file=tmp_path / PARAMS_FILE, preprocess=fp32.preprocess)
    assert b"fake_channel_wise" in float_legacy.model_file.read_bytes()  # the trap
    assert "conv2d" in program_op_types(float_legacy.model_file)
    assert not float_legacy.quantized
    assert default_precision(float_legacy) == "fp32"
    assert {"fake_quantize_range_abs_max", "fake_channel_wise_dequantize_max_abs"} <= program_op_types(int8.model_file)
    assert not any("quant" in op for op in program_op_types(fp32.model_file))
