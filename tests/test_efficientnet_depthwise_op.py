"""The CPU depthwise-convolution custom op against Paddle's grouped convolution."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from harness.models.efficientnet_lite import efficientnet_lite0
from harness.models import ops as paddle_ops


@pytest.fixture(scope="module")
def ops(missing_native):
    if shutil.which("c++") is None:
        missing_native("no C++ compiler to build the custom op")
    try:
        return paddle_ops.load_ops()
    except Exception as exc:  # a broken toolchain shows as a skip reason (a failure in CI), not an error
        missing_native(f"custom op did not build: {exc}")


def _run(fn, x_np, w_np, g_np):
    x = paddle.to_tensor(x_np, stop_gradient=False)
    w = paddle.to_tensor(w_np, stop_gradient=False)
    out = fn(x, w)
    (out * paddle.to_tensor(g_np)).sum().backward()
    return out.numpy(), x.grad.numpy(), w.grad.numpy()


@pytest.mark.parametrize(
    "n, c, h, w, k, s, pads",
    [
        (2, 8, 15, 17, 3, 1, None),  # odd sizes, SAME
        (2, 8, 15, 17, 5, 2, None),
        (3, 4, 16, 16, 3, 2, None),  # even size, stride 2: asymmetric (0, 1) padding
        (1, 6, 9, 7, 5, 1, None),
        (2, 3, 11, 13, 3, 2, [2, 0, 1, 3]),  # arbitrary asymmetric padding
        (1, 2, 5, 5, 5, 1, [0, 0, 0, 0]),  # kernel as large as the input
        # Outputs with at most 2 * C positions take the channels-last path.
        (2, 40, 6, 6, 3, 1, None),
        (3, 72, 7, 5, 5, 2, None),
        (2, 96, 3, 3, 5, 1, None),
        (2, 33, 12, 12, 5, 2, None),  # a channel count that fills no vector evenly
        (2, 50, 6, 7, 3, 2, [2, 0, 1, 3]),
    ],
)
def test_matches_paddle_grouped_conv(ops, n, c, h, w, k, s, pads):
    rng = np.random.default_rng(h * 100 + w * 10 + k)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    pads = pads or paddle_ops.same_paddings(h, w, k, s)
    ref_out = F.conv2d(paddle.to_tensor(x), paddle.to_tensor(wt), stride=s, padding=pads, groups=c)
    g = rng.standard_normal(ref_out.shape).astype(np.float32)
    custom = _run(lambda a, b: ops.tl_depthwise_conv2d(a, b, [s, s], pads), x, wt, g)
    stock = _run(lambda a, b: F.conv2d(a, b, stride=s, padding=pads, groups=c), x, wt, g)
    for name, got, want in zip(("out", "x grad", "weight grad"), custom, stock):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_same_paddings_follow_tensorflow():
    assert paddle_ops.same_paddings(224, 224, 3, 2) == [0, 1, 0, 1]
    assert paddle_ops.same_paddings(224, 225, 5, 2) == [1, 2, 2, 2]
    assert paddle_ops.same_paddings(7, 7, 5, 1) == [2, 2, 2, 2]


def test_falls_back_when_the_build_fails(monkeypatch, caplog):
    def broken():
        raise OSError("compiler exploded")

    monkeypatch.setattr(paddle_ops, "load_ops", broken)
    monkeypatch.setattr(paddle_ops, "_state", {"module": None, "tried": False, "error": None})
    monkeypatch.setenv(paddle_ops.OPS_ENV, "auto")
    x = paddle.to_tensor(np.ones((1, 2, 5, 5), np.float32))
    w = paddle.to_tensor(np.ones((2, 1, 3, 3), np.float32))
    with caplog.at_level(logging.WARNING):
        out = paddle_ops.depthwise_conv2d(x, w, 1, [1, 1, 1, 1])
    assert "compiler exploded" in caplog.text
    assert out.numpy()[0, 0, 2, 2] == 9.0 and out.numpy()[0, 0, 0, 0] == 4.0
    monkeypatch.setenv(paddle_ops.OPS_ENV, "1")
    with pytest.raises(RuntimeError, match="compiler exploded"):
        paddle_ops.depthwise_conv2d(x, w, 1, [1, 1, 1, 1])


def _train_step(model, x, y):
    # Eval-mode batch norm keeps the comparison linear in the convolutions; with
    # batch statistics of 2 images at 2x2 pixels, float rounding is amplified ~1e3x.
    model.eval()
    loss = F.cross_entropy(model(paddle.to_tensor(x)), paddle.to_tensor(y))
    loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters() if p.grad is not None}
    model.clear_gradients()
    return float(loss), grads


def test_lite0_gradients_same_with_and_without_op(ops, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 33, 33)).astype(np.float32)
    y = np.array([1, 3], dtype=np.int64)
    paddle.seed(5)
    model = efficientnet_lite0(num_classes=4, dropout=0.0, drop_path_rate=0.0)
    monkeypatch.setenv(paddle_ops.OPS_ENV, "1")
    loss_custom, grads_custom = _train_step(model, x, y)
    monkeypatch.setenv(paddle_ops.OPS_ENV, "0")
    loss_stock, grads_stock = _train_step(model, x, y)
    assert loss_custom == pytest.approx(loss_stock, rel=1e-5)
    assert grads_custom.keys() == grads_stock.keys()
    for name in ("blocks.3.depthwise_conv.weight", "conv_stem.weight", "fc.weight"):
        scale = np.abs(grads_stock[name]).max()
        np.testing.assert_allclose(grads_custom[name], grads_stock[name], rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_export_swaps_in_the_stock_op(ops, monkeypatch, tmp_path):
    monkeypatch.setenv(paddle_ops.OPS_ENV, "1")
    paddle.seed(6)
    model = efficientnet_lite0(num_classes=3)
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, 3, 48, 48)).astype(np.float32))
    with paddle.no_grad():
        dygraph = model(x).numpy()  # runs the custom op
    paddle.jit.save(model, str(tmp_path / "m"), input_spec=[paddle.static.InputSpec([None, 3, 48, 48], "float32", "x")])
    program = (tmp_path / "m.json").read_text() if (tmp_path / "m.json").exists() else ""
    assert "tl_depthwise_conv2d" not in program
    loaded = paddle.jit.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded(x).numpy(), dygraph, rtol=1e-4, atol=1e-5)


def test_train_speed_command_reports_both_columns(ops, capsys):
    import argparse
    import json

    from bench.commands import train_speed

    parser = argparse.ArgumentParser()
    train_speed.add_arguments(parser)
    args = parser.parse_args(
        ["--image-size", "32", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--repeats", "1", "--json"]
    )
    assert train_speed.run(args) == 0
    payload = json.loads(capsys.readouterr().out)
    results = payload["results"]
    assert results["paddle"]["median"] > 0 and results["custom"]["median"] > 0
    assert results["speedup"] == pytest.approx(results["custom"]["median"] / results["paddle"]["median"])
    assert payload["environment"]["paddle"] == paddle.__version__


def test_building_the_op_keeps_stdout_clean(monkeypatch, tmp_path, capfd):
    # Paddle's builder prints its progress to stdout; `bench ... --json` keeps stdout for results.
    import os
    import types

    import paddle.utils.cpp_extension as cpp_extension

    def fake_load(**kwargs):
        print("Compiling user custom op, it will cost a few seconds.....")
        os.write(1, b"compiler output on the descriptor\n")
        return types.SimpleNamespace(name=kwargs["name"])

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setattr(paddle_ops, "_state", {"module": None, "tried": False, "error": None})
    monkeypatch.setenv(paddle_ops.OPS_DIR_ENV, str(tmp_path / "ops"))
    module = paddle_ops.load_ops()
    print("result")
    out, err = capfd.readouterr()
    assert module.name == paddle_ops._LIB_NAME
    assert out == "result\n"
    assert "Compiling user custom op" in err and "compiler output on the descriptor" in err
