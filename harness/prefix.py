"""The frozen prefix of a model, run as inference: fast, exact, and shared by a search's trials.

With ``TrainConfig.freeze = n`` the stem and the first ``n - 1`` stages neither learn nor
update their batch-norm statistics, so on every training batch they compute a fixed
function of the (augmented, mixed) images. Dygraph still runs that function with its
training-time kernels, at the network's highest resolutions. :class:`FrozenPrefix` runs it
instead through Paddle Inference with oneDNN on CPU (batch norms folded into the
convolutions, activations fused; training on a GPU does not use it); the trainable
suffix (``model.forward_suffix``) continues from its output. The result equals the dygraph
prefix up to float rounding (``tests/test_prefix.py`` checks it).

Every trial of a search starts from the same pretrained weights, so the prefix is the same
function in all of them: :func:`frozen_prefix` keys it on the prefix's parameter bytes and
builds it once per process. Validation images are not augmented, so their prefix features
are computed once per process too (:func:`val_features`) and each epoch's validation runs
only the suffix.

``TLBENCH_FAST_TRIALS=0`` turns this off (and the decoded-image cache of
:mod:`harness.data.image_cache`): training then runs the whole model in dygraph, as a
reference for speed and accuracy comparisons.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .runtime import set_paddle_threads

log = logging.getLogger(__name__)

# Prefixes (one per model, split and input size) and val feature sets kept per process.
_MAX_PREFIXES = 4
_MAX_FEATURE_SETS = 8


def prefix_fingerprint(layer: Any, n: int, image_size: int, extra: str = "") -> str:
    """sha256 over the prefix's parameter and buffer bytes, the split and the input size."""
    digest = hashlib.sha256(f"{type(layer).__name__}|{n}|{image_size}|{extra}".encode())
    for name, tensor in sorted(layer.state_dict().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensor.numpy()).tobytes())
    return digest.hexdigest()


class FrozenPrefix:
    """``features = prefix(images)``: groups ``[0, n)`` of a frozen model as an inference function.

    ``images`` is an ``[N, 3, S, S]`` float32 batch (``S = image_size``); the result is the
    prefix's ``[N, C, H, W]`` float32 output. ``backend`` is ``"onednn"`` (Paddle Inference,
    CPU) or ``"dygraph"`` (the model's own layers under ``no_grad``, any device).
    """

    def __init__(self, model: Any, n: int, image_size: int, *, backend: str = "onednn",
                 threads: Optional[int] = None) -> None:
        if backend not in ("onednn", "dygraph"):
            raise ValueError(f"backend must be 'onednn' or 'dygraph', got {backend!r}")
        self.n = int(n)
        self.image_size = int(image_size)
        self.backend = backend
        self.layer = model.prefix_layer(self.n)
        self.layer.eval()
        self.key = prefix_fingerprint(self.layer, self.n, self.image_size, backend)
        self._predictor = None
        self._threads = threads
        self._workdir: Optional[Path] = None
        if backend == "onednn":
            self._predictor = self._build_predictor(threads)

    def _build_predictor(self, threads: Optional[int]) -> Any:
        import paddle
        import paddle.inference as pi

        from common.machine import usable_cores

        self._workdir = Path(tempfile.mkdtemp(prefix="tlbench-prefix-"))
        atexit.register(shutil.rmtree, self._workdir, True)
        prefix = self._workdir / "prefix"
        spec = [paddle.static.InputSpec([None, 3, self.image_size, self.image_size], "float32", name="x")]
        paddle.jit.save(self.layer, str(prefix), input_spec=spec)
        model_file = next(p for p in (prefix.with_suffix(".json"), prefix.with_suffix(".pdmodel")) if p.exists())
        config = pi.Config(str(model_file), str(prefix.with_suffix(".pdiparams")))
        config.disable_gpu()
        config.switch_ir_optim(True)
        config.switch_use_feed_fetch_ops(False)
        config.disable_glog_info()
        config.enable_mkldnn()
        # Primitives for the full batch and for a shorter last batch of an epoch.
        config.set_mkldnn_cache_capacity(8)
        config.set_cpu_math_library_num_threads(threads or usable_cores())
        predictor = pi.create_predictor(config)
        self._input = predictor.get_input_handle(predictor.get_input_names()[0])
        self._output = predictor.get_output_handle(predictor.get_output_names()[0])
        return predictor

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Prefix features of ``images`` ([N, 3, S, S] float32) as float32 numpy."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected images [N, 3, {self.image_size}, {self.image_size}], got {images.shape}")
        if self._predictor is None:
            import paddle

            with paddle.no_grad():
                return self.layer(paddle.to_tensor(images)).numpy()
        self._input.reshape(list(images.shape))
        self._input.copy_from_cpu(images)
        self._predictor.run()
        features = self._output.copy_to_cpu()
        # A predictor's run leaves the math library's thread count as it wants it; dygraph
        # training that follows ran ~1.3x slower at 2 threads until it was set again.
        set_paddle_threads(self._threads)
        return features

    def __repr__(self) -> str:
        return f"FrozenPrefix(n={self.n}, image_size={self.image_size}, backend={self.backend!r}, key={self.key[:12]})"


_lock = threading.Lock()
_prefixes: "collections.OrderedDict[str, FrozenPrefix]" = collections.OrderedDict()
_features: "collections.OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = collections.OrderedDict()


def frozen_prefix(model: Any, n: int, image_size: int, *, threads: Optional[int] = None) -> FrozenPrefix:
    """The oneDNN :class:`FrozenPrefix` of ``model``'s first ``n`` groups, built once per process.

    Two models whose prefixes hold the same parameters (every trial of a search fine-tuning
    the same pretrained weights) get the same object.
    """
    key = prefix_fingerprint(model.prefix_layer(n), n, image_size, "onednn") + f"|{threads}"
    with _lock:
        if key in _prefixes:
            _prefixes.move_to_end(key)
            return _prefixes[key]
    built = FrozenPrefix(model, n, image_size, backend="onednn", threads=threads)
    log.info("frozen prefix: groups [0, %d) at %d px through oneDNN", n, image_size)
    with _lock:
        _prefixes[key] = built
        while len(_prefixes) > _MAX_PREFIXES:
            _prefixes.popitem(last=False)
    return built


def val_features(prefix: FrozenPrefix, loader: Any, identity: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)`` of every image ``loader`` yields, through ``prefix``; cached per process.

    ``identity`` names what the loader yields (its samples and preprocessing); together with
    the prefix's key it decides whether an earlier result can be reused. Images the loader
    skips are reported by the loader the first time and are absent from the result.
    """
    key = (prefix.key, identity)
    with _lock:
        if key in _features:
            _features.move_to_end(key)
            return _features[key]
    chunks, labels = [], []
    for images, batch_labels in loader:
        chunks.append(prefix(images))
        labels.append(batch_labels)
    if chunks:
        result = (np.concatenate(chunks), np.concatenate(labels))
    else:
        result = (np.zeros((0,), np.float32), np.zeros((0,), np.int64))
    with _lock:
        _features[key] = result
        while len(_features) > _MAX_FEATURE_SETS:
            _features.popitem(last=False)
    return result


def clear_caches() -> None:
    """Forget every cached prefix and feature set (tests; a process that changes weights in place)."""
    with _lock:
        _prefixes.clear()
        _features.clear()
