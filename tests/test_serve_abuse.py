"""`bench serve` under abuse: /predict keeps answering beside slow uploads and behind huge PNGs,
and the bytes of bodies held at once stay within --max-inflight-bytes."""

from __future__ import annotations

import socket
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("paddle")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from bench.perf.serve_abuse import _normal_requests, _percentiles, big_png, running_server  # noqa: E402
from bench.serve.uploads import plan_upload  # noqa: E402
from harness.export import export  # noqa: E402
from test_export import make_run_dir  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    run_dir = make_run_dir(tmp_path_factory.mktemp("run"), resize_short=40)
    return export(run_dir, tmp_path_factory.mktemp("exp") / "tiny").model_dir


@pytest.fixture(scope="module")
def normal_images():
    rng = np.random.default_rng(0)
    out = []
    for i in range(4):
        img = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (160 + 8 * i, 120), interpolation=cv2.INTER_CUBIC)
        out.append(cv2.imencode(".jpg", img)[1].tobytes())
    return out


def test_decode_memory_comes_from_the_png_header():
    png = big_png(2400)
    assert len(png) < 100_000
    plan = plan_upload(png, max_pixels=40_000_000)
    # 16-bit RGBA: decoder output 8 B, 8-bit copy 4 B, RGB 3 B per pixel.
    assert (plan.channels, plan.bytes_per_sample, plan.decode_bytes) == (4, 2, 2400 * 2400 * 15) and plan.large
    from bench.serve.errors import ApiError

    with pytest.raises(ApiError, match="needs 82 MiB, more than the limit of 64 MiB") as info:
        plan_upload(png, max_pixels=40_000_000, max_decode_bytes=64 * 2**20)
    assert info.value.status == 413
    small = cv2.imencode(".png", np.zeros((10, 10), np.uint8))[1].tobytes()
    assert plan_upload(small, max_pixels=100).decode_bytes == 100 * (1 + 3)


def test_large_jpegs_are_decoded_reduced_only_when_far_larger_than_the_model_input():
    from bench.serve.uploads import jpeg_reduction

    assert jpeg_reduction(4000, 3000, 256) == 4 and jpeg_reduction(4000, 3000, None) == 1
    assert jpeg_reduction(1600, 1200, 73) == 1  # 1.9 MP: decoded as evaluation decodes it
    big = cv2.imencode(".jpg", np.full((2400, 2400, 3), 120, np.uint8))[1].tobytes()
    plan = plan_upload(big, max_pixels=40_000_000, resize_short=256)
    assert plan.jpeg_reduce == 4 and plan.decode_bytes == 600 * 600 * 6


def test_predict_keeps_answering_beside_slow_uploads(model_dir, normal_images):
    args = ["--threads", "1", "--max-batch", "1", "--max-queue", "2", "--body-timeout", "3",
            "--max-inflight-bytes", str(1 << 20), "--max-bytes", str(200_000)]
    with running_server(str(model_dir), args) as url:
        port = int(url.rsplit(":", 1)[1])
        socks, answers = [], []
        for _ in range(30):  # far more than the 3 admission slots
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n\r\n"
                      .replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n") + b"1\r\n\xff\r\n")
            socks.append(s)
        try:
            time.sleep(0.5)
            latencies, codes = _normal_requests(url, normal_images, 10)
            assert codes == {"200": 10}, codes
            # Declared bodies count against the budget at once: 6 x 190 kB > 1 MiB.
            declared = []
            for _ in range(6):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 190000\r\n\r\n\xff")
                declared.append(s)
            time.sleep(0.5)
            statuses = []
            for s in declared:
                s.settimeout(0.2)
                try:
                    statuses.append(s.recv(100).split(b" ")[1])
                except socket.timeout:
                    statuses.append(b"pending")
            assert statuses.count(b"503") >= 1 and statuses.count(b"pending") == 6 - statuses.count(b"503"), statuses
            stats = httpx.get(url + "/stats").json()
            assert 0 < stats["inflight_bytes_peak"] <= 1 << 20
            # The trickling uploads are cut off when --body-timeout runs out.
            for s in socks[:3]:
                s.settimeout(10)
                answers.append(s.recv(200))
            assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        finally:
            for s in socks + declared:
                s.close()


def test_predict_keeps_answering_behind_huge_pngs(model_dir, normal_images):
    body = big_png(2400)  # 86 MiB to decode: the large-image thread
    with running_server(str(model_dir), ["--threads", "1"]) as url:
        _normal_requests(url, normal_images, 5)
        alone, codes = _normal_requests(url, normal_images, 20)
        assert codes == {"200": 20}
        stop, big_codes = threading.Event(), []

        def hammer():
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    big_codes.append(client.post(url + "/predict", content=body).status_code)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            loaded, codes = _normal_requests(url, normal_images, 20)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
    assert codes == {"200": 20}
    assert big_codes and set(big_codes) == {200}
    p99_alone, p99_loaded = _percentiles(alone)["p99_ms"], _percentiles(loaded)["p99_ms"]
    # The bar is 2x (bench serve-abuse measures it); on a shared 2-core test machine a
    # little absolute slack is allowed. Before the fix, a normal request waited seconds here.
    assert p99_loaded <= max(2 * p99_alone, p99_alone + 250), (p99_alone, p99_loaded)
