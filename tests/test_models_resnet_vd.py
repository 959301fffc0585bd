"""ResNet_vd against facts of PaddleClas's legendary ResNet_vd (names, shapes, counts)."""

from __future__ import annotations

import re

import numpy as np
import paddle
import pytest

from common.errors import ModelError
from harness.models import create_model, list_models
from harness.models.resnet_vd import build_resnet_vd, is_paddleclas_v20_state_dict, map_paddleclas_v20_names

# Published facts. Tensor counts of the official legendary .pdparams (PaddleClas schema);
# parameter totals including BatchNorm running statistics as published for the ported
# PaddleClas weights (KerasHub resnet_vd presets: 11,722,824 / 21,838,408 / 25,629,512;
# PaddleClas model zoo: ResNet101_vd 44.67 M).
TENSOR_COUNTS = {18: 117, 34: 197, 50: 277, 101: 532}
PARAM_TOTALS = {18: 11_722_824, 34: 21_838_408, 50: 25_629_512}
# Global indices of the first block of each stage: the blocks that carry `short`.
SHORT_BLOCKS = {18: {0, 2, 4, 6}, 34: {0, 3, 7, 13}, 50: {0, 3, 7, 13}, 101: {0, 3, 7, 30}}


@pytest.fixture(scope="module")
def models() -> dict[int, paddle.nn.Layer]:
    return {depth: build_resnet_vd(depth) for depth in (18, 34, 50, 101)}


def _shapes(model: paddle.nn.Layer) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_tensor_count_matches_paddleclas(models, depth):
    assert len(models[depth].state_dict()) == TENSOR_COUNTS[depth]


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_parameter_total_matches_published(models, depth):
    total = sum(int(np.prod(v.shape)) for v in models[depth].state_dict().values())
    # Exact: one wrong block changes the total by thousands of parameters.
    assert total == PARAM_TOTALS[depth]


def test_resnet101_parameter_total_rounds_to_published(models):
    total = sum(int(np.prod(v.shape)) for v in models[101].state_dict().values())
    assert round(total / 1e6, 2) == 44.67


@pytest.mark.parametrize(("depth", "millions"), [(152, 60.36), (200, 74.93)])
def test_deep_models_parameter_totals_round_to_published(depth, millions):
    # PaddleClas model zoo: ResNet152_vd 60.36 M, ResNet200_vd 74.93 M parameters.
    model = build_resnet_vd(depth)
    total = sum(int(np.prod(v.shape)) for v in model.state_dict().values())
    assert round(total / 1e6, 2) == millions
    assert {int(k.split(".")[1]) for k in model.state_dict() if ".short." in k} == {
        0,
        3,
        3 + model.stage_depths[1],
        3 + model.stage_depths[1] + model.stage_depths[2],
    }


def test_resnet50_trainable_parameters_exclude_running_statistics(models):
    model = models[50]
    trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    running = sum(int(np.prod(v.shape)) for k, v in model.state_dict().items() if k.endswith(("_mean", "_variance")))
    assert trainable + running == PARAM_TOTALS[50]
    assert 25.5e6 < trainable < 25.6e6


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_key_schema(models, depth):
    keys = list(models[depth].state_dict())
    conv_bn = r"(conv\.weight|bn\.(weight|bias|_mean|_variance))"
    pattern = re.compile(rf"^(stem\.[012]\.{conv_bn}|blocks\.\d+\.(conv[012]|short)\.{conv_bn}|fc\.(weight|bias))$")
    assert [k for k in keys if not pattern.match(k)] == []
    short_blocks = {int(k.split(".")[1]) for k in keys if ".short." in k}
    assert short_blocks == SHORT_BLOCKS[depth]
    conv2 = any(".conv2." in k for k in keys)
    assert conv2 == (depth >= 50)  # only bottleneck blocks have a third convolution


