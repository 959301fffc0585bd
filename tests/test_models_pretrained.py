"""Pretrained weights: loading with a report, head re-initialisation, download cache, freezing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import threading
from pathlib import Path

import numpy as np
import paddle
import pytest

from common.errors import DownloadError, IntegrityError, ModelError
from harness.models import LoadReport, create_model, download_to_cache, freeze_stages, get_entry
from harness.models import pretrained as pretrained_mod
from harness.models.pretrained import resolve_weights


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLBENCH_CACHE", str(tmp_path / "cache"))


def _save_tiny(path: Path, num_classes: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    paddle.seed(seed)
    model = create_model("ResNet_tiny", num_classes)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    # Non-trivial running statistics so that a skipped buffer would show.
    rng = np.random.default_rng(seed)
    for key in state:
        if key.endswith(("_mean", "_variance")):
            state[key] = rng.uniform(0.5, 1.5, state[key].shape).astype("float32")
    paddle.save(state, str(path))
    return state


def test_head_reinitialised_for_new_class_count(tmp_path, caplog):
    path = tmp_path / "tiny.pdparams"
    saved = _save_tiny(path)
    with caplog.at_level(logging.INFO, logger="harness.models.pretrained"):
        model = create_model("ResNet_tiny", 7, pretrained=str(path))
    report = model.load_report
    assert isinstance(report, LoadReport)
    assert set(report.reinitialized) == {"fc.weight", "fc.bias"}
    assert report.missing == () and report.unexpected == ()
    assert set(report.loaded) == set(saved) - {"fc.weight", "fc.bias"}
    state = model.state_dict()
    for key in report.loaded:
        np.testing.assert_array_equal(state[key].numpy(), saved[key])
    assert list(state["fc.weight"].shape) == [64, 7]
    assert "2 reinitialized" in caplog.text
    assert model.model_name == "ResNet_tiny" and model.pretrained_cfg is get_entry("ResNet_tiny").pretrained_cfg


def test_same_class_count_loads_everything(tmp_path):
    path = tmp_path / "tiny.pdparams"
    saved = _save_tiny(path, num_classes=5)
    model = create_model("ResNet_tiny", 5, pretrained=path)
    assert model.load_report.reinitialized == () and set(model.load_report.loaded) == set(saved)
    np.testing.assert_array_equal(model.state_dict()["fc.weight"].numpy(), saved["fc.weight"])


def test_no_pretrained_means_no_report():
    assert create_model("ResNet_tiny", 3).load_report is None


def test_missing_and_unexpected_are_reported_or_strict_error(tmp_path, caplog):
    saved = _save_tiny(tmp_path / "full.pdparams")
    state = dict(saved)
    del state["blocks.2.conv1.bn._mean"]
    state["extra.weight"] = np.zeros(3, "float32")
    path = tmp_path / "partial.pdparams"
    paddle.save(state, str(path))

    with caplog.at_level(logging.WARNING, logger="harness.models.pretrained"):
        model = create_model("ResNet_tiny", 1000, pretrained=str(path))
    assert model.load_report.missing == ("blocks.2.conv1.bn._mean",)
    assert model.load_report.unexpected == ("extra.weight",)
    assert "1 missing" in caplog.text and "extra.weight" in caplog.text

    with pytest.raises(ModelError, match="blocks.2.conv1.bn._mean"):
        create_model("ResNet_tiny", 1000, pretrained=str(path), strict_pretrained=True)


def test_corrupt_and_absent_weights_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.pdparams"
    bad.write_bytes(b"\x80\x04 this is not a pickle")
    with pytest.raises(ModelError, match="broken.pdparams"):
        create_model("ResNet_tiny", 3, pretrained=str(bad))
    with pytest.raises(ModelError, match="nowhere.pdparams"):
        create_model("ResNet_tiny", 3, pretrained=str(tmp_path / "nowhere.pdparams"))


def test_known_names_resolve_to_official_urls(monkeypatch, tmp_path):
    seen: list[tuple[str, object]] = []
    local = tmp_path / "w.pdparams"
    local.write_bytes(b"x")

    def fake_download(url, *, sha256=None, cache=None):
        seen.append((url, sha256))
        return local

    monkeypatch.setattr(pretrained_mod, "download_to_cache", fake_download)
    cfg = get_entry("ResNet50_vd").pretrained_cfg
    base = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/"
    assert resolve_weights("imagenet", "ResNet50_vd", cfg) == local
    assert resolve_weights("ssld", "ResNet50_vd", cfg) == local
    assert resolve_weights("ResNet50_vd_ssld_pretrained", "ResNet50_vd", cfg) == local
    assert [u for u, _ in seen] == [
        base + "ResNet50_vd_pretrained.pdparams",
        base + "ResNet50_vd_ssld_pretrained.pdparams",
        base + "ResNet50_vd_ssld_pretrained.pdparams",
    ]
    assert all(checksum is None for _, checksum in seen)  # not published: recorded at download
    # ResNet18_vd has no SSLD weights; a name of another model is not accepted either.
    with pytest.raises(ModelError, match="ResNet18_vd_pretrained"):
        resolve_weights("ssld", "ResNet18_vd", get_entry("ResNet18_vd").pretrained_cfg)
    with pytest.raises(ModelError, match="known weights names"):
        resolve_weights("ResNet101_vd_pretrained", "ResNet50_vd", cfg)


# ------------------------------------------------------------------------------------
# Download cache
# ------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_file_url_download_with_matching_sha256_is_cached(tmp_path):
    source = tmp_path / "weights.pdparams"
    source.write_bytes(b"first version")
    digest = hashlib.sha256(b"first version").hexdigest()
    path = download_to_cache(source.as_uri(), sha256=digest)
    assert path.read_bytes() == b"first version"
    assert path.is_relative_to(tmp_path / "cache")
    assert Path(str(path) + ".sha256").read_text().split()[0] == digest

    source.write_bytes(b"second version")  # a second call must not fetch again
    again = download_to_cache(source.as_uri())
    assert again == path and again.read_bytes() == b"first version"


def test_checksum_mismatch_leaves_nothing_behind(tmp_path):
    source = tmp_path / "weights.pdparams"
    source.write_bytes(b"payload")
    wrong = "0" * 64
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_to_cache(source.as_uri(), sha256=wrong)
    assert _leftovers(tmp_path / "cache") == []


def test_unknown_checksum_is_recorded_and_tampering_detected(tmp_path):
    source = tmp_path / "w.pdparams"
    source.write_bytes(b"abc")
    path = download_to_cache(source.as_uri())
    assert Path(str(path) + ".sha256").read_text().split()[0] == hashlib.sha256(b"abc").hexdigest()
    path.write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="changed on disk"):
        download_to_cache(source.as_uri())


def test_download_errors(tmp_path):
    with pytest.raises(DownloadError, match="could not download"):
        download_to_cache((tmp_path / "absent.pdparams").as_uri())
    assert _leftovers(tmp_path / "cache") == []
    with pytest.raises(DownloadError, match="URL"):
        download_to_cache("ftp://example.org/w.pdparams")
    with pytest.raises(DownloadError, match="sha256"):
        download_to_cache((tmp_path / "x").as_uri(), sha256="abc")


def test_http_download_and_create_model_from_url(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    saved = _save_tiny(served / "tiny.pdparams")
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tiny.pdparams"
        model = create_model("ResNet_tiny", 4, pretrained=url)
    finally:
        server.shutdown()
        server.server_close()
    assert model.load_report.source.startswith(str(tmp_path / "cache"))
    np.testing.assert_array_equal(model.state_dict()["stem.0.conv.weight"].numpy(), saved["stem.0.conv.weight"])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


# ------------------------------------------------------------------------------------
# Freezing
# ------------------------------------------------------------------------------------


def test_freeze_stages_keeps_frozen_weights_and_statistics():
    paddle.seed(0)
    model = create_model("ResNet_tiny", 4)
    freeze_stages(model, 2)  # stem + first residual stage (blocks.0)
    model.train()
    assert not model.stem[0].bn.training and not model.blocks[0].conv0.bn.training
    assert model.blocks[1].conv0.bn.training

    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    optimizer = paddle.optimizer.Momentum(learning_rate=0.1, momentum=0.9, parameters=trainable, weight_decay=1e-4)
    x = paddle.randn([4, 3, 32, 32])
    y = paddle.to_tensor([0, 1, 2, 3])
    loss = paddle.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    after = {k: v.numpy() for k, v in model.state_dict().items()}

    frozen = [k for k in before if k.startswith(("stem.", "blocks.0."))]
    free = [k for k in before if k not in frozen]
    assert frozen and all(np.array_equal(before[k], after[k]) for k in frozen)  # incl. BN running stats
    changed = [k for k in free if not np.array_equal(before[k], after[k])]
    assert set(changed) == set(free)  # every other weight and running statistic moved


def test_freeze_zero_unfreezes_and_bad_n_rejected():
    model = create_model("ResNet_tiny", 4)
    freeze_stages(model, 5)  # stem and all four stages; the classifier always trains
    assert {n for n, p in model.named_parameters() if not p.stop_gradient} == {"fc.weight", "fc.bias"}
    freeze_stages(model, 0)
    model.train()
    assert model.stem[0].bn.training
    assert not any(p.stop_gradient for n, p in model.named_parameters() if not n.endswith(("_mean", "_variance")))
    with pytest.raises(ModelError, match=r"\[0, 5\]"):
        freeze_stages(model, 6)
    with pytest.raises(ModelError, match="does not support"):
        freeze_stages(paddle.nn.Linear(2, 2), 1)


def test_registered_source_and_reader_serve_known_weights(tmp_path, monkeypatch):
    """A family whose weights are not downloadable .pdparams plugs in a source and a reader."""
    saved = _save_tiny(tmp_path / "tiny.pdparams")
    npz = tmp_path / "tiny.npz"
    np.savez(npz, **saved)
    monkeypatch.setattr(pretrained_mod, "_SOURCES", {})
    monkeypatch.setattr(pretrained_mod, "_READERS", {})
    fetched: list[tuple[str, object]] = []

    def fetch(url, checksum):
        fetched.append((url, checksum))
        return npz

    pretrained_mod.register_weights_source("demo", fetch)
    pretrained_mod.register_weights_reader(".npz", lambda path: dict(np.load(path)))
    cfg = get_entry("ResNet_tiny").pretrained_cfg
    cfg = type(cfg)(input_size=32, weights={"imagenet": ("demo:tiny.npz", None)})
    path = resolve_weights("imagenet", "ResNet_tiny", cfg)
    assert fetched == [("demo:tiny.npz", None)]
    state = pretrained_mod.read_weights_file(path)
    assert set(state) == set(saved)
    np.testing.assert_array_equal(state["fc.bias"], saved["fc.bias"])
    with pytest.raises(ModelError, match="non-empty|new"):
        pretrained_mod.register_weights_source("https", fetch)
