"""bench serve: the real HTTP server in a subprocess on loopback, with good and bad requests."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from bench.serve.app import bind_socket  # noqa: E402
from bench.serve.batcher import batch_buckets  # noqa: E402
from bench.serve.errors import ApiError  # noqa: E402
from bench.serve.uploads import image_header_size  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from harness.data import read_image_rgb  # noqa: E402
from harness.artifact import ExportedModel  # noqa: E402
from harness.export import export  # noqa: E402
from harness.predictor import Predictor, PredictorOptions  # noqa: E402
from test_export import CLASSES, make_run_dir  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWERS12_TEST = REPO_ROOT / ".." / "shared" / "datasets" / "flowers12" / "test"
MAX_BYTES = 400_000
MAX_PIXELS = 2_000_000
MAX_BATCH = 4


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A ~1.5 kB PNG whose header declares ``width x height`` RGB pixels (7.5 GB decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 8, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[Path]:
    """One flowers12 test image of each of 8 classes; smooth synthetic JPEGs where flowers12 is absent."""
    if FLOWERS12_TEST.is_dir():
        classes = sorted(p for p in FLOWERS12_TEST.iterdir() if p.is_dir())
        return [sorted(c.glob("*.jpg"))[0] for c in classes[:8]]
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        img = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (120 + 9 * i, 90 + 5 * i),
                         interpolation=cv2.INTER_CUBIC)
        path = root / f"class{i}" / "0.jpg"
        path.parent.mkdir()
        cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> ExportedModel:
    run_dir = make_run_dir(tmp_path_factory.mktemp("run"), resize_short=40)
    return export(run_dir, tmp_path_factory.mktemp("exp") / "tiny")


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    """``bench serve`` in a subprocess; yields its base URL once /health answers."""
    port = free_port()
    log_file = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "bench.cli", "serve", "--model", str(exported.model_dir), "--port", str(port),
           "--max-batch", str(MAX_BATCH), "--max-wait-ms", "100", "--max-bytes", str(MAX_BYTES),
           "--max-pixels", str(MAX_PIXELS), "--threads", "1", "--topk", "3"]
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"bench serve exited with {proc.returncode}:\n{log_file.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"bench serve did not become healthy:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_image_header_size_reads_dimensions_without_decoding(image_paths):
    data = image_paths[0].read_bytes()
    h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    assert image_header_size(data) == ("jpeg", w, h)
    ok, png = cv2.imencode(".png", np.zeros((17, 29, 3), np.uint8))
    assert image_header_size(png.tobytes()) == ("png", 29, 17)
    ok, progressive = cv2.imencode(".jpg", np.zeros((21, 13, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert image_header_size(progressive.tobytes()) == ("jpeg", 13, 21)
    assert image_header_size(png_bomb()) == ("png", 50_000, 50_000)
    with pytest.raises(ApiError) as info:
        image_header_size(b"GIF89a....")
    assert info.value.status == 415
    with pytest.raises(ApiError) as info:
        image_header_size(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    assert info.value.status == 422
    assert batch_buckets(8) == (1, 2, 4, 8) and batch_buckets(6) == (1, 2, 4, 6) and batch_buckets(1) == (1,)


def test_bind_socket_is_tcp_so_that_asyncio_disables_nagle():
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; with proto 0 every
    # keep-alive request waited ~40 ms for a delayed ACK.
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
        sock.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            bind_socket("127.0.0.1", sock.getsockname()[1]).close()
    finally:
        sock.close()
    with pytest.raises(ConfigError, match="--port"):
        bind_socket("127.0.0.1", 70000)


def test_answers_equal_predictor_predict_images(server, exported, image_paths):
    predictor = Predictor(exported, PredictorOptions(batch_size=MAX_BATCH, threads=1))
    images = [read_image_rgb(p) for p in image_paths]
    expected = np.concatenate([predictor.predict_images([img]) for img in images])
    with httpx.Client(base_url=server, timeout=30) as client:
        for i, (path, row) in enumerate(zip(image_paths, expected)):
            data = path.read_bytes()
            if i % 2:
                response = client.post("/predict", files={"file": (path.name, data, "image/jpeg")})
            else:
                response = client.post("/predict?topk=2", content=data, headers={"content-type": "image/jpeg"})
            assert response.status_code == 200, response.text
            body = response.json()
            preds = body["predictions"]
            assert len(preds) == (3 if i % 2 else 2)  # --topk 3 is the default, ?topk=2 overrides it
            order = np.argsort(-row, kind="stable")
            assert [p["class_id"] for p in preds] == [int(c) for c in order[: len(preds)]]
            assert [p["label"] for p in preds] == [CLASSES[int(c)] for c in order[: len(preds)]]
            probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
            np.testing.assert_allclose([p["score"] for p in preds], probs[order[: len(preds)]], atol=1e-4)
            np.testing.assert_allclose([p["logit"] for p in preds], row[order[: len(preds)]], atol=1e-3)
            assert body["image_size"] == [images[i].shape[1], images[i].shape[0]]


def test_concurrent_requests_are_batched(server, image_paths):
    with httpx.Client(base_url=server, timeout=30) as client:
        before = client.get("/stats").json()
    payloads = [p.read_bytes() for p in image_paths] * 2

    def post(data: bytes) -> httpx.Response:
        return httpx.post(server + "/predict", content=data, timeout=30)

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        responses = list(pool.map(post, payloads))
    assert [r.status_code for r in responses] == [200] * len(payloads)
    sizes = [r.json()["batch_size"] for r in responses]
    assert max(sizes) > 1 and max(sizes) <= MAX_BATCH
    after = httpx.get(server + "/stats").json()
    assert after["images"] - before["images"] == len(payloads)
    new_batches = {int(k): v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    assert sum(k * v for k, v in new_batches.items()) == len(payloads)
    assert any(k > 1 and v > 0 for k, v in new_batches.items())


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(server, image_paths):
    good = image_paths[0].read_bytes()
    ok, png = cv2.imencode(".png", np.full((30, 40, 3), 128, np.uint8))
    cases = [
        ("not an image", dict(content=b"hello, this is text"), 415, "not a JPEG or PNG"),
        ("empty body", dict(content=b""), 422, "empty body"),
        ("truncated JPEG", dict(content=good[: len(good) // 2]), 422, "cannot decode"),
        ("corrupt PNG", dict(content=png.tobytes()[:80]), 422, "cannot decode"),
        ("oversized body", dict(content=b"\xff\xd8" + bytes(MAX_BYTES + 10)), 413, "too large"),
        ("decompression bomb", dict(content=png_bomb()), 413, "50000x50000"),
        ("multipart without a file", dict(files=None, data={"note": "x"}, multipart=True), 422, "no file field"),
        ("bad topk", dict(content=good, params={"topk": "lots"}), 422, "topk"),
    ]
    with httpx.Client(base_url=server, timeout=30) as client:
        for name, kwargs, status, message in cases:
            if kwargs.pop("multipart", False):
                # httpx sends urlencoded data unless a file is present: build the multipart body by hand.
                boundary = "tlbenchboundary"
                body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n"
                        f"--{boundary}--\r\n").encode()
                response = client.post("/predict", content=body,
                                       headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            else:
                response = client.post("/predict", **kwargs)
            assert response.status_code == status, (name, response.text)
            assert response.headers["content-type"].startswith("application/json"), name
            assert message in response.json()["error"], (name, response.json())
            # Still serving after every bad request.
            assert client.post("/predict", content=good).status_code == 200, name
        assert client.get("/health").json()["status"] == "ok"
        stats = client.get("/stats").json()
    assert stats["requests"]["413"] >= 2 and stats["requests"]["415"] >= 1 and stats["requests"]["422"] >= 4


def test_health_and_metadata(server, exported):
    health = httpx.get(server + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    meta = httpx.get(server + "/metadata").json()
    assert meta["classes"] == list(CLASSES) and meta["num_classes"] == len(CLASSES)
    assert meta["input"]["shape"] == [None, 3, 32, 32]
    assert meta["preprocess"]["resize_short"] == exported.preprocess.resize_short
    assert meta["predictor"]["backend"] == "cpu"
    assert meta["batching"]["max_batch"] == MAX_BATCH and meta["batching"]["max_wait_ms"] == 100
    assert meta["limits"] == {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS, "formats": ["image/jpeg", "image/png"],
                              "max_decode_bytes": 2**30, "max_inflight_bytes": 256 * 2**20, "body_timeout_s": 10.0}
    assert httpx.get(server + "/nowhere").status_code == 404


def test_a_failing_input_fails_only_its_own_request_of_the_batch():
    import asyncio

    from bench.serve.batcher import DynamicBatcher

    def infer(tensors: list[np.ndarray]) -> np.ndarray:
        batch = np.stack(tensors)
        if (batch < 0).any():  # the poisoned input breaks whatever batch it is in
            raise RuntimeError("bad input")
        return batch.reshape(len(batch), -1)[:, :2] + 1.0

    async def scenario():
        batcher = DynamicBatcher(infer, max_batch=4, max_wait_s=0.2, max_queue=8)
        await batcher.start()
        try:
            tensors = [np.full((3, 2, 2), v, np.float32) for v in (1.0, -1.0, 2.0, 3.0)]
            return await asyncio.gather(*(batcher.submit(t) for t in tensors), return_exceptions=True), batcher
        finally:
            await batcher.stop()

    results, batcher = asyncio.run(scenario())
    assert isinstance(results[1], ApiError) and results[1].status == 500 and "bad input" in results[1].message
    for i, value in ((0, 1.0), (2, 2.0), (3, 3.0)):
        row, _ = results[i]
        np.testing.assert_array_equal(row, [value + 1.0, value + 1.0])
    assert batcher.stats.images == 3


class _BlockingPredictor:
    """Just enough of a Predictor for create_app: preprocess records its thread, predict waits on an event."""

    def __init__(self, crop: int = 4):
        from types import SimpleNamespace

        self.crop = crop
        self.spec = SimpleNamespace(crop_size=crop)
        self.options = SimpleNamespace(batch_size=1)
        self.model = SimpleNamespace(model_name="fake", classes=["a", "b"], model_dir=".")
        self.preprocess_calls: list[tuple[int, str]] = []
        self.batches: list[tuple[int, ...]] = []
        import threading

        self.release = threading.Event()

    def preprocess(self, images, *, threads=None):
        import threading

        self.preprocess_calls.append((len(images), threading.current_thread().name))
        return np.stack([np.full((3, self.crop, self.crop), img.mean() / 255.0, np.float32) for img in images])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.shape)
        assert self.release.wait(30)
        return np.stack([[m, 1.0 - m] for m in batch.reshape(len(batch), -1).mean(axis=1)]).astype(np.float32)


def test_overload_is_refused_before_the_body_is_decoded_and_only_small_tensors_queue():
    import threading

    from fastapi.testclient import TestClient

    from bench.serve.app import ServerSettings, create_app

    predictor = _BlockingPredictor()
    app = create_app(predictor, ServerSettings(max_batch=1, max_queue=1, max_wait_ms=0))
    ok, png = cv2.imencode(".png", np.full((60, 80, 3), 51, np.uint8))
    responses: dict[int, httpx.Response] = {}
    with TestClient(app) as client:
        def post(i: int) -> None:
            responses[i] = client.post("/predict", content=png.tobytes())

        threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
        try:
            # One request in inference, then one queued: the server holds max_batch + max_queue requests.
            # (In turn: sent together, the second could find the one-slot queue not yet emptied.)
            deadline = time.monotonic() + 20
            for t, reached in zip(threads, (lambda: len(predictor.batches) == 1,
                                            lambda: app.state.batcher.queue_depth == 1)):
                t.start()
                while not reached():
                    assert time.monotonic() < deadline, ("the requests never reached inference and the queue",
                                                         predictor.batches, app.state.batcher.queue_depth, responses)
                    time.sleep(0.01)
            # A third is refused before its body is decoded or even checked (text would otherwise be a 415).
            busy = client.post("/predict", content=b"not an image at all")
        finally:
            predictor.release.set()  # never leave the inference thread blocked, whatever failed
            for t in threads:
                t.join(30)
    assert busy.status_code == 503 and "busy" in busy.json()["error"], busy.text
    assert [responses[i].status_code for i in range(2)] == [200, 200]
    assert responses[0].json()["image_size"] == [80, 60]
    top = responses[0].json()["predictions"][0]
    assert top["label"] == "b" and top["score"] == pytest.approx(float(np.exp(0.8) / (np.exp(0.2) + np.exp(0.8))), abs=1e-5)
    # Each image was preprocessed alone in a decode thread; inference saw [N, 3, crop, crop] tensors.
    assert predictor.preprocess_calls and all(n == 1 and name.startswith("decode") for n, name in predictor.preprocess_calls)
    assert all(shape[1:] == (3, 4, 4) for shape in predictor.batches)


def test_the_serving_predictor_leaves_a_core_for_decoding():
    from bench.serve.app import default_serve_threads

    assert [default_serve_threads(n, "cpu") for n in (1, 2, 4, 16)] == [1, 1, 3, 15]
    assert default_serve_threads(2, "cpu-plain") == 1
    assert default_serve_threads(8, "gpu") is None and default_serve_threads(8, "trt") is None
