"""bench throughput: percentile maths, the runner, the report schema, a short real run, agreement, errors."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.perf import baseline, inputs, quick, schema
from bench.perf import clients as perf_clients
from bench.perf import outputs as perf_outputs
from bench.perf import throughput as tp
from common.errors import ConfigError, DatasetError
from harness.metrics import latency_summary

# -- percentile maths (no Paddle) ----------------------------------------------------------------


def test_latency_percentiles_match_hand_computed_values_on_1_to_100_ms():
    # Linear interpolation at index q/100 * (n - 1): p90 of 1..100 sits 10 % of the way from 90 to 91.
    summary = latency_summary(np.arange(1, 101) / 1000.0)
    expected = {"mean_ms": 50.5, "p50_ms": 50.5, "p90_ms": 90.1, "p95_ms": 95.05, "p99_ms": 99.01, "max_ms": 100.0}
    assert summary.keys() == expected.keys()
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("seed,n", [(0, 7), (1, 1000), (2, 1)])
def test_latency_percentiles_match_numpy_on_random_samples(seed, n):
    seconds = np.random.default_rng(seed).lognormal(mean=-4, sigma=0.8, size=n)
    summary = latency_summary(seconds)
    ms = seconds * 1000
    for q in (50, 90, 95, 99):
        assert summary[f"p{q}_ms"] == pytest.approx(float(np.percentile(ms, q)), rel=1e-12)
    assert summary["mean_ms"] == pytest.approx(float(ms.mean()), rel=1e-12)
    assert summary["max_ms"] == pytest.approx(float(ms.max()), rel=1e-12)
    assert summary["p50_ms"] <= summary["p90_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def _rep(latencies_ms, images, wall_s, batch=2):
    lat = np.asarray(latencies_ms, np.float64) / 1000
    # Stages: decode 10 %, preprocess 20 %, inference 60 %, postprocess 10 % of each request.
    stages = lat[:, None] * np.array([0.1, 0.2, 0.6, 0.1])
    return perf_clients.Repetition(images=images, requests=len(lat), wall_s=wall_s, latencies_s=lat, stages_s=stages)


def test_summarize_point_pools_requests_and_spreads_img_per_sec_over_repetitions():
    reps = [_rep([10, 12, 30], 6, 0.5), _rep([11, 50], 4, 0.2), _rep([9, 9, 9, 9], 8, 1.0)]
    record = tp.summarize_point("ours", "jpeg", 2, 1, 2, reps)
    pooled = np.array([10, 12, 30, 11, 50, 9, 9, 9, 9], np.float64)
    for q in (50, 90, 95, 99):
        assert record["latency_ms"][f"p{q}_ms"] == pytest.approx(np.percentile(pooled, q))
    assert record["latency_ms"]["max_ms"] == pytest.approx(50)
    runs = [12.0, 20.0, 8.0]
    assert record["images_per_sec_runs"] == pytest.approx(runs)
    assert (record["images_per_sec"], record["images_per_sec_min"], record["images_per_sec_max"]) == pytest.approx(
        (12.0, 8.0, 20.0))
    assert record["requests"] == 9 and record["images"] == 18
    assert sum(record["split_ms"].values()) == pytest.approx(pooled.mean())
    assert record["split_ms"]["inference"] == pytest.approx(0.6 * pooled.mean())
    assert sum(record["split_fraction"].values()) == pytest.approx(1.0)
    assert record["pipeline_ms_per_image"] == pytest.approx(0.4 * pooled.mean() / 2)


def test_add_ratios_divides_by_model_only_and_by_the_baseline_at_the_same_batch():
    def point(pipeline, input_mode, b, c, ips, pipeline_ms=0.0):
        return {"pipeline": pipeline, "input": input_mode, "batch_size": b, "concurrency": c, "images_per_sec": ips,
                "pipeline_ms_per_image": pipeline_ms,
                "ratios": {"e2e_over_model": None, "ours_over_baseline": None, "pipeline_speedup_vs_baseline": None}}

    none = {"e2e_over_model": None, "ours_over_baseline": None, "pipeline_speedup_vs_baseline": None}
    points = [point("ours", "jpeg", 8, 2, 30.0, 0.5), point("ours", "tensor", 8, 2, 40.0),
              point("ours", "tensor", 8, 1, 25.0), point("baseline", "jpeg", 8, 1, 10.0, 2.0),
              point("ours", "jpeg", 1, 1, 5.0, 1.0), point("ours", "jpeg", 8, 1, 20.0, 0.25)]
    tp.add_ratios(points)
    # At concurrency 2 the stage times include waiting for a core: no pipeline comparison there.
    assert points[0]["ratios"] == {**none, "e2e_over_model": pytest.approx(0.75), "ours_over_baseline": pytest.approx(3.0)}
    assert points[1]["ratios"] == none
    assert points[3]["ratios"] == {**none, "e2e_over_model": pytest.approx(0.4)}
    assert points[4]["ratios"] == none  # no baseline at batch 1, no model-only point at batch 1
    assert points[5]["ratios"] == {"e2e_over_model": pytest.approx(0.8), "ours_over_baseline": pytest.approx(2.0),
                                   "pipeline_speedup_vs_baseline": pytest.approx(8.0)}


# -- the closed-loop runner (no Paddle) ------------------------------------------------------------


class _SleepClient:
    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def __call__(self):
        self.calls += 1
        time.sleep(self.seconds)
        return 0.0, 0.0, self.seconds, 0.0


def test_run_clients_counts_fixed_requests_per_client():
    clients = [_SleepClient(0.002) for _ in range(3)]
    rep = perf_clients.run_clients(clients, 4, requests=5)
    assert [c.calls for c in clients] == [5, 5, 5]
    assert rep.requests == 15 and rep.images == 60
    assert rep.latencies_s.shape == (15,) and rep.stages_s.shape == (15, 4)
    assert np.all(rep.latencies_s >= 0.002)
    assert rep.images_per_sec == pytest.approx(60 / rep.wall_s)


def test_run_clients_runs_for_the_duration_and_finishes_started_requests():
    clients = [_SleepClient(0.01), _SleepClient(0.01)]
    rep = perf_clients.run_clients(clients, 1, duration_s=0.1)
    assert 0.1 <= rep.wall_s < 0.1 + 0.25  # the last request may start just before the deadline
    assert rep.requests == sum(c.calls for c in clients) >= 2


def test_run_clients_reraises_a_client_error_and_rejects_bad_arguments():
    def broken():
        raise RuntimeError("client failed")

    with pytest.raises(RuntimeError, match="client failed"):
        perf_clients.run_clients([broken], 1, requests=1)
    with pytest.raises(ConfigError):
        perf_clients.run_clients([_SleepClient(0.0)], 1, duration_s=1.0, requests=1)
    with pytest.raises(ConfigError):
        perf_clients.run_clients([], 1, requests=1)


def test_config_validation_names_the_flag():
    with pytest.raises(ConfigError, match="--batch-sizes"):
        tp.ThroughputConfig(model_dir="m", batch_sizes=(1, 0))
    with pytest.raises(ConfigError, match="--duration"):
        tp.ThroughputConfig(model_dir="m", duration_s=-1.0)
    with pytest.raises(ConfigError, match="--input"):
        tp.ThroughputConfig(model_dir="m", inputs=("png",))
    cfg = tp.ThroughputConfig(model_dir="m", concurrency=(1, 2, 4), inputs=("tensor",))
    assert [cfg.threads_for(c, 4) for c in (1, 2, 4, 8)] == [4, 2, 1, 1]
    assert not cfg.run_baseline


# -- inputs ------------------------------------------------------------------------------------------


def _write_jpegs(folder: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = int(rng.integers(36, 70)), int(rng.integers(36, 70))
        # Smooth content plus noise: JPEG-like statistics rather than pure noise.
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (h + w))], axis=2)
        img = np.clip(base + rng.integers(-30, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
        sub = folder / f"class{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".jpg", img)
        assert ok
        (sub / f"{i:03d}.jpg").write_bytes(buf.tobytes())
    return folder


def test_load_jpeg_bytes_is_sorted_limited_and_skips_non_jpeg_data(tmp_path):
    _write_jpegs(tmp_path, 5)
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "class0" / "fake.jpg").write_bytes(png.tobytes())
    loaded = inputs.load_jpeg_bytes(tmp_path, 100)
    assert [name for name, _ in loaded] == sorted(name for name, _ in loaded)
    assert len(loaded) == 5 and all(data[:2] == b"\xff\xd8" for _, data in loaded)
    assert len(inputs.load_jpeg_bytes(tmp_path, 3)) == 3
    with pytest.raises(DatasetError, match="no JPEG"):
        inputs.load_jpeg_bytes(_empty_dir(tmp_path), 3)


def _empty_dir(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_default_images_folder_missing_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="flowers12") as info:
        inputs.resolve_images_dir(None)
    assert "--images" in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(DatasetError, match="--images"):
        inputs.resolve_images_dir(str(tmp_path / "nope"))


# -- Paddle: a tiny exported model -------------------------------------------------------------------

CLASSES = ("a", "b", "c")


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    """A ResNet_tiny (32 px) built from a saved state dict with randomised BN statistics, exported."""
    paddle = pytest.importorskip("paddle")
    from harness.config import TrainConfig
    from harness.export import export
    from harness.models import create_model
    from harness.results import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME

    root = tmp_path_factory.mktemp("tiny")
    run_dir = root / "run"
    run_dir.mkdir()
    paddle.seed(3)
    model = create_model("ResNet_tiny", len(CLASSES))
    rng = np.random.default_rng(3)
    for key, tensor in model.state_dict().items():
        if key.endswith("_mean"):
            tensor.set_value(rng.normal(0, 0.1, tensor.shape).astype("float32"))
        elif key.endswith("_variance"):
            tensor.set_value(rng.uniform(0.5, 2.0, tensor.shape).astype("float32"))
    paddle.save(model.state_dict(), str(run_dir / CHECKPOINT_NAME))
    TrainConfig(model="ResNet_tiny", dataset="folder", image_size=32, epochs=1).write_yaml(run_dir / CONFIG_NAME)
    (run_dir / METRICS_NAME).write_text(json.dumps({"classes": list(CLASSES), "history": [], "val": {}, "metric": "top1"}))
    return export(run_dir, root / "export").model_dir


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory) -> Path:
    return _write_jpegs(tmp_path_factory.mktemp("jpegs"), 12, seed=1)


@pytest.fixture(scope="module")
def short_run(tiny_export, jpeg_dir, tmp_path_factory):
    """``bench throughput`` through the CLI: batch 1,2 × concurrency 1,2, both inputs and the baseline."""
    from bench.cli import main

    out = tmp_path_factory.mktemp("out")
    status = main(["throughput", "--model", str(tiny_export), "--images", str(jpeg_dir), "--batch-sizes", "1,2",
                   "--concurrency", "1,2", "--duration", "0.3", "--warmup", "0.05", "--repetitions", "2",
                   "--out-dir", str(out)])
    return status, out


def test_short_real_run_writes_every_output_with_all_points(short_run):
    status, out = short_run
    assert status == 0
    for name in (schema.JSON_FILE, schema.MARKDOWN_FILE, schema.PLOT_LATENCY_FILE, schema.PLOT_SPLIT_FILE):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / schema.PLOT_LATENCY_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / schema.JSON_FILE).read_text())
    schema.validate_report(report)
    keys = {(p["pipeline"], p["input"], p["batch_size"], p["concurrency"]) for p in report["points"]}
    expected = {("ours", i, b, c) for i in ("jpeg", "tensor") for b in (1, 2) for c in (1, 2)}
    expected |= {("baseline", "jpeg", b, 1) for b in (1, 2)}
    assert keys == expected and len(report["points"]) == len(expected)
    for p in report["points"]:
        lat = p["latency_ms"]
        assert p["images_per_sec"] > 0 and p["repetitions"] == 2 and len(p["images_per_sec_runs"]) == 2
        assert p["images_per_sec_min"] <= p["images_per_sec"] <= p["images_per_sec_max"]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert p["images"] == p["requests"] * p["batch_size"]
        # The stages are timed inside the request, so they cannot add up to more than its latency.
        assert sum(p["split_ms"].values()) <= lat["mean_ms"] * 1.001
        assert p["threads_per_predictor"] == max(1, report["environment"]["cpu_cores"] // p["concurrency"])
        if p["input"] == "tensor":
            assert p["split_ms"]["decode"] == 0 and p["split_ms"]["preprocess"] == 0
        else:
            assert p["split_ms"]["decode"] > 0 and p["split_ms"]["preprocess"] > 0
            assert p["ratios"]["e2e_over_model"] > 0
        if (p["pipeline"], p["input"]) == ("ours", "jpeg"):
            assert p["ratios"]["ours_over_baseline"] > 0
            assert (p["ratios"]["pipeline_speedup_vs_baseline"] is None) == (p["concurrency"] > 1)
    env = report["environment"]
    assert env["model_name"] == "ResNet_tiny" and env["image_size"] == 32 and env["backend"] == "cpu"
    assert env["kernels_backend"] in ("cpu-native", "reference")
    md = (out / schema.MARKDOWN_FILE).read_text()
    assert "ours / baseline" in md and env["cpu_model"] in md and schema.PLOT_LATENCY_FILE in md


def test_short_run_baseline_and_ours_agree_on_predictions(short_run):
    _, out = short_run
    agreement = json.loads((out / schema.JSON_FILE).read_text())["agreement"]
    assert agreement["images"] == 12
    assert agreement["disagree_beyond_ties"] == 0
    assert agreement["top1_agree"] + agreement["near_ties"] >= agreement["images"]
    assert agreement["max_abs_logit_diff"] <= agreement["logit_tolerance"]


def test_schema_rejects_missing_keys_wrong_types_and_nan(short_run):
    _, out = short_run
    report = json.loads((out / schema.JSON_FILE).read_text())
    broken = copy.deepcopy(report)
    del broken["points"][1]["latency_ms"]["p99_ms"]
    with pytest.raises(schema.ReportSchemaError, match=r"points\[1\]\.latency_ms: required key 'p99_ms'"):
        schema.validate_report(broken)
    broken = copy.deepcopy(report)
    broken["points"][0]["batch_size"] = "8"
    with pytest.raises(schema.ReportSchemaError, match=r"points\[0\]\.batch_size: expected integer"):
        schema.validate_report(broken)
    broken = copy.deepcopy(report)
    broken["points"][0]["images_per_sec"] = float("nan")
    with pytest.raises(schema.ReportSchemaError, match="images_per_sec"):
        schema.validate_report(broken)
    broken = copy.deepcopy(report)
    broken["points"][0]["pipeline"] = "theirs"
    with pytest.raises(schema.ReportSchemaError, match="pipeline"):
        schema.validate_report(broken)
    broken = copy.deepcopy(report)
    del broken["environment"]["paddle_version"]
    with pytest.raises(schema.ReportSchemaError, match="paddle_version"):
        schema.validate_report(broken)
    with pytest.raises(schema.ReportSchemaError):
        perf_outputs.write_outputs(broken, out / "never")
    assert not (out / "never").exists()


def test_baseline_and_ours_agree_on_flowers12_images(tiny_export, flowers12_root):
    from harness.predictor import Predictor, PredictorOptions

    jpegs = [data for _, data in inputs.load_jpeg_bytes(flowers12_root / "test", 24)]
    predictor = Predictor(tiny_export, PredictorOptions(threads=1, batch_size=8))
    agreement = baseline.prediction_agreement(predictor, jpegs)
    assert agreement["images"] == 24
    assert agreement["disagree_beyond_ties"] == 0
    assert agreement["top1_agree"] + agreement["near_ties"] >= 24


def test_trt_on_a_cpu_build_fails_with_one_line_and_exit_2(tiny_export, jpeg_dir, capsys):
    paddle = pytest.importorskip("paddle")
    if paddle.device.is_compiled_with_cuda():
        pytest.skip("this Paddle has CUDA; the CPU-build error path does not apply")
    from bench.cli import main

    capsys.readouterr()
    status = main(["throughput", "--model", str(tiny_export), "--images", str(jpeg_dir), "--backend", "trt",
                   "--duration", "0.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "TensorRT" in err[0]


def test_bad_flags_exit_2(tiny_export, jpeg_dir, capsys):
    from bench.cli import main

    with pytest.raises(SystemExit) as info:
        main(["throughput", "--model", str(tiny_export), "--batch-sizes", "1,x"])
    assert info.value.code == 2
    assert main(["throughput", "--model", str(tiny_export), "--images", str(jpeg_dir), "--repetitions", "0"]) == 2
    assert "--repetitions" in capsys.readouterr().err


def test_quick_measurement_gives_the_journal_latency_keys(tiny_export):
    result = quick.quick_measurement(tiny_export, batch_size=2, duration_s=0.1, warmup_s=0.0, threads=1)
    assert set(result) == {"latency_p50_ms", "latency_p99_ms", "img_per_s", "latency_batch"}
    assert 0 < result["latency_p50_ms"] <= result["latency_p99_ms"] and result["img_per_s"] > 0
    assert result["latency_batch"] == 2
    with pytest.raises(ConfigError):
        quick.quick_measurement(tiny_export, batch_size=0)


def test_quick_measurement_reuses_a_given_predictor(tiny_export, monkeypatch):
    from harness.predictor import Predictor, PredictorOptions

    predictor = Predictor(tiny_export, PredictorOptions(batch_size=4, threads=1))

    def no_new_predictor(*args, **kwargs):
        raise AssertionError("quick_measurement built a predictor of its own")

    monkeypatch.setattr(Predictor, "__init__", no_new_predictor)
    result = quick.quick_measurement(predictor, batch_size=2, duration_s=0.1, warmup_s=0.0)
    assert result["latency_batch"] == 2 and result["img_per_s"] > 0


def test_client_pool_reuses_its_threads_across_measurements():
    import threading

    seen: list[set[int]] = [set(), set()]

    def client(i):
        def call():
            seen[i].add(threading.get_ident())
            return 0.0, 0.0, 0.0, 0.0
        return call

    clients = [client(0), client(1)]
    with perf_clients.ClientPool(2) as pool:
        pool.warm_up(clients, 1, 0.0)
        first = pool.run(clients, 1, requests=3)
        pool.run(clients, 1, duration_s=0.02)
        with pytest.raises(ConfigError):
            pool.run(clients[:1], 1, requests=1)
    assert first.requests == 6
    assert len(seen[0]) == 1 and len(seen[1]) == 1 and seen[0] != seen[1]


def test_agreement_check_notices_a_wrong_baseline_channel_order(tiny_export, jpeg_dir, monkeypatch):
    from harness.predictor import Predictor, PredictorOptions

    jpegs = [data for _, data in inputs.load_jpeg_bytes(jpeg_dir, 8)]
    predictor = Predictor(tiny_export, PredictorOptions(threads=1, batch_size=8))
    good = baseline.prediction_agreement(predictor, jpegs)
    original = baseline.baseline_decode
    monkeypatch.setattr(baseline, "baseline_decode", lambda data: np.ascontiguousarray(original(data)[:, :, ::-1]))
    bgr = baseline.prediction_agreement(predictor, jpegs)
    assert good["max_abs_input_diff"] < 0.05
    assert bgr["max_abs_input_diff"] > 0.5 and bgr["max_abs_logit_diff"] > good["max_abs_logit_diff"]


def test_make_predictors_gives_each_client_its_own_predictor_with_the_same_outputs(tiny_export):
    from harness.predictor import PredictorOptions

    predictors = tp.make_predictors(tiny_export, PredictorOptions(threads=1, batch_size=2), 3)
    assert len({id(p) for p in predictors}) == 3
    batch = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    outputs = [p.predict(batch) for p in predictors]
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])
