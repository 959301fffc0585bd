"""bench load against the real test server (started by test_serve's fixture) for about a second."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("paddle")
pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from bench.perf.load import load_images, parse_concurrency, run_load  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from test_serve import exported, image_paths, server  # noqa: E402,F401  (module fixtures)


def test_parse_concurrency():
    assert parse_concurrency("1,4,16") == [1, 4, 16]
    assert parse_concurrency(" 2 ") == [2]
    for bad in ("", "0", "a,b", "4,-1"):
        with pytest.raises(ConfigError):
            parse_concurrency(bad)


def test_load_reports_throughput_percentiles_and_server_batches(server, image_paths):
    images = [p.read_bytes() for p in image_paths]
    report = run_load(server, images, [1, 4], 0.6, warmup_s=0.2, timeout_s=30)
    assert [lv.concurrency for lv in report.levels] == [1, 4]
    for lv in report.levels:
        assert lv.errors == {}
        assert lv.ok == lv.requests > 0
        assert lv.throughput_rps == pytest.approx(lv.ok / lv.duration_s)
        lat = lv.latency_ms
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        # The server's own batch counts over the measured window cover exactly the requests sent in it
        # (within the few that were in flight at the window's edges).
        served = sum(int(k) * v for k, v in lv.server_batch_sizes.items())
        assert abs(served - lv.ok) <= lv.concurrency
    assert max(int(k) for k in report.levels[1].server_batch_sizes) > 1  # 4 in flight: batches form


def test_load_counts_errors_per_status_code(server, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    report = run_load(server, load_images(tmp_path), [2], 0.3, warmup_s=0.0)
    (lv,) = report.levels
    assert lv.ok == 0 and set(lv.errors) == {"422"} and lv.errors["422"] == lv.requests > 0
    # Without a single success there are no percentiles; the JSON says null, not NaN.
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["levels"][0]["latency_ms"]["p50_ms"] is None


def test_bench_load_cli_writes_json(server, image_paths, tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "load.json"
    status = main(["load", "--url", server + "/predict", "--images", str(image_paths[0].parent.parent),
                   "--concurrency", "2", "--duration", "0.4", "--warmup", "0.1", "--max-images", "8",
                   "--out", str(out)])
    assert status == 0
    table = capsys.readouterr().out
    assert "p99 ms" in table and "req/s" in table
    data = json.loads(out.read_text())
    assert data["images"] == 8 and data["url"].endswith("/predict")
    (level,) = data["levels"]
    assert level["concurrency"] == 2 and level["ok"] > 0 and level["errors"] == {}
    assert set(level["latency_ms"]) == {"mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"}


def test_bad_or_unreachable_url_is_a_config_error_before_measuring():
    from test_serve import free_port

    for bad in ("localhost:8000", "ftp://127.0.0.1/predict", "http://", "not a url"):
        with pytest.raises(ConfigError, match="--url"):
            run_load(bad, [b"x"], [1], 0.2, warmup_s=0.0)
    with pytest.raises(ConfigError, match="cannot reach URL http://127.0.0.1:"):
        run_load(f"http://127.0.0.1:{free_port()}", [b"x"], [1], 0.2, warmup_s=0.0, timeout_s=2)


def test_transport_errors_back_off_in_warm_up_and_measurement():
    import socket
    import threading

    # Answers /health, drops every POST without a reply: each request is a transport error.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    posts = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    head = conn.recv(65536)
                except OSError:
                    continue
                if head.startswith(b"GET /health"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                else:
                    posts.append(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        report = run_load(url, [b"\xff\xd8x"], [1], 0.6, warmup_s=0.6, timeout_s=5)
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    (lv,) = report.levels
    assert lv.ok == 0 and sum(lv.errors.values()) == lv.requests > 0 and set(lv.errors) <= {"read", "connect"}
    # Backing off 0.05, 0.1, 0.2, 0.4 ... s gives a handful of attempts per 0.6 s phase; a tight loop gives hundreds.
    assert len(posts) <= 16, len(posts)
