"""HTTP inference server for an exported model: FastAPI + uvicorn, with dynamic batching.

Endpoints
---------
- ``POST /predict[?topk=K]``: one JPEG or PNG image, as the raw request body or as a
  ``multipart/form-data`` file field; answers the top-K classes with softmax scores.
- ``GET /health``: 200 ``{"status": "ok"}`` while the inference worker runs, else 503.
- ``GET /metadata``: model, classes, input, preprocessing, predictor and batching settings.
- ``GET /stats``: request counts per status code and how many batches of each size ran.

Requests are checked before any pixel is decoded: the body size against ``max_bytes``
(413), the format from the file's magic bytes (415 unless JPEG or PNG), and the image
dimensions read from the PNG ``IHDR`` / JPEG ``SOFn`` header against ``max_pixels`` (413),
so a small file that declares 50000x50000 pixels never reaches the decoder. A file that
passes these checks but does not decode is a 422. Every error is JSON
``{"error": message, "status": code}``; one bad request never affects the others.

Dynamic batching (:class:`~bench.serve.batcher.DynamicBatcher`): request handlers decode their image and run
the model's preprocessing on it in a thread pool, and put the small ``3 x crop x crop``
float32 tensor on an asyncio queue (a full-resolution image never waits in the queue:
256 queued 40 MP images would hold 30 GB). One collector task takes the first waiting
tensor, then gathers more until ``max_batch`` or ``max_wait_ms`` after the first, and
hands the batch to a single inference thread (Paddle Inference). Batches are zero-padded to
a small set of sizes (powers of two up to ``max_batch``) so that oneDNN keeps one set of
primitives per size instead of rebuilding them for every batch size. While a batch runs,
new requests queue up and form the next batch, so the batch size grows with the load by
itself. When a batch fails, each of its requests is retried alone, so one input that
breaks inference fails only its own request.

Slow clients and memory: a request's body is read before it takes an admission slot, so
clients that trickle their uploads hold no slot a normal request needs. The body must arrive
within ``body_timeout_s`` (408 otherwise), and the bytes of all bodies held at once (being
received, or waiting to be decoded) stay within ``max_inflight_bytes`` (503 for a request
that would go over it).

Admission control: at most ``max_queue + max_batch`` ``/predict`` requests with a complete
body are in the server at once (decoding, queued or in inference). A request beyond that is
answered 503 at once rather than waiting: a client under overload learns it immediately and
can back off.

Decoding: the header gives the memory decoding will take (:func:`~bench.serve.uploads.plan_upload`);
over ``max_decode_bytes`` is a 413. Images that need more than 64 MiB are decoded one at a
time in a decode thread of their own, at a lower CPU priority, so a few huge images neither
multiply memory nor hold up the decode threads that ordinary requests use. Memory is thus
bounded by ``max_inflight_bytes`` of bodies, one large decode, and 64 MiB per ordinary decode
thread.
"""

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Optional, Sequence

import numpy as np

from common.errors import ConfigError
from common.validate import positive_int
from harness.metrics import softmax, topk

from .batcher import DEFAULT_MAX_QUEUE, DynamicBatcher, ServerStats, batch_buckets
from .errors import ApiError
from .request_body import (DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BYTES, DEFAULT_MAX_INFLIGHT_BYTES, BodyHold,
                           ByteBudget, image_bytes, parse_topk)