def test_resnet50_shapes(models):
    shapes = _shapes(models[50])
    assert shapes["stem.0.conv.weight"] == [32, 3, 3, 3]
    assert shapes["stem.1.conv.weight"] == [32, 32, 3, 3]
    assert shapes["stem.2.conv.weight"] == [64, 32, 3, 3]
    assert shapes["stem.2.bn._variance"] == [64]
    assert shapes["blocks.0.conv0.conv.weight"] == [64, 64, 1, 1]
    assert shapes["blocks.0.conv2.conv.weight"] == [256, 64, 1, 1]
    assert shapes["blocks.0.short.conv.weight"] == [256, 64, 1, 1]
    assert shapes["blocks.3.conv1.conv.weight"] == [128, 128, 3, 3]
    assert shapes["blocks.3.short.conv.weight"] == [512, 256, 1, 1]
    assert shapes["blocks.13.short.conv.weight"] == [2048, 1024, 1, 1]
    assert shapes["blocks.15.conv2.bn._mean"] == [2048]
    assert shapes["fc.weight"] == [2048, 1000]  # paddle Linear layout: [in, out]
    assert shapes["fc.bias"] == [1000]


def test_resnet18_shapes(models):
    shapes = _shapes(models[18])
    assert shapes["blocks.0.short.conv.weight"] == [64, 64, 1, 1]
    assert shapes["blocks.2.conv0.conv.weight"] == [128, 64, 3, 3]
    assert shapes["blocks.2.short.conv.weight"] == [128, 64, 1, 1]
    assert shapes["blocks.7.conv1.conv.weight"] == [512, 512, 3, 3]
    assert shapes["fc.weight"] == [512, 1000]


def test_strides_and_vd_shortcuts(models):
    """Bottleneck: stride on the 3x3 conv; shortcut = avg pool then stride-1 1x1 conv."""
    model = models[50]
    assert list(model.stem[0].conv._stride) == [2, 2]
    assert list(model.stem[1].conv._stride) == [1, 1]
    first = model.blocks[0]
    assert first.short.pool is None and list(first.short.conv._stride) == [1, 1]
    for index in (3, 7, 13):
        block = model.blocks[index]
        assert list(block.conv0.conv._stride) == [1, 1]
        assert list(block.conv1.conv._stride) == [2, 2]
        assert block.short.pool is not None and list(block.short.conv._stride) == [1, 1]
    basic = models[18].blocks[2]
    assert list(basic.conv0.conv._stride) == [2, 2] and list(basic.conv1.conv._stride) == [1, 1]


def test_vd_shortcut_pool_averages_present_pixels_on_odd_maps():
    """On a 5x5 map the last 2x2 window only covers real pixels (PaddleClas ceil/SAME/exclusive)."""
    model = build_resnet_vd(18)
    pool = model.blocks[2].short.pool
    x = np.arange(25, dtype="float32").reshape(1, 1, 5, 5)
    out = pool(paddle.to_tensor(x)).numpy()[0, 0]
    expected = np.array(
        [[x[0, 0, r : r + 2, c : c + 2].mean() for c in range(0, 5, 2)] for r in range(0, 5, 2)], dtype="float32"
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_forward_output_shapes():
    paddle.seed(0)
    x = paddle.randn([2, 3, 32, 32])
    for name, classes in (("ResNet18_vd", 10), ("ResNet50_vd", 5), ("ResNet_tiny", 3)):
        model = create_model(name, classes)
        model.eval()
        out = model(x)
        assert list(out.shape) == [2, classes]
        assert np.isfinite(out.numpy()).all()


def test_tiny_model_uses_same_scheme_and_is_small():
    model = create_model("ResNet_tiny", 10)
    keys = list(model.state_dict())
    assert {int(k.split(".")[1]) for k in keys if ".short." in k} == {0, 1, 2, 3}
    assert list(model.state_dict()["fc.weight"].shape) == [64, 10]
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) < 200_000
    assert model.pretrained_cfg.input_size == 32


