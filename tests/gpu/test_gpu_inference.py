"""GPU and TensorRT inference on a real GPU (skipped without a CUDA build of Paddle and a GPU).

Reference: gpu/fp32 (checked against cpu-plain first). Then gpu/fp16, a negative control showing
why the legacy TensorRT call is not used on PIR programs, PIR-TRT at fp32 and fp16 (engines
present, the batch range honoured), TensorRT int8 on the legacy int8 export, timing with the
device-to-host copy inside the timed loop, and clone() on the GPU.

Run with bench/gpu_suite.sh; ``TLBENCH_GPU_OUT`` (the script sets it) receives timings.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from harness import trt  # noqa: E402
from harness.artifact import ExportedModel  # noqa: E402
from harness.export import export  # noqa: E402
from harness.predictor import Predictor, PredictorOptions, check_backend  # noqa: E402
from test_export import IMAGE_SIZE, make_run_dir  # noqa: E402

LO, OPT, HI = 1, 4, 8
INPUTS = 256
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("run"), seed=7)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> ExportedModel:
    model = export(run_dir, tmp_path_factory.mktemp("exp") / "tiny")
    assert model.model_file.suffix == ".json", "Paddle 3.x writes PIR programs; these tests are about them"
    return model


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((INPUTS, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(exported, inputs) -> np.ndarray:
    """gpu/fp32 logits, themselves checked against Paddle's native CPU kernels."""
    gpu = Predictor(exported, PredictorOptions(backend="gpu", precision="fp32", batch_size=16))
    cpu = Predictor(exported, PredictorOptions(backend="cpu-plain", batch_size=16, threads=2))
    logits, cpu_logits = gpu.predict(inputs), cpu.predict(inputs)
    scale = float(np.abs(cpu_logits).max())
    # cuDNN may use TF32: the export's GPU parity bound (5e-3 relative to the logit scale).
    assert np.abs(logits - cpu_logits).max() <= 1e-3 + 5e-3 * scale
    return logits


