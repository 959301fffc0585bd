"""bench train-profile: operator kinds, nesting, and a tiny real profile."""

from __future__ import annotations

import pytest

from bench.perf.train_profile import _outermost_operator_time, op_kind


def test_op_kinds():
    assert op_kind("conv2d dygraph") == "dense convolution"
    assert op_kind("Global_Conv2dGradNodeFinal") == "dense convolution"
    assert op_kind("Global_CustomOpGradNode: tl_depthwise_conv2d_grad") == "depthwise convolution"
    assert op_kind("depthwise_conv2d dygraph") == "depthwise convolution"
    assert op_kind("Global_MatmulGradNode") == "matmul (1x1 convolution)"
    assert op_kind("Global_BatchNormGradNode") == "batch norm"
    assert op_kind("relu6 dygraph") == "activation"
    assert op_kind("momentum_ dygraph") == "optimizer"
    assert op_kind("cross_entropy_with_softmax dygraph") == "other"


def test_nested_operator_events_count_once():
    events = [
        {"cat": "Operator", "name": "Global_Conv2dGradNodeFinal[3 ms]", "ts": 0.0, "dur": 3000.0},
        {"cat": "Operator", "name": "matmul dygraph", "ts": 500.0, "dur": 1000.0},  # inside the first
        {"cat": "Operator", "name": "relu6 dygraph", "ts": 4000.0, "dur": 500.0},
        {"cat": "OperatorInner", "name": "conv2d kernel", "ts": 4100.0, "dur": 100.0},
        {"cat": "Operator", "name": "batch_norm dygraph", "ts": 5000.0, "dur": 250.0},
    ]
    assert _outermost_operator_time(events) == {"dense convolution": 3.0, "activation": 0.5, "batch norm": 0.25}


@pytest.mark.slow
def test_profile_of_a_tiny_step(capsys):
    import json

    from bench.cli import main

    assert main(["train-profile", "--model", "ResNet_tiny", "--image-size", "32", "--batch-size", "8",
                 "--freeze", "2", "--steps", "2", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fast"] and result["freeze"] == 2 and result["step_ms"] > 0
    assert result["phases_ms"]["prefix_ms"] > 0  # the frozen part ran as inference
    assert "dense convolution" in result["operators_ms"]
    assert sum(result["operators_share"].values()) == pytest.approx(1.0)
    assert "cpu_model" in result["environment"]