def test_registry_lists_family_and_rejects_unknown():
    names = list_models()
    for depth in (18, 34, 50, 101, 152, 200):
        assert f"ResNet{depth}_vd" in names
    with pytest.raises(ModelError, match="ResNet999_vd"):
        create_model("ResNet999_vd", 10)
    with pytest.raises(ModelError, match="num_classes"):
        create_model("ResNet_tiny", 0)


# ------------------------------------------------------------------------------------
# PaddleClas 2.0 names. The helpers below write 2.0 names from the PaddleClas 2.0 rules
# (sublayers conv1_1.. / bb_<stage>_<i> / out; parameters res<stage+2><letter>_branch..)
# independently of the mapping under test.
# ------------------------------------------------------------------------------------

_BRANCH_V20 = {"conv0": "2a", "conv1": "2b", "conv2": "2c", "short": "1"}
_PARAM_V20 = {
    "conv.weight": "weights",
    "bn.weight": "scale",
    "bn.bias": "offset",
    "bn._mean": "mean",
    "bn._variance": "variance",
}
_SUB_V20 = {"conv": "_conv", "bn": "_batch_norm"}


def _stage_index(block: int, depths: tuple[int, ...]) -> tuple[int, int]:
    for stage, depth in enumerate(depths):
        if block < depth:
            return stage, block
        block -= depth
    raise AssertionError("block index out of range")


def _to_v20_structured(key: str, depths: tuple[int, ...]) -> str:
    parts = key.split(".")
    if parts[0] == "stem":
        return f"conv1_{int(parts[1]) + 1}.{_SUB_V20[parts[2]]}.{'.'.join(parts[3:])}"
    if parts[0] == "fc":
        return f"out.{parts[1]}"
    stage, i = _stage_index(int(parts[1]), depths)
    return f"bb_{stage}_{i}.{parts[2]}.{_SUB_V20[parts[3]]}.{'.'.join(parts[4:])}"


def _to_v20_param(key: str, depths: tuple[int, ...], layers: int) -> str:
    parts = key.split(".")
    if parts[0] == "fc":
        return {"weight": "fc_0.w_0", "bias": "fc_0.b_0"}[parts[1]]
    if parts[0] == "stem":
        suffix = _PARAM_V20[".".join(parts[2:])]
        return f"conv1_{int(parts[1]) + 1}_weights" if suffix == "weights" else f"bn1_{int(parts[1]) + 1}_{suffix}"
    stage, i = _stage_index(int(parts[1]), depths)
    if layers in (101, 152, 200) and stage == 2:
        block_name = f"res{stage + 2}a" if i == 0 else f"res{stage + 2}b{i}"
    else:
        block_name = f"res{stage + 2}{chr(97 + i)}"
    name = f"{block_name}_branch{_BRANCH_V20[parts[2]]}"
    suffix = _PARAM_V20[".".join(parts[3:])]
    return f"{name}_weights" if suffix == "weights" else f"bn{name[3:]}_{suffix}"


def test_v20_structured_names_map_for_resnet50(models):
    model = models[50]
    keys = list(model.state_dict())
    old = [_to_v20_structured(k, model.stage_depths) for k in keys]
    assert "conv1_1._conv.weight" in old and "bb_3_2.conv2._batch_norm._variance" in old and "out.weight" in old
    assert is_paddleclas_v20_state_dict(old) and not is_paddleclas_v20_state_dict(keys)
    mapping = map_paddleclas_v20_names(old)
    assert [mapping[o] for o in old] == keys


def test_v20_parameter_names_map_for_resnet101(models):
    model = models[101]
    keys = list(model.state_dict())
    old = [_to_v20_param(k, model.stage_depths, 101) for k in keys]
    assert "res4b22_branch2c_weights" in old and "bn5a_branch1_mean" in old and "bn1_1_scale" in old
    mapping = map_paddleclas_v20_names(old)
    assert [mapping[o] for o in old] == keys
    assert mapping["res4b22_branch2c_weights"] == "blocks.29.conv2.conv.weight"
    assert mapping["bn5a_branch1_mean"] == "blocks.30.short.bn._mean"


