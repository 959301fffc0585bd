"""A closed-loop HTTP load generator for ``POST /predict``, reporting like perf_analyzer.

For each concurrency level ``c``, ``c`` workers each keep exactly one request in flight
(send, wait for the answer, send the next) for ``duration`` seconds, cycling through the
given images. A short warm-up at the same concurrency runs first and is not counted, so
that connection set-up and the server's first batches do not skew the numbers.
Throughput is successful answers per second of the measurement window; latencies are
client-side (request sent → answer read) of successful requests; errors are counted per
HTTP status code (``"connect"`` / ``"timeout"`` / ``"read"`` for transport failures).

The URL is checked before anything is measured: it must be ``http://`` or ``https://``, and
the server must answer (any status) a ``GET /health``; an unreachable target is a
:class:`~common.errors.ConfigError`, not a report full of connection errors. A worker that
hits a transport failure (warm-up included) backs off exponentially before its next
request, so a dying server is not hammered in a tight loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from common.errors import ConfigError
from harness.data.files import JPEG_EXTENSIONS, list_images
from harness.metrics import latency_summary

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
# Back-off after a transport failure: first pause, doubled per consecutive failure up to the cap.
BACKOFF_START_S = 0.05
BACKOFF_MAX_S = 1.0
# The reachability probe gives up sooner than the requests themselves.
PROBE_TIMEOUT_S = 10.0
LOAD_IMAGE_EXTENSIONS = JPEG_EXTENSIONS | {".png"}


@dataclass(frozen=True)
class LevelResult:
    """Measurements at one concurrency level.

    ``server_batch_sizes`` is the server's own count of batches per size during the
    measured window (``{"4": 312}``: 312 batches of 4), read from its ``/stats``; empty
    when the target is not a ``bench serve`` server.
    """

    concurrency: int
    duration_s: float
    requests: int
    ok: int
    errors: dict[str, int]
    throughput_rps: float
    latency_ms: dict[str, float]
    server_batch_sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 4),
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(self.errors),
            "throughput_rps": self.throughput_rps,
            # No successful request leaves NaN percentiles; JSON has no NaN, so they become null.
            "latency_ms": {k: (None if math.isnan(v) else v) for k, v in self.latency_ms.items()},
            "server_batch_sizes": dict(self.server_batch_sizes),
        }


@dataclass(frozen=True)
class LoadReport:
    """A whole ``bench load`` run."""

    url: str
    images: int
    image_bytes: int
    levels: tuple[LevelResult, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"url": self.url, "images": self.images, "image_bytes": self.image_bytes,
                "levels": [lv.to_dict() for lv in self.levels]}


def load_images(source: str | Path, limit: int = 256) -> list[bytes]:
    """Encoded bytes of up to ``limit`` JPEG/PNG files under ``source`` (a file or a directory tree).

    Raises:
        ConfigError: nothing readable was found.
    """
    path = Path(source)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = list_images(path, extensions=LOAD_IMAGE_EXTENSIONS)
    else:
        raise ConfigError(f"--images {path} does not exist")
    if not files:
        raise ConfigError(f"--images {path} holds no {'/'.join(sorted(LOAD_IMAGE_EXTENSIONS))} files")
    if len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return [f.read_bytes() for f in files]


def parse_concurrency(text: str) -> list[int]:
    """``"1,4,16"`` → ``[1, 4, 16]``; every level must be a positive integer."""
    try:
        levels = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--concurrency must be comma-separated integers like 1,4,16, got {text!r}") from None
    if not levels or any(c < 1 for c in levels):
        raise ConfigError(f"--concurrency levels must be >= 1, got {text!r}")
    return levels


def validate_url(url: str) -> str:
    """``url`` stripped, after checking it is an absolute ``http://`` or ``https://`` URL with a host.

    Raises:
        ConfigError: anything else (``localhost:8000`` without a scheme, ``ftp://...``, garbage).
    """
    import httpx

    text = str(url).strip()
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"--url {url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"--url must be an http:// or https:// URL with a host, like http://127.0.0.1:8000; got {url!r}")
    return text


async def check_reachable(client: Any, base: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """One ``GET base/health``; any HTTP answer will do, a transport failure will not.

    Raises:
        ConfigError: ``cannot reach URL ...`` when no HTTP answer comes back.
    """
    import httpx

    try:
        response = await client.get(base + "/health", timeout=timeout_s)
        await response.aread()
    except httpx.TransportError as exc:
        raise ConfigError(f"cannot reach URL {base}: {type(exc).__name__}: {exc or 'no answer'}") from None


def _predict_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/predict") else url + "/predict"


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/predict")] if url.endswith("/predict") else url


async def _fetch_stats(client: Any, base: str) -> Optional[dict[str, Any]]:
    try:
        response = await client.get(base + "/stats")
        return response.json() if response.status_code == 200 else None
    except Exception:  # the target may not be a tlbench server; stats are optional
        return None


def _stats_delta(before: Optional[dict[str, Any]], after: Optional[dict[str, Any]]) -> dict[str, int]:
    if not before or not after:
        return {}
    b, a = before.get("batch_sizes", {}), after.get("batch_sizes", {})
    delta = {k: int(v) - int(b.get(k, 0)) for k, v in a.items()}
    return {k: v for k, v in sorted(delta.items(), key=lambda kv: int(kv[0])) if v > 0}


async def _run_level(client: Any, url: str, base: str, images: Sequence[bytes], concurrency: int, duration_s: float,
                     warmup_s: float) -> tuple[list[float], collections.Counter, int, float, dict[str, int]]:
    import httpx

    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    counter = iter(range(1 << 62))
    state = {"measuring": False}

    async def worker(stop_at: float) -> None:
        backoff = 0.0
        while time.perf_counter() < stop_at:
            body = images[next(counter) % len(images)]
            start = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers={"content-type": "application/octet-stream"})
                await response.aread()
                status: Optional[str] = None if response.status_code == 200 else str(response.status_code)
            except httpx.TimeoutException:
                status = "timeout"
            except httpx.ConnectError:
                status = "connect"
            except httpx.HTTPError:
                status = "read"
            elapsed = time.perf_counter() - start
            if state["measuring"]:
                if status is None:
                    latencies.append(elapsed)
                else:
                    errors[status] += 1
            if status in ("connect", "timeout", "read"):
                # Do not spin on a dead or dying server, in warm-up as in the measurement.
                backoff = min(BACKOFF_MAX_S, backoff * 2 if backoff else BACKOFF_START_S)
                await asyncio.sleep(min(backoff, max(0.0, stop_at - time.perf_counter())))
            else:
                backoff = 0.0

    if warmup_s > 0:
        await asyncio.gather(*(worker(time.perf_counter() + warmup_s) for _ in range(concurrency)))
    before = await _fetch_stats(client, base)
    state["measuring"] = True
    start = time.perf_counter()
    stop_at = start + duration_s
    await asyncio.gather(*(worker(stop_at) for _ in range(concurrency)))
    # In-flight requests finish after stop_at; the window ends with the last of them.
    window = time.perf_counter() - start
    batches = _stats_delta(before, await _fetch_stats(client, base))
    return latencies, errors, len(latencies) + sum(errors.values()), window, batches


async def run_load_async(
    url: str,
    images: Sequence[bytes],
    concurrency: Sequence[int],
    duration_s: float,
    *,
    warmup_s: float = 0.5,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> LoadReport:
    """Drive ``url`` at each concurrency level in turn (see the module docstring).

    Raises:
        ConfigError: bad arguments, a malformed ``url``, or a server that cannot be reached.
    """
    import httpx

    url = validate_url(url)
    if not images:
        raise ConfigError("no images to send")
    if duration_s <= 0 or warmup_s < 0 or timeout_s <= 0:
        raise ConfigError(f"need --duration > 0, warm-up >= 0 and timeout > 0; got {duration_s}, {warmup_s}, {timeout_s}")
    levels = [int(c) for c in concurrency]
    if not levels or any(c < 1 for c in levels):
        raise ConfigError(f"concurrency levels must be >= 1, got {list(concurrency)}")
    predict_url, base = _predict_url(url), _base_url(url)
    results = []
    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        await check_reachable(client, base, min(timeout_s, PROBE_TIMEOUT_S))
        for c in levels:
            latencies, errors, total, window, batches = await _run_level(
                client, predict_url, base, images, c, duration_s, warmup_s
            )
            ok = len(latencies)
            result = LevelResult(
                concurrency=c,
                duration_s=window,
                requests=total,
                ok=ok,
                errors=dict(sorted(errors.items())),
                throughput_rps=ok / window if window > 0 else 0.0,
                latency_ms=latency_summary(latencies),
                server_batch_sizes=batches,
            )
            log.info("concurrency %d: %.1f req/s, p50 %.1f ms, %d errors", c, result.throughput_rps,
                     result.latency_ms["p50_ms"], sum(errors.values()))
            results.append(result)
    return LoadReport(url=predict_url, images=len(images), image_bytes=sum(len(b) for b in images),
                      levels=tuple(results))


def run_load(url: str, images: Sequence[bytes], concurrency: Sequence[int], duration_s: float, **kwargs: Any) -> LoadReport:
    """Synchronous wrapper of :func:`run_load_async` (runs its own event loop)."""
    return asyncio.run(run_load_async(url, images, concurrency, duration_s, **kwargs))
