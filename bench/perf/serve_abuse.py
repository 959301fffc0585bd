"""How ``bench serve`` holds up under abuse: a normal request's latency alone, behind huge PNGs,
and beside slow uploads.

The server runs in its own process (``python -m bench.cli serve``) on loopback. One client
thread sends normal images one after another and records their latency; meanwhile

- ``big-png``: ``big_clients`` threads keep posting a small PNG that declares a huge 16-bit
  RGBA image (``big_size`` x ``big_size``: 280 kB on the wire for 6000 x 6000, 540 MB decoded);
- ``slow-upload``: ``slow_clients`` sockets each declare a large body and send one byte every
  ``slow_interval_s`` seconds.

The result gives p50/p99 of the normal requests in each phase, the ratio to the unloaded p99,
the status codes seen, and the server's peak bytes in flight (from ``/stats``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from common.errors import ConfigError
from common.machine import machine_facts


def big_png(size: int) -> bytes:
    """A valid ``size x size`` 16-bit RGBA PNG of zeros (compresses to ~280 kB at 6000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + 8 * size)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 64) for _ in range(size // 64)]
    parts.append(compressor.compress(row * (size % 64)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", size, size, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model: str, extra_args: Sequence[str] = (), *, timeout_s: float = 120) -> Iterator[str]:
    """``bench serve`` on a free loopback port in a subprocess; yields its base URL once /health answers."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "bench.cli", "serve", "--model", str(model), "--port", str(port), *extra_args]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise ConfigError(f"bench serve exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise ConfigError(f"bench serve did not answer /health within {timeout_s:g} s")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, np.float64)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())} if a.size else {"n": 0}


def _normal_requests(url: str, images: Sequence[bytes], count: int) -> tuple[list[float], Counter]:
    import httpx

    latencies, codes = [], Counter()
    with httpx.Client(timeout=60.0) as client:
        for i in range(count):
            t = time.perf_counter()
            try:
                status = client.post(url + "/predict", content=images[i % len(images)]).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append((time.perf_counter() - t) * 1000)
            codes[str(status)] += 1
    return latencies, codes


def _hammer_big(url: str, body: bytes, stop: threading.Event, codes: Counter) -> None:
    import httpx

    with httpx.Client(timeout=120.0) as client:
        while not stop.is_set():
            try:
                codes[str(client.post(url + "/predict", content=body).status_code)] += 1
            except httpx.HTTPError as exc:
                codes[type(exc).__name__] += 1


def _trickle(port: int, declared: int, interval_s: float, stop: threading.Event, codes: Counter) -> None:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     f"Content-Length: {declared}\r\n\r\n".encode())
        sock.settimeout(interval_s)
        while not stop.is_set():
            try:
                answer = sock.recv(200)
                codes[answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/") else "closed"] += 1
                return
            except socket.timeout:
                sock.sendall(b"\xff")
    codes["still open"] += 1


def _phase(url: str, images: Sequence[bytes], count: int, load: Optional[tuple], stop_after: float = 0) -> dict[str, Any]:
    import httpx

    stop, load_codes, threads = threading.Event(), Counter(), []
    if load is not None:
        target, args, n = load
        threads = [threading.Thread(target=target, args=(*args, stop, load_codes), daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # let the load take hold
    try:
        latencies, codes = _normal_requests(url, images, count)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=stop_after or 120)
    stats = httpx.get(url + "/stats", timeout=10).json()
    return {**_percentiles(latencies), "status": dict(codes), "load_status": dict(load_codes),
            "inflight_bytes_peak": stats.get("inflight_bytes_peak")}


def run_abuse(model: str, images: Sequence[bytes], *, requests: int = 100, big_clients: int = 4, big_size: int = 6000,
              slow_clients: int = 100, slow_interval_s: float = 2.0, server_args: Sequence[str] = ()) -> dict[str, Any]:
    """Measure the three phases against a fresh server; a JSON-ready record."""
    if not images:
        raise ConfigError("run_abuse needs at least one normal image")
    body = big_png(big_size)
    phases: dict[str, Any] = {}
    with running_server(model, server_args) as url:
        port = int(url.rsplit(":", 1)[1])
        _normal_requests(url, images, 10)  # warm-up
        phases["unloaded"] = _phase(url, images, requests, None)
        phases["big-png"] = _phase(url, images, requests, (_hammer_big, (url, body), big_clients))
        phases["slow-upload"] = _phase(url, images, requests, (_trickle, (port, 1 << 20, slow_interval_s), slow_clients),
                                       stop_after=slow_interval_s + 5)
    base = phases["unloaded"]["p99_ms"]
    for name in ("big-png", "slow-upload"):
        phases[name]["p99_vs_unloaded"] = phases[name]["p99_ms"] / base if base else None
    return {"phases": phases, "big_png_bytes": len(body), "big_size": big_size, "big_clients": big_clients,
            "slow_clients": slow_clients, "slow_interval_s": slow_interval_s, "requests": requests,
            "server_args": list(server_args), "environment": machine_facts(model=str(model), pid=os.getpid())}