def test_v20_mapping_leaves_foreign_keys_alone():
    mapping = map_paddleclas_v20_names(["conv1_1._conv.weight", "something.else"])
    assert mapping == {"conv1_1._conv.weight": "stem.0.conv.weight", "something.else": "something.else"}


def _randomise(model: paddle.nn.Layer, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for key, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if key.endswith("_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(("bn.weight",)):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        tensor.set_value(value.astype("float32"))


@pytest.mark.parametrize(("name", "size"), [("ResNet_tiny", 36), ("ResNet18_vd", 32)])
def test_v20_checkpoint_gives_identical_outputs(tmp_path, name, size):
    source = create_model(name, 6)
    _randomise(source, seed=1)
    source.eval()
    state = {_to_v20_structured(k, source.stage_depths): v.numpy() for k, v in source.state_dict().items()}
    path = tmp_path / "v20.pdparams"
    # Paddle 2.0 checkpoints carry a name table next to the tensors; it is metadata, not a weight.
    paddle.save({**state, "StructuredToParameterName@@": {k: f"p_{i}" for i, k in enumerate(state)}}, str(path))

    loaded = create_model(name, 6, pretrained=str(path), strict_pretrained=True)
    loaded.eval()
    assert loaded.load_report.missing == () and loaded.load_report.unexpected == ()
    assert len(loaded.load_report.loaded) == len(state)
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=(2, 3, size, size)).astype("float32"))
    np.testing.assert_array_equal(loaded(x).numpy(), source(x).numpy())


# ------------------------------------------------------------------------------------
# Functional reference: the PaddleClas ResNet_vd forward written out op by op from the
# state dict (2.0-style shortcut pool: padding 0 + ceil_mode), independent of the Layers.
# ------------------------------------------------------------------------------------


def _reference_forward(state: dict[str, np.ndarray], x: paddle.Tensor, block: str, depths) -> np.ndarray:
    import paddle.nn.functional as F

    t = {k: paddle.to_tensor(v) for k, v in state.items()}

    def conv_bn(x, prefix, stride, relu, pool=False):
        if pool:
            x = F.avg_pool2d(x, kernel_size=2, stride=stride, padding=0, ceil_mode=True, exclusive=True)
            stride = 1
        weight = t[f"{prefix}.conv.weight"]
        x = F.conv2d(x, weight, stride=stride, padding=(weight.shape[-1] - 1) // 2)
        x = F.batch_norm(
            x, t[f"{prefix}.bn._mean"], t[f"{prefix}.bn._variance"], t[f"{prefix}.bn.weight"], t[f"{prefix}.bn.bias"],
            training=False, epsilon=1e-5,
        )
        return F.relu(x) if relu else x

    for i, stride in enumerate((2, 1, 1)):
        x = conv_bn(x, f"stem.{i}", stride, True)
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    index = 0
    for stage, depth in enumerate(depths):
        for i in range(depth):
            p = f"blocks.{index}"
            stride = 2 if i == 0 and stage > 0 else 1
            if block == "basic":
                y = conv_bn(conv_bn(x, f"{p}.conv0", stride, True), f"{p}.conv1", 1, False)
            else:
                y = conv_bn(x, f"{p}.conv0", 1, True)
                y = conv_bn(y, f"{p}.conv1", stride, True)
                y = conv_bn(y, f"{p}.conv2", 1, False)
            short = conv_bn(x, f"{p}.short", stride, False, pool=stage > 0) if i == 0 else x
            x = F.relu(y + short)
            index += 1
    features = x.mean(axis=[2, 3])
    return (features @ t["fc.weight"] + t["fc.bias"]).numpy()


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_matches_functional_reference_on_odd_sizes(block):
    from harness.models.resnet_vd import ResNetVd

    model = ResNetVd(block, (2, 1, 2, 1), 5, stage_widths=(4, 8, 8, 16), stem_widths=(4, 4, 8))
    _randomise(model, seed=3)
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(4).normal(size=(2, 3, 44, 44)).astype("float32"))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    expected = _reference_forward(state, x, block, model.stage_depths)
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-5)
