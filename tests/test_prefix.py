"""The frozen prefix as inference: model split, oneDNN parity, per-process reuse, and training with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from harness.config import TrainConfig  # noqa: E402
from harness.models import create_model, freeze_stages  # noqa: E402
from harness.prefix import FrozenPrefix, clear_caches, frozen_prefix, val_features  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_caches():
    clear_caches()
    yield
    clear_caches()


def _batch(size: int, n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("name, size, groups", [("ResNet_tiny", 32, 5), ("EfficientNet_Lite0", 64, 8)])
def test_prefix_then_suffix_is_the_model(name, size, groups):
    paddle.seed(1)
    model = create_model(name, 5)
    model.eval()
    x = paddle.to_tensor(_batch(size))
    with paddle.no_grad():
        full = model(x).numpy()
        for n in range(1, groups + 1):
            split = model.forward_suffix(model.prefix_layer(n)(x), n).numpy()
            np.testing.assert_array_equal(split, full, err_msg=f"n={n}")


def test_split_refuses_out_of_range():
    from common.errors import ModelError

    model = create_model("ResNet_tiny", 3)
    for bad in (0, 6, True, 1.0):
        with pytest.raises(ModelError, match="n in \\[1, 5\\]"):
            model.prefix_layer(bad)


@pytest.mark.parametrize("name, size, n", [("ResNet_tiny", 32, 3), ("EfficientNet_Lite0", 64, 4)])
def test_onednn_prefix_matches_dygraph(name, size, n):
    paddle.seed(2)
    model = create_model(name, 5)
    freeze_stages(model, n)
    x = _batch(size, n=6, seed=3)
    fast = FrozenPrefix(model, n, size, backend="onednn", threads=2)
    onednn = fast(x)
    dygraph = FrozenPrefix(model, n, size, backend="dygraph")(x)
    assert onednn.shape == dygraph.shape and onednn.dtype == np.float32
    scale = float(np.abs(dygraph).max())
    np.testing.assert_allclose(onednn, dygraph, rtol=0, atol=1e-4 * scale)
    # A batch of another size goes through the same predictor.
    np.testing.assert_allclose(fast(x[:1]), dygraph[:1], rtol=0, atol=1e-4 * scale)


def test_prefix_refuses_wrong_input_shape():
    model = create_model("ResNet_tiny", 3)
    freeze_stages(model, 2)
    prefix = FrozenPrefix(model, 2, 32, backend="dygraph")
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        prefix(_batch(48))


def test_frozen_prefix_is_shared_only_between_equal_weights():
    paddle.seed(3)
    a = create_model("ResNet_tiny", 3)
    b = create_model("ResNet_tiny", 7)  # another classifier, same prefix weights after copying
    b.set_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("fc.")})
    for m in (a, b):
        freeze_stages(m, 2)
    pa, pb = frozen_prefix(a, 2, 32, threads=1), frozen_prefix(b, 2, 32, threads=1)
    assert pa is pb
    # Changing one prefix weight gives another prefix.
    weight = b.stem[0].conv.weight
    weight.set_value(weight.numpy() + 1.0)
    assert frozen_prefix(b, 2, 32, threads=1) is not pa
    # Another split or input size is another prefix too.
    assert frozen_prefix(a, 3, 32, threads=1) is not pa
    assert frozen_prefix(a, 2, 48, threads=1) is not pa


def test_val_features_computed_once_per_identity():
    model = create_model("ResNet_tiny", 3)
    freeze_stages(model, 2)
    prefix = FrozenPrefix(model, 2, 32, backend="dygraph")
    calls = []

    class Loader:
        def __iter__(self):
            calls.append(1)
            yield _batch(32, n=3), np.array([0, 1, 2])
            yield _batch(32, n=2, seed=1), np.array([2, 0])

    feats, labels = val_features(prefix, Loader(), ("val", 1))
    again, _ = val_features(prefix, Loader(), ("val", 1))
    assert again is feats and len(calls) == 1
    assert feats.shape[0] == 5 and labels.tolist() == [0, 1, 2, 2, 0]
    val_features(prefix, Loader(), ("val", 2))
    assert len(calls) == 2


@pytest.mark.slow
def test_fine_tune_with_prefix_matches_the_reference(image_folder_dataset, tmp_path, monkeypatch):
    """Same run with the fast path and with TLBENCH_FAST_TRIALS=0: the same model, up to float rounding."""
    root = image_folder_dataset({"train": 12, "test": 3}, name="prefix")
    from harness.train import fine_tune

    cfg = TrainConfig(model="ResNet_tiny", dataset="folder", data_root=str(root), image_size=32, epochs=2,
                      batch_size=8, lr=0.05, freeze=3, mixup=True, threads=2, seed=0, out_dir=str(tmp_path))
    fast = fine_tune(cfg.replace(run_name="fast"))
    monkeypatch.setenv("TLBENCH_FAST_TRIALS", "0")
    reference = fine_tune(cfg.replace(run_name="reference"))
    for a, b in zip(fast.history, reference.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["val_top1"] == pytest.approx(b["val_top1"], abs=1e-9)
    wa = paddle.load(fast.checkpoint)
    wb = paddle.load(reference.checkpoint)
    for key in wa:
        np.testing.assert_allclose(wa[key].numpy(), wb[key].numpy(), rtol=1e-3, atol=1e-4, err_msg=key)
    # Frozen weights are bit-identical: neither path trained them.
    frozen = [k for k in wa if k.startswith(("stem.", "blocks.0.", "blocks.1."))]
    assert frozen and all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in frozen)
    assert json.loads((tmp_path / "fast" / "metrics.json").read_text())["finished"]