from .uploads import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_PIXELS, plan_upload, prepare_upload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """Limits and batching of the server (``bench serve`` flags)."""

    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_queue: int = DEFAULT_MAX_QUEUE
    default_topk: int = 5
    pad_batches: bool = True
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
    # False: JPEGs far larger than the model input are decoded reduced (uploads module docstring).
    full_decode: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_bytes", "max_pixels", "max_queue", "default_topk", "max_inflight_bytes",
                     "max_decode_bytes"):
            positive_int(getattr(self, name), f"--{name.replace('_', '-')}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ConfigError(f"--max-wait-ms must be in [0, 10000], got {self.max_wait_ms!r}")
        if not 0 < self.body_timeout_s <= 3600:
            raise ConfigError(f"--body-timeout must be in (0, 3600] seconds, got {self.body_timeout_s!r}")
        if self.max_inflight_bytes < self.max_bytes:
            raise ConfigError(f"--max-inflight-bytes ({self.max_inflight_bytes}) must be at least --max-bytes "
                              f"({self.max_bytes}), or no upload of the largest allowed size could be read")

    @property
    def admission_limit(self) -> int:
        """``/predict`` requests allowed in the server at once (module docstring: admission control)."""
        return self.max_queue + self.max_batch


# -- batcher wiring ---------------------------------------------------------------------------
def make_infer(predictor: Any, settings: ServerSettings) -> Callable[[list[np.ndarray]], np.ndarray]:
    """The batch function of the inference thread: stacking, padding, predictor."""
    buckets = batch_buckets(settings.max_batch)
    size = predictor.spec.crop_size

    def infer(tensors: list[np.ndarray]) -> np.ndarray:
        batch = np.stack(tensors)
        n = len(batch)
        if settings.pad_batches:
            target = next(b for b in buckets if b >= n)
            if target > n:
                batch = np.concatenate([batch, np.zeros((target - n, 3, size, size), np.float32)])
        return predictor.predict(batch)[:n]

    return infer


def make_batcher(predictor: Any, settings: ServerSettings, stats: ServerStats) -> DynamicBatcher:
    """The dynamic batcher feeding ``predictor``, after checking that it takes ``max_batch`` images at once.

    Raises:
        ConfigError: the predictor's batch size is below ``settings.max_batch``.
    """
    if predictor.options.batch_size < settings.max_batch:
        raise ConfigError(
            f"the predictor's batch size {predictor.options.batch_size} is below --max-batch {settings.max_batch}"
        )
    return DynamicBatcher(
        make_infer(predictor, settings), max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000.0,
        max_queue=settings.max_queue, stats=stats,
    )


# -- the application --------------------------------------------------------------------------
def create_app(predictor: Any, settings: Optional[ServerSettings] = None) -> Any:
    """The FastAPI application serving ``predictor`` (a :class:`harness.predictor.Predictor`)."""
    from fastapi import FastAPI

    settings = settings or ServerSettings()
    stats = ServerStats()
    batcher = make_batcher(predictor, settings, stats)
    # Decoding is CPU-bound C code that releases the GIL; a few threads keep it off the loop.
    decode_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="decode")
    # Huge images one at a time, at a lower CPU priority (module docstring: decoding).
    large_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode-large", initializer=_lower_priority)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            decode_pool.shutdown(wait=False)
            large_pool.shutdown(wait=False)

    app = FastAPI(title=f"tlbench: {predictor.model.model_name}", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.stats = stats
    add_error_handlers(app, stats)
    inflight = ByteBudget(settings.max_inflight_bytes)
    app.state.inflight = inflight
    add_predict_route(app, predictor, settings, batcher, (decode_pool, large_pool), inflight)
    add_info_routes(app, predictor, settings, batcher)
    return app


def _lower_priority() -> None:
    # On Linux a thread has its own nice value: raise this one's so that ordinary requests
    # win the CPU from a huge decode. Elsewhere (or when refused) the thread keeps its priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def add_error_handlers(app: Any, stats: ServerStats) -> None:
    """Answer every error as JSON ``{"error", "status"}`` and count it in ``stats``."""
    # Handler annotations are evaluated here, where ``Request`` is in scope: this module does
    # not use postponed annotations, so FastAPI can resolve them without a module-level import.
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def error(status: int, message: str) -> JSONResponse:
        stats.requests[status] += 1
        return JSONResponse({"error": message, "status": status}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error: {type(exc).__name__}")


def add_predict_route(app: Any, predictor: Any, settings: ServerSettings, batcher: DynamicBatcher,
                      pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor], inflight: ByteBudget) -> None:
    """``POST /predict``: body (timed, within the byte budget), admission, decode + preprocess, batch, answer."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    model = predictor.model
    classes = list(model.classes) if model.classes is not None else None
    stats = batcher.stats
    decode_pool, large_pool = pools
    resize_short = None if settings.full_decode else getattr(predictor.spec, "resize_short", None)
    # Requests past their body inside /predict; bounds the work queued at once (module docstring).
    admission_limit = settings.admission_limit
    admission = asyncio.Semaphore(admission_limit)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        start = time.perf_counter()
        k = parse_topk(request, settings.default_topk)
        hold = BodyHold(inflight)
        try:
            # The body first, under a time limit and the byte budget: a slow upload holds
            # neither an admission slot nor unbounded memory.
            data = await image_bytes(request, settings.max_bytes, hold=hold, timeout_s=settings.body_timeout_s)
            # Refuse at once rather than queue: the client is better served by a prompt 503.
            if admission.locked():
                raise ApiError(503, f"server busy: {admission_limit} requests already in progress; retry later")
            async with admission:
                plan = plan_upload(data, max_pixels=settings.max_pixels, max_decode_bytes=settings.max_decode_bytes,
                                   resize_short=resize_short)
                loop = asyncio.get_running_loop()
                tensor, (width, height) = await loop.run_in_executor(
                    large_pool if plan.large else decode_pool,
                    lambda: prepare_upload(data, predictor, max_pixels=settings.max_pixels, plan=plan),
                )
                del data
                hold.release()
                decoded = time.perf_counter()
                logits, batch_size = await batcher.submit(tensor)
        finally:
            hold.release()
        probs = softmax(np.asarray(logits, np.float64))
        top, _ = topk(probs, k)
        stats.requests[200] += 1
        return JSONResponse({
            "model": model.model_name,
            "predictions": [
                {
                    "class_id": int(i),
                    "label": classes[i] if classes is not None else str(int(i)),
                    "score": float(probs[i]),
                    "logit": float(logits[i]),
                }
                for i in top
            ],
            "image_size": [width, height],
            "decode_scale": f"1/{plan.jpeg_reduce}" if plan.jpeg_reduce > 1 else "full",
            "batch_size": batch_size,
            "timing_ms": {
                "decode": round((decoded - start) * 1000, 3),  # read + decode + preprocess
                "total": round((time.perf_counter() - start) * 1000, 3),
            },
        })


def add_info_routes(app: Any, predictor: Any, settings: ServerSettings, batcher: DynamicBatcher) -> None:
    """``GET /health``, ``GET /metadata`` and ``GET /stats``."""
    from fastapi.responses import JSONResponse

    model = predictor.model
    classes = list(model.classes) if model.classes is not None else None

    @app.get("/health")
    async def health() -> JSONResponse:
        if not batcher.running:
            return JSONResponse({"status": "unavailable", "reason": "inference worker stopped"}, status_code=503)
        return JSONResponse({"status": "ok", "model": model.model_name})

    @app.get("/metadata")
    async def metadata() -> JSONResponse:
        import kernels

        size = model.preprocess.crop_size
        return JSONResponse({
            "model": model.model_name,
            "model_dir": str(model.model_dir),
            "classes": classes,
            "num_classes": len(classes) if classes is not None else None,
            "input": {"shape": [None, 3, size, size], "dtype": "float32", "layout": "NCHW", "color_order": "RGB"},
            "preprocess": {
                **{k: v for k, v in model.preprocess.to_dict().items() if not k.startswith("train_")},
                "kernel": kernels.backend(),
            },
            "predictor": predictor.describe(),
            "batching": {
                "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms,
                "max_queue": settings.max_queue,
                "max_in_flight": settings.admission_limit,
                "padded_batch_sizes": list(batch_buckets(settings.max_batch)) if settings.pad_batches else None,
            },
            "limits": {"max_bytes": settings.max_bytes, "max_pixels": settings.max_pixels,
                       "max_decode_bytes": settings.max_decode_bytes, "max_inflight_bytes": settings.max_inflight_bytes,
                       "body_timeout_s": settings.body_timeout_s, "formats": ["image/jpeg", "image/png"]},
            "reduced_jpeg_decode": not settings.full_decode,
            "default_topk": settings.default_topk,
        })

    @app.get("/stats")
    async def server_stats() -> JSONResponse:
        inflight = app.state.inflight
        return JSONResponse({**batcher.stats.to_dict(batcher.queue_depth),
                             "inflight_bytes": inflight.held, "inflight_bytes_peak": inflight.peak})


# -- running it -------------------------------------------------------------------------------
def default_serve_threads(cores: int, backend: str) -> Optional[int]:
    """CPU threads of the serving predictor when ``--threads`` is not given: every core but one.

    The spare core decodes uploads and runs the HTTP loop. With every core in the predictor's
    OpenMP regions, a region waits for the core busy decoding a large upload, and a normal
    request's p99 behind four 36-megapixel PNGs went from 1.2-1.9x to 3.6x its unloaded p99 on
    two cores (``bench serve-abuse``). GPU backends take the math library's default.
    """
    if backend not in ("cpu", "cpu-plain"):
        return None
    return max(1, int(cores) - 1)


def build_predictor(model_dir: str, *, backend: str = "cpu", precision: str = "fp32", threads: Optional[int] = None,
                    max_batch: int = 8, warmup: bool = True) -> Any:
    """A Predictor for serving: batch size ``max_batch``, warmed up at every padded batch size."""
    from harness.predictor import Predictor, PredictorOptions

    predictor = Predictor(model_dir, PredictorOptions(backend=backend, precision=precision, batch_size=max_batch,
                                                      threads=threads))
    if warmup:
        for size in batch_buckets(max_batch):
            predictor.warmup(size)
    return predictor


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one; read it from ``getsockname()``).

    Binding before uvicorn starts turns "address in use" into a clear error and lets the
    caller print the real port.

    Raises:
        ConfigError: the port is out of range or the address cannot be bound.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port!r}")
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} does not resolve: {exc.strerror}") from None
    # proto must say TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto is IPPROTO_TCP, and without it Nagle + delayed ACKs add ~40 ms to every
    # keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(app: Any, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Run ``app`` with uvicorn on the bound ``sock`` until SIGINT/SIGTERM (graceful shutdown)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


__all__: Sequence[str] = (
    "ServerSettings",
    "add_error_handlers",
    "add_info_routes",
    "add_predict_route",
    "bind_socket",
    "build_predictor",
    "create_app",
    "make_batcher",
    "make_infer",
    "serve",
)
