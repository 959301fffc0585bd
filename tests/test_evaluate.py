"""Exported evaluation on real flowers12 images, and the eval / predict / export commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from bench.cli import main  # noqa: E402
from harness.data import EvalTransform, Sample, read_image_rgb  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from harness.evaluate import evaluate  # noqa: E402
from harness.export import export  # noqa: E402
from harness.metrics import classification_metrics  # noqa: E402
from harness.models import create_model  # noqa: E402
from harness.predictor import Predictor, PredictorOptions  # noqa: E402

PER_CLASS = 4


@pytest.fixture(scope="module")
def flowers(flowers12_splits):
    return flowers12_splits


@pytest.fixture(scope="module")
def trained(tiny_flowers_run, flowers, tmp_path_factory):
    """ResNet_tiny fine-tuned briefly on flowers12 at 32 px (conftest), and its export."""
    parity_images = [read_image_rgb(s.path) for s in flowers.test[:4]]
    exported = export(tiny_flowers_run, tmp_path_factory.mktemp("exp") / "tiny_flowers", parity_inputs=parity_images)
    return tiny_flowers_run, exported


@pytest.fixture(scope="module")
def test_samples(flowers):
    """The first PER_CLASS test images of every class."""
    picked: dict[int, list[Sample]] = {}
    for s in flowers.test:
        picked.setdefault(s.label, [])
        if len(picked[s.label]) < PER_CLASS:
            picked[s.label].append(s)
    return [s for label in sorted(picked) for s in picked[label]]


def test_exported_evaluation_equals_dygraph_evaluation_of_the_checkpoint(trained, flowers, test_samples):
    result, exported = trained
    predictor = Predictor(exported, PredictorOptions(backend="cpu", batch_size=8))
    ev = evaluate(predictor, test_samples, flowers.classes, batch_size=8, workers=2)

    model = create_model("ResNet_tiny", len(flowers.classes))
    model.set_state_dict(paddle.load(result.checkpoint))
    model.eval()
    transform = EvalTransform(result.preprocess)
    images = [read_image_rgb(s.path) for s in test_samples]
    with paddle.no_grad():
        reference = model(paddle.to_tensor(transform.batch(images))).numpy()
    labels = np.array([s.label for s in test_samples])

    assert ev.num_images == len(test_samples) and ev.num_skipped == 0
    assert ev.worker_kind == "process"  # 6 batches: worker processes + shared memory
    assert ev.paths == [s.path for s in test_samples]
    np.testing.assert_array_equal(ev.labels, labels)
    assert (ev.logits.argmax(1) == reference.argmax(1)).all()
    expected = classification_metrics(reference, labels, len(flowers.classes))
    assert ev.top1 == pytest.approx(expected["top1"])
    assert ev.top5 == pytest.approx(expected["top5"])
    assert ev.mean_per_class == pytest.approx(expected["mean_per_class"])
    assert ev.top1 > 1.5 / len(flowers.classes)  # briefly trained: better than chance
    assert ev.confusion.sum() == ev.num_images and ev.confusion.shape == (12, 12)
    assert ev.images_per_sec > 0 and ev.latency["p99_ms"] >= ev.latency["p50_ms"] > 0
    import kernels

    record = ev.to_dict()
    assert record["preprocess_backend"] == kernels.backend()
    assert record["predictor"]["backend"] == "cpu"
    json.dumps(record)


@pytest.mark.parametrize("worker_kind", ["thread", "process"])
def test_unreadable_images_are_skipped_and_listed(trained, flowers, test_samples, tmp_path, worker_kind):
    _, exported = trained
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    samples = list(test_samples[:5]) + [Sample(str(broken), 0)]
    predictor = Predictor(exported, PredictorOptions(backend="cpu", batch_size=4))
    ev = evaluate(predictor, samples, flowers.classes, workers=1, worker_kind=worker_kind, warmup=False)
    assert ev.num_images == 5 and ev.worker_kind == worker_kind
    assert [p for p, _ in ev.skipped] == [str(broken)]
    assert ev.paths == [s.path for s in test_samples[:5]]
    np.testing.assert_allclose(ev.logits, predictor.predict_images([read_image_rgb(p) for p in ev.paths]),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="classes"):
        evaluate(predictor, samples, flowers.classes[:3])


def test_eval_command_writes_eval_json(trained, flowers12_root, tmp_path, capsys):
    _, exported = trained
    # -q: info logs would share stdout with the JSON document.
    rc = main(["-q", "eval", "--model", str(exported.model_dir), "--dataset", "folder", "--data-root", str(flowers12_root),
               "--split", "test", "--limit", "10", "--batch-size", "4", "--out-dir", str(tmp_path), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "eval.json").read_text())
    assert printed == written
    assert written["num_images"] == 10 and written["split"] == "test"
    assert 0.0 <= written["top1"] <= written["top5"] <= 1.0
    assert len(written["confusion_matrix"]) == 12


def test_eval_command_table_output(trained, flowers12_root, tmp_path, capsys):
    _, exported = trained
    rc = main(["eval", "--model", str(exported.model_dir), "--dataset", "folder", "--data-root", str(flowers12_root),
               "--limit", "4", "--batch-size", "4", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "top-1" in out and "img/s" in out
    assert (tmp_path / "eval.json").is_file()


def test_predict_command_prints_topk_with_class_names(trained, flowers, test_samples, capsys):
    _, exported = trained
    images = [test_samples[0].path, test_samples[-1].path]
    assert main(["-q", "predict", "--model", str(exported.model_dir), *images, "--topk", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["image"] for r in results] == images
    predictor = Predictor(exported, PredictorOptions(batch_size=2))
    logits = predictor.predict_images([read_image_rgb(p) for p in images])
    for r, row in zip(results, logits):
        assert r["class_ids"] == list(np.argsort(-row)[:3])
        assert r["label_names"] == [flowers.classes[i] for i in r["class_ids"]]
        assert r["scores"] == sorted(r["scores"], reverse=True) and 0 < sum(r["scores"]) <= 1 + 1e-6
    assert main(["predict", "--model", str(exported.model_dir), images[0], "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert results[0]["label_names"][0] in out


def test_export_command_refuses_to_overwrite(trained, tmp_path, capsys):
    result, _ = trained
    out = tmp_path / "cli_export"
    assert main(["-q", "export", "--run", result.run_dir, "--out-dir", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert Path(summary["model_dir"]) == out and "manifest.json" not in summary["files"]
    assert main(["export", "--run", result.run_dir, "--out-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "--run", result.run_dir, "--out-dir", str(out), "--overwrite"]) == 0


def test_softmax_is_stable_and_keeps_float_dtypes():
    from harness.metrics import softmax

    big = np.array([[1000.0, 1001.0], [-5.0, -5.0]], np.float32)
    out = softmax(big)
    assert out.dtype == np.float32 and np.allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(out[1], [0.5, 0.5])
    assert softmax(np.array([1, 2, 3])).dtype == np.float64
    np.testing.assert_allclose(softmax(big.T.astype(np.float64), axis=0), out.T.astype(np.float64), rtol=1e-6)


def test_topk_orders_best_first_and_breaks_ties_by_lower_index():
    from harness.metrics import topk

    idx, val = topk(np.array([0.1, 0.5, 0.5, 0.2, 0.5]), 2)
    assert idx.tolist() == [1, 2] and val.tolist() == [0.5, 0.5]
    rows = np.array([[3.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
    idx, val = topk(rows, 3)
    assert idx.tolist() == [[0, 3, 2], [3, 0, 1]] and val.tolist() == [[3.0, 3.0, 2.0], [1.0, 0.0, 0.0]]
    assert topk(rows, 10)[0].shape == (2, 4)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (50, 30)).astype(np.float32)  # many ties
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(topk(scores, 5)[0], expected)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        topk(rows, 0)