def top1_agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Share of inputs with the reference's top-1 class, leaving out reference near-ties (top-2 gap < 1e-3 of the scale)."""
    top2 = np.sort(reference, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3 * float(np.abs(reference).max())
    assert clear.sum() >= 0.9 * len(reference), "too many near-ties for a meaningful agreement"
    return float((logits.argmax(1) == reference.argmax(1))[clear].mean())


def trt_options(precision: str, cache: Path, **extra) -> PredictorOptions:
    return PredictorOptions(backend="trt", precision=precision, batch_size=HI, trt_min_batch=LO, trt_opt_batch=OPT,
                            trt_max_batch=HI, trt_cache_dir=str(cache), **extra)


def test_gpu_fp16_agrees_with_fp32_on_top1(exported, inputs, reference):
    half = Predictor(exported, PredictorOptions(backend="gpu", precision="fp16", batch_size=16))
    logits = half.predict(inputs)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    assert top1_agreement(logits, reference) >= 0.99


def test_negative_control_legacy_tensorrt_call_on_a_json_model_builds_no_engine(exported, tmp_path, inputs):
    """Why the trt backend converts PIR programs: enable_tensorrt_engine on inference.json leaves no engine."""
    import paddle.inference as pi

    check_backend("trt", "fp32", trt_route="legacy-trt")
    config = pi.Config(str(exported.model_file), str(exported.params_file))
    config.enable_use_gpu(256, 0)
    config.set_optim_cache_dir(str(tmp_path))
    config.enable_tensorrt_engine(workspace_size=1 << 28, max_batch_size=HI, min_subgraph_size=1,
                                  precision_mode=pi.PrecisionType.Float32, use_static=True, use_calib_mode=False)
    size = IMAGE_SIZE
    config.set_trt_dynamic_shape_info({"x": [LO, 3, size, size]}, {"x": [HI, 3, size, size]}, {"x": [OPT, 3, size, size]})
    try:
        predictor = pi.create_predictor(config)
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape([OPT, 3, size, size])
        handle.copy_from_cpu(inputs[:OPT])
        predictor.run()
    except Exception as exc:  # refusing outright also builds no engine; say which happened
        print(f"legacy TensorRT call on a PIR program raised: {str(exc).splitlines()[0]}")
    assert trt.count_engine_files(tmp_path) == 0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_pir_trt_builds_engines_and_honours_the_batch_range(exported, inputs, reference, tmp_path, precision):
    p = Predictor(exported, trt_options(precision, tmp_path))
    facts = p.describe()
    assert facts["trt_mode"] == "pir-trt" and facts["trt_engines"] >= 1
    program = Path(facts["trt_cache"]) / "inference.json"
    assert trt.count_engine_ops(program) == facts["trt_engines"]
    assert facts["tensorrt_runtime_version"] and facts["paddle_version"] == paddle.__version__
    for n in (LO, OPT, HI):
        logits = p.predict(inputs[:n])
        assert logits.shape == (n, reference.shape[1]) and np.isfinite(logits).all()
    logits = np.concatenate([p.predict(inputs[i : i + HI]) for i in range(0, len(inputs), HI)])
    if precision == "fp32":
        scale = float(np.abs(reference).max())
        assert np.abs(logits - reference).max() <= 1e-3 + 1e-2 * scale
    assert top1_agreement(logits, reference) >= 0.99
    # A second predictor takes the converted program from the cache.
    assert Predictor(exported, trt_options(precision, tmp_path)).describe()["trt_cache_reused"] is True


def test_pir_trt_refuses_a_batch_above_the_maximum(exported, tmp_path):
    """In a child process: a shape outside the engine's profile may abort rather than raise."""
    Predictor(exported, trt_options("fp32", tmp_path))  # convert once, here
    script = (
        "import sys, numpy as np\n"
        "from harness.predictor import Predictor, PredictorOptions\n"
        f"o = PredictorOptions(backend='trt', precision='fp32', batch_size={HI + 1}, trt_min_batch={LO}, "
        f"trt_opt_batch={OPT}, trt_max_batch={HI}, trt_cache_dir={str(tmp_path)!r})\n"
        f"p = Predictor({str(exported.model_dir)!r}, o)\n"
        f"p.predict(np.zeros(({HI + 1}, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), np.float32))\n"
        "print('RAN ABOVE MAX')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert "RAN ABOVE MAX" not in child.stdout and child.returncode != 0, child.stdout + child.stderr[-2000:]


def test_trt_int8_runs_the_legacy_int8_export(run_dir, exported, inputs, reference, tmp_path):
    from harness.quantize import quantize_int8

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(32)]
    int8 = quantize_int8(run_dir, tmp_path / "int8", calibration_images=images, check_images=images,
                         min_agreement=0.0, threads=2)
    assert int8.model_file.suffix == ".pdmodel" and int8.quantized
    p = Predictor(int8, trt_options("int8", tmp_path / "cache"))
    facts = p.describe()
    assert facts["trt_mode"] == "legacy-trt" and facts["trt_engines"] >= 1
    logits = np.concatenate([p.predict(inputs[i : i + HI]) for i in range(0, len(inputs), HI)])
    assert np.isfinite(logits).all()
    # int8 of a random-weight tiny model: a loose bound that still catches garbage (chance is 1/num_classes).
    assert float((logits.argmax(1) == reference.argmax(1)).mean()) >= 0.6


def test_timing_includes_the_copy_back_to_the_host(exported, inputs, tmp_path):
    """Each timed call ends with copy_to_cpu (inside Predictor.predict), which waits for the GPU."""
    timings = {}
    for name, options in (("gpu/fp32", PredictorOptions(backend="gpu", batch_size=HI)),
                          ("gpu/fp16", PredictorOptions(backend="gpu", precision="fp16", batch_size=HI)),
                          ("trt/fp32", trt_options("fp32", tmp_path)),
                          ("trt/fp16", trt_options("fp16", tmp_path))):
        p = Predictor(exported, options)
        batch = inputs[:HI]
        for _ in range(10):
            p.predict(batch)
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            out = p.predict(batch)  # _run: copy_from_cpu, run, copy_to_cpu
            times.append(time.perf_counter() - t0)
            assert out.shape[0] == HI
        timings[name] = {"batch": HI, "median_ms": 1e3 * float(np.median(times)), "p90_ms": 1e3 * float(np.percentile(times, 90)),
                         **{k: v for k, v in p.describe().items() if k.startswith(("trt_", "tensorrt_", "paddle_"))}}
        assert all(t > 0 for t in times)
    out_dir = os.environ.get("TLBENCH_GPU_OUT")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "timings.json").write_text(json.dumps({"gpu": trt.gpu_name(0), **timings}, indent=2) + "\n")
    print(json.dumps(timings, indent=2))


@pytest.mark.parametrize("backend,precision", [("gpu", "fp32"), ("trt", "fp16")])
def test_clone_on_the_gpu_gives_the_same_logits_from_two_threads(exported, inputs, tmp_path, backend, precision):
    options = trt_options(precision, tmp_path) if backend == "trt" else PredictorOptions(backend="gpu", batch_size=HI)
    p = Predictor(exported, options)
    expected = p.predict(inputs[:HI])
    clones = [p.clone() for _ in range(2)]
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def work(i: int) -> None:
        for _ in range(5):
            results[i].append(clones[i].predict(inputs[:HI]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clones[0].engine_facts() == p.engine_facts()
    for outs in results.values():
        assert len(outs) == 5
        for out in outs:
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
