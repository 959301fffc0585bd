"""TensorRT without a GPU: a stand-in ``paddle.tensorrt`` checks what tlbench hands the converter,
the conversion cache, and every way a trt predictor refuses to start.

The real conversion and engines need a GPU build of Paddle with TensorRT (tests/gpu/). Here
``enable_use_gpu`` is a no-op (CPU build), so a predictor on a converted program runs on the CPU.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from common.errors import BackendUnavailableError, ConfigError  # noqa: E402
from harness import predictor as predictor_mod  # noqa: E402
from harness import trt  # noqa: E402
from harness.artifact import ExportedModel  # noqa: E402
from harness.export import export  # noqa: E402
from harness.predictor import Predictor, PredictorOptions, check_backend  # noqa: E402
from test_export import IMAGE_SIZE, make_run_dir  # noqa: E402

TRT_VERSION = "10.5.0"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> ExportedModel:
    return export(make_run_dir(tmp_path_factory.mktemp("run"), seed=3), tmp_path_factory.mktemp("exp") / "tiny")


def engine_program(ops: int) -> dict:
    """A PIR-program-shaped JSON holding ``ops`` tensorrt_engine ops between feed and fetch."""
    names = ["1.data"] + ["1.tensorrt_engine"] * ops + ["1.fetch"]
    return {"base_code": {"version": 1}, "program": {"regions": [{"blocks": [{"ops": [{"#": n} for n in names]}]}]}}


class StandInTensorRT:
    """``paddle.tensorrt`` and ``paddle.tensorrt.export`` with the calls tlbench makes, recording them.

    ``convert`` writes ``<save_model_dir>.json`` + ``.pdiparams``: a copy of the source program with
    ``engines`` tensorrt_engine markers (loadable by Paddle), or ``synthetic`` JSON, or raises ``fail``.
    """

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.engines = 2
        self.fail: Exception | None = None
        module = types.ModuleType("paddle.tensorrt.export")
        stand_in = self

        class PrecisionMode(enum.Enum):
            FP32 = "FP32"
            FP16 = "FP16"
            BF16 = "BF16"
            INT8 = "INT8"

        class Input:
            def __init__(self, warmup_data=None, min_input_shape=None, max_input_shape=None, optim_input_shape=None,
                         input_data_type="float32", input_range=None, name=None):
                if warmup_data is None and None in (min_input_shape, max_input_shape, optim_input_shape):
                    raise ValueError("min/max/optim shapes must be specified")
                self.min_input_shape, self.optim_input_shape = min_input_shape, optim_input_shape
                self.max_input_shape, self.input_data_type, self.name = max_input_shape, input_data_type, name

        class TensorRTConfig:
            def __init__(self, inputs, min_subgraph_size=3, save_model_dir=None, disable_ops=None,
                         precision_mode=PrecisionMode.FP32, ops_run_float=None, optimization_level=3,
                         disable_passes=(), workspace_size=1 << 30, refit_params_path=None):
                self.inputs, self.min_subgraph_size, self.save_model_dir = inputs, min_subgraph_size, save_model_dir
                self.precision_mode, self.workspace_size = precision_mode, workspace_size

        def convert(model_path, config):
            inp = config.inputs[0]
            stand_in.calls.append({
                "model_path": model_path, "save_model_dir": config.save_model_dir,
                "precision_mode": config.precision_mode, "workspace_size": config.workspace_size,
                "min_subgraph_size": config.min_subgraph_size, "name": inp.name, "dtype": inp.input_data_type,
                "shapes": (tuple(inp.min_input_shape), tuple(inp.optim_input_shape), tuple(inp.max_input_shape)),
            })
            if stand_in.fail is not None:
                raise stand_in.fail
            program = json.loads(Path(model_path + ".json").read_text())
            # Outside the op list, so Paddle still loads the program; the engine counter reads the text.
            program["stand_in_engines"] = [{"#": "1.tensorrt_engine"}] * stand_in.engines
            Path(config.save_model_dir + ".json").write_text(json.dumps(program))
            shutil.copy(model_path + ".pdiparams", config.save_model_dir + ".pdiparams")

        module.Input, module.TensorRTConfig, module.PrecisionMode, module.convert = (
            Input, TensorRTConfig, PrecisionMode, convert)
        self.export = module
        self.PrecisionMode = PrecisionMode
        self.package = types.ModuleType("paddle.tensorrt")
        self.package.export = module
        self.package.convert = convert


@pytest.fixture
def stand_in(monkeypatch) -> StandInTensorRT:
    """A CUDA build with one GPU, TensorRT 10.5 everywhere, and the stand-in paddle.tensorrt."""
    fake = StandInTensorRT()
    monkeypatch.setitem(sys.modules, "paddle.tensorrt", fake.package)
    monkeypatch.setitem(sys.modules, "paddle.tensorrt.export", fake.export)
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(predictor_mod, "_cuda_devices", lambda: 1)
    monkeypatch.setattr(trt, "compile_version", lambda: TRT_VERSION)
    monkeypatch.setattr(trt, "runtime_version", lambda: TRT_VERSION)
    monkeypatch.setattr(trt, "python_package_version", lambda: TRT_VERSION)
    monkeypatch.setattr(trt, "package_installed", lambda name: True)
    monkeypatch.setattr(trt, "gpu_name", lambda device=0: "Stand-in GPU")
    return fake


def random_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


# -- conversion ------------------------------------------------------------------------------------


def test_predictor_converts_with_the_right_arguments_and_records_the_engines(stand_in, exported, tmp_path):
    options = PredictorOptions(backend="trt", precision="fp16", batch_size=4, trt_min_batch=2, trt_max_batch=8,
                               trt_workspace_mb=256, trt_min_subgraph_size=5, trt_cache_dir=str(tmp_path / "cache"))
    p = Predictor(exported, options)
    (call,) = stand_in.calls
    assert call["model_path"] == str(exported.model_file.with_suffix(""))
    assert call["precision_mode"] is stand_in.PrecisionMode.FP16
    assert call["workspace_size"] == 256 << 20 and call["min_subgraph_size"] == 5
    assert call["name"] == "x" and call["dtype"] == "float32"
    size = IMAGE_SIZE
    assert call["shapes"] == ((2, 3, size, size), (4, 3, size, size), (8, 3, size, size))
    # Saved inside the cache, never beside (or over) the source model.
    assert Path(call["save_model_dir"]).parent.parent == tmp_path / "cache"
    facts = p.describe()
    assert facts["trt_mode"] == "pir-trt" and facts["trt_engines"] == 2
    assert facts["trt_batches"] == [2, 4, 8] and facts["trt_cache_reused"] is False
    assert facts["tensorrt_runtime_version"] == TRT_VERSION and facts["paddle_version"] == paddle.__version__
    assert p.engine_facts() == {k: facts[k] for k in p.engine_facts()}
    # The predictor runs the converted program (here on the CPU): same logits as the source.
    reference = Predictor(exported, PredictorOptions(backend="cpu-plain", batch_size=4, threads=1))
    x = random_batch(3)
    np.testing.assert_allclose(p.predict(x), reference.predict(x), rtol=1e-4, atol=1e-4)
    assert p.clone().engine_facts() == p.engine_facts()


def test_precision_maps_to_the_converter_precision_mode(stand_in, exported, tmp_path):
    Predictor(exported, PredictorOptions(backend="trt", precision="fp32", trt_cache_dir=str(tmp_path)))
    assert stand_in.calls[-1]["precision_mode"] is stand_in.PrecisionMode.FP32


def test_second_predictor_reuses_the_conversion_and_a_changed_setting_converts_again(stand_in, exported, tmp_path):
    options = PredictorOptions(backend="trt", precision="fp32", batch_size=4, trt_cache_dir=str(tmp_path))
    Predictor(exported, options)
    again = Predictor(exported, options)
    assert len(stand_in.calls) == 1
    assert again.describe()["trt_cache_reused"] is True and again.describe()["trt_engines"] == 2
    Predictor(exported, dataclasses.replace(options, trt_max_batch=8))
    Predictor(exported, dataclasses.replace(options, precision="fp16"))
    assert len(stand_in.calls) == 3
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3


def test_a_corrupted_cache_entry_is_converted_again(stand_in, exported, tmp_path):
    options = PredictorOptions(backend="trt", precision="fp32", trt_cache_dir=str(tmp_path))
    first = Predictor(exported, options)
    program = Path(first.describe()["trt_cache"]) / "inference.json"
    program.write_text(program.read_text() + " ")
    Predictor(exported, options)
    assert len(stand_in.calls) == 2


def test_cache_key_changes_with_every_field_it_holds(exported):
    base = trt.ConversionKey(model_sha256="a" * 64, route="pir-trt", precision="fp16", min_batch=1, opt_batch=4,
                             max_batch=8, image_size=224, workspace_mb=1024, min_subgraph_size=3,
                             paddle_version="3.3.1", tensorrt_version="10.5.0", gpu_name="NVIDIA H200")
    changes = {"model_sha256": "b" * 64, "precision": "fp32", "min_batch": 2, "opt_batch": 8, "max_batch": 16,
               "image_size": 256, "workspace_mb": 512, "min_subgraph_size": 4, "paddle_version": "3.2.0",
               "tensorrt_version": "10.6.0", "gpu_name": "NVIDIA A100", "route": "legacy-trt"}
    digests = {base.digest()}
    for name, value in changes.items():
        digests.add(dataclasses.replace(base, **{name: value}).digest())
    assert len(digests) == len(changes) + 1
    assert dataclasses.replace(base).digest() == base.digest()
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        dataclasses.replace(base, opt_batch=16)


def test_model_sha256_covers_program_and_weights(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported.model_dir, copy)
    program, params = copy / exported.model_file.name, copy / exported.params_file.name
    original = trt.model_sha256(program, params)
    assert original == trt.model_sha256(exported.model_file, exported.params_file)
    data = bytearray(params.read_bytes())
    data[-1] ^= 1
    params.write_bytes(bytes(data))
    assert trt.model_sha256(program, params) != original


def test_engine_ops_are_counted_from_the_program(tmp_path):
    for ops in (0, 3):
        path = tmp_path / f"p{ops}.json"
        path.write_text(json.dumps(engine_program(ops)))
        assert trt.count_engine_ops(path) == ops
    (tmp_path / "_opt_cache").mkdir()
    assert trt.count_engine_files(tmp_path) == 0
    (tmp_path / "_opt_cache" / "trt_serialized_123").write_bytes(b"plan")
    assert trt.count_engine_files(tmp_path) == 1


# -- refusals --------------------------------------------------------------------------------------


def test_a_conversion_without_engines_is_refused(stand_in, exported, tmp_path):
    stand_in.engines = 0
    with pytest.raises(BackendUnavailableError, match="built no TensorRT engine.*plain CUDA") as err:
        Predictor(exported, PredictorOptions(backend="trt", precision="fp16", trt_cache_dir=str(tmp_path)))
    assert "\n" not in str(err.value)


def test_a_failing_conversion_is_one_line_and_leaves_no_entry(stand_in, exported, tmp_path):
    stand_in.fail = RuntimeError("(Unimplemented) no converter for pd_op.weird\n  [at converter.py:123]")
    with pytest.raises(BackendUnavailableError, match="conversion of .* failed: .*Unimplemented") as err:
        Predictor(exported, PredictorOptions(backend="trt", precision="fp32", trt_cache_dir=str(tmp_path)))
    assert "\n" not in str(err.value)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_int8_on_a_float_json_export_names_the_int8_export(exported, tmp_path):
    # Refused before anything about the machine is checked: it is the model that is wrong.
    with pytest.raises(BackendUnavailableError, match=r"PIR-TensorRT has no int8 calibrator.*bench export .*--precision int8") as err:
        Predictor(exported, PredictorOptions(backend="trt", precision="int8", trt_cache_dir=str(tmp_path)))
    assert "\n" not in str(err.value)


def _legacy_program(path: Path, ops: tuple[str, ...]) -> Path:
    from paddle.base.proto import framework_pb2

    desc = framework_pb2.ProgramDesc()
    block = desc.blocks.add()
    block.idx, block.parent_idx = 0, -1
    for op_type in ops:
        block.ops.add().type = op_type
    path.write_bytes(desc.SerializeToString())
    return path


def test_int8_on_a_legacy_program_needs_its_scales(exported, tmp_path):
    float_legacy = dataclasses.replace(exported, model_file=_legacy_program(tmp_path / "f.pdmodel", ("conv2d", "relu")))
    with pytest.raises(BackendUnavailableError, match="without quantization scales.*--precision int8"):
        predictor_mod._refuse_trt_int8(float_legacy, trt.LEGACY_ROUTE, "int8")
    int8_legacy = dataclasses.replace(exported, model_file=_legacy_program(
        tmp_path / "q.pdmodel", ("quantize_linear", "conv2d", "dequantize_linear")))
    predictor_mod._refuse_trt_int8(int8_legacy, trt.LEGACY_ROUTE, "int8")  # the int8 export is accepted
    predictor_mod._refuse_trt_int8(float_legacy, trt.LEGACY_ROUTE, "fp16")  # fp16 on a float program is fine


def test_pir_conversion_on_another_gpu_id_points_to_cuda_visible_devices(stand_in, exported, tmp_path):
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES=1"):
        Predictor(exported, PredictorOptions(backend="trt", gpu_id=1, trt_cache_dir=str(tmp_path)))
    assert stand_in.calls == []


def test_missing_tensorrt_package_names_the_pinned_version(stand_in, monkeypatch):
    monkeypatch.setattr(trt, "package_installed", lambda name: name != "tensorrt")
    with pytest.raises(BackendUnavailableError, match=r"pip install tensorrt==10\.5\.0") as err:
        check_backend("trt", "fp32")
    assert "\n" not in str(err.value)
    # The legacy route (the int8 export) builds engines inside Paddle and needs no Python package.
    check_backend("trt", "int8")
    check_backend("trt", "fp16", trt_route="legacy-trt")


def test_tensorrt_package_of_another_version_is_refused(stand_in, monkeypatch):
    monkeypatch.setattr(trt, "python_package_version", lambda: "8.6.1")
    with pytest.raises(BackendUnavailableError, match=r"package is 8\.6\.1 but Paddle loads TensorRT 10\.5\.0.*tensorrt==10\.5\.0"):
        check_backend("trt", "fp16")


@pytest.mark.parametrize("failure", ["raises", "zero"])
def test_missing_libnvinfer_names_it_whether_the_version_call_raises_or_says_0(stand_in, monkeypatch, failure):
    import paddle.inference as pi

    monkeypatch.undo()  # the real runtime_version, over a fake paddle.inference call
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(predictor_mod, "_cuda_devices", lambda: 1)
    monkeypatch.setattr(trt, "compile_version", lambda: TRT_VERSION)

    def version():
        if failure == "raises":
            raise RuntimeError("libnvinfer.so.10: cannot open shared object file")
        return (0, 0, 0)

    monkeypatch.setattr(pi, "get_trt_runtime_version", version)
    assert trt.runtime_version() is None
    for precision in ("fp32", "int8"):
        with pytest.raises(BackendUnavailableError, match=r"libnvinfer.*LD_LIBRARY_PATH") as err:
            check_backend("trt", precision)
        assert "\n" not in str(err.value)


def test_missing_paddle_tensorrt_is_named(stand_in, monkeypatch):
    monkeypatch.delitem(sys.modules, "paddle.tensorrt.export")
    monkeypatch.setitem(sys.modules, "paddle.tensorrt", None)  # import paddle.tensorrt now fails
    with pytest.raises(BackendUnavailableError, match=r"needs paddle\.tensorrt.*paddlepaddle-gpu >= 3\.0") as err:
        check_backend("trt", "fp16")
    assert "\n" not in str(err.value)


def test_versions_never_raise_and_say_none_on_this_build():
    facts = trt.versions()
    assert facts["paddle_version"] == paddle.__version__
    if not paddle.device.is_compiled_with_cuda():
        assert facts["tensorrt_compile_version"] is None and facts["tensorrt_runtime_version"] is None


def test_route_follows_the_program_file(tmp_path):
    assert trt.route_for(tmp_path / "inference.json") == "pir-trt"
    assert trt.route_for(tmp_path / "inference.pdmodel") == "legacy-trt"
    with pytest.raises(ConfigError, match="inference.json or inference.pdmodel"):
        trt.route_for(tmp_path / "model.onnx")


# -- the legacy route (the int8 export) ------------------------------------------------------------


class RecordingConfig:
    """``paddle.inference.Config`` that records every call made on it."""

    def __init__(self, *files):
        self.files = files
        self.calls: dict[str, tuple] = {}

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls[name] = (args, kwargs)

        return record


class FakeNativePredictor:
    """Runs nothing: its output is zero logits for the 3 classes of the ``exported`` fixture."""

    def __init__(self) -> None:
        self.shape = [1, 3, IMAGE_SIZE, IMAGE_SIZE]
        predictor = self

        class Handle:
            def reshape(self, shape):
                predictor.shape = list(shape)

            def copy_from_cpu(self, array):
                pass

            def copy_to_cpu(self):
                return np.zeros((predictor.shape[0], 3), np.float32)

        self.handle = Handle()

    def get_input_names(self):
        return ["x"]

    def get_output_names(self):
        return ["logits"]

    def get_input_handle(self, name):
        return self.handle

    def get_output_handle(self, name):
        return self.handle

    def run(self):
        pass


@pytest.fixture
def legacy_int8(exported, tmp_path) -> ExportedModel:
    (tmp_path / "model").mkdir()
    program = _legacy_program(tmp_path / "model" / "inference.pdmodel", ("quantize_linear", "conv2d", "dequantize_linear"))
    shutil.copy(exported.params_file, program.parent / "inference.pdiparams")
    return dataclasses.replace(exported, model_dir=program.parent, model_file=program,
                               params_file=program.parent / "inference.pdiparams")


@pytest.mark.parametrize("engines", [1, 0])
def test_int8_export_runs_through_enable_tensorrt_engine_without_calibration(stand_in, monkeypatch, legacy_int8,
                                                                            tmp_path, engines):
    import paddle.inference as pi

    configs: list[RecordingConfig] = []

    def config(*files):
        configs.append(RecordingConfig(*files))
        return configs[-1]

    def create_predictor(cfg):
        # What Paddle-TensorRT does with use_static=True: one file per engine in the optim cache.
        cache = Path(cfg.calls["set_optim_cache_dir"][0][0]) / "_opt_cache"
        cache.mkdir(parents=True, exist_ok=True)
        for i in range(engines):
            (cache / f"trt_serialized_{i}").write_bytes(b"plan")
        return FakeNativePredictor()

    monkeypatch.setattr(pi, "Config", config)
    monkeypatch.setattr(pi, "create_predictor", create_predictor)
    monkeypatch.setattr(trt, "package_installed", lambda name: False)  # the legacy route needs no tensorrt package
    options = PredictorOptions(backend="trt", precision="int8", batch_size=4, trt_max_batch=8,
                               trt_cache_dir=str(tmp_path / "cache"))
    if not engines:
        with pytest.raises(BackendUnavailableError, match=r"built no TensorRT engine.*trt_serialized_"):
            Predictor(legacy_int8, options)
        return
    p = Predictor(legacy_int8, options)
    (cfg,) = configs
    assert cfg.files == (str(legacy_int8.model_file), str(legacy_int8.params_file))
    args, kwargs = cfg.calls["enable_tensorrt_engine"]
    assert kwargs["precision_mode"] == pi.PrecisionType.Int8
    assert kwargs["use_calib_mode"] is False and kwargs["use_static"] is True and kwargs["max_batch_size"] == 8
    # Non-engine ops stay float32; the engines carry the int8.
    assert cfg.calls["enable_use_gpu"][0][2] == pi.PrecisionType.Float32
    size = IMAGE_SIZE
    assert cfg.calls["set_trt_dynamic_shape_info"][0] == (
        {"x": [1, 3, size, size]}, {"x": [8, 3, size, size]}, {"x": [4, 3, size, size]})
    facts = p.describe()
    assert facts["trt_mode"] == "legacy-trt" and facts["trt_engines"] == engines and stand_in.calls == []


def test_fp16_asks_for_half_and_keeps_feed_and_fetch_in_float32(stand_in, monkeypatch, exported, tmp_path):
    import paddle.inference as pi

    configs: list[RecordingConfig] = []
    monkeypatch.setattr(pi, "Config", lambda *files: configs.append(RecordingConfig(*files)) or configs[-1])
    monkeypatch.setattr(pi, "create_predictor", lambda cfg: FakeNativePredictor())
    Predictor(exported, PredictorOptions(backend="gpu", precision="fp16"))
    Predictor(exported, PredictorOptions(backend="gpu", precision="fp32"))
    p = Predictor(exported, PredictorOptions(backend="trt", precision="fp16", trt_cache_dir=str(tmp_path)))
    gpu_half, gpu_full, trt_half = configs
    for half in (gpu_half, trt_half):
        assert half.calls["enable_use_gpu"][0][2] == pi.PrecisionType.Half
        assert half.calls["exp_disable_mixed_precision_ops"][0][0] == {"feed", "fetch"}
    assert gpu_full.calls["enable_use_gpu"][0][2] == pi.PrecisionType.Float32
    assert "exp_disable_mixed_precision_ops" not in gpu_full.calls
    # PIR-TRT loads the converted program with a plain Config: no legacy TensorRT call on it.
    assert trt_half.files[0] == str(Path(p.describe()["trt_cache"]) / "inference.json")
    assert "enable_tensorrt_engine" not in trt_half.calls


def test_result_files_carry_the_engine_facts_of_trt_only(stand_in, exported, tmp_path):
    from bench.pipeline.scoring import engine_metrics

    cpu = Predictor(exported, PredictorOptions(backend="cpu-plain", threads=1))
    assert engine_metrics(cpu) == {} and not any(k.startswith("trt_") for k in cpu.describe())
    p = Predictor(exported, PredictorOptions(backend="trt", precision="fp16", trt_cache_dir=str(tmp_path)))
    journal = engine_metrics(p)["eval_trt"]
    assert journal["trt_mode"] == "pir-trt" and journal["trt_engines"] == 2
    assert journal["tensorrt_runtime_version"] == TRT_VERSION and journal["paddle_version"] == paddle.__version__
    json.dumps(journal)  # goes into the search journal as it is
