"""ResNet_vd's shortcut pool on odd feature maps must export and run on oneDNN."""

from __future__ import annotations

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from harness.models import create_model  # noqa: E402


@pytest.mark.parametrize("size", [40, 48])
def test_odd_feature_maps_run_on_onednn(tmp_path, size):
    import paddle.inference as pi
    from paddle.static import InputSpec

    model = create_model("ResNet_tiny", 3)
    model.eval()
    prefix = str(tmp_path / "inference")
    paddle.jit.save(model, prefix, input_spec=[InputSpec([None, 3, size, size], "float32", name="x")])
    params = prefix + ".pdiparams"
    graph = prefix + ".json" if (tmp_path / "inference.json").exists() else prefix + ".pdmodel"
    config = pi.Config(graph, params)
    config.enable_mkldnn()
    predictor = pi.create_predictor(config)
    x = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    predictor.run()  # padding="SAME" pooling raised std::exception here
    out = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    np.testing.assert_allclose(out, model(paddle.to_tensor(x)).numpy(), atol=1e-4)
