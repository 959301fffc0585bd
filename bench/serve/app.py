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

Dynamic batching (:class:`DynamicBatcher`): request handlers decode their image and run
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

Admission control: at most ``max_queue + max_batch`` ``/predict`` requests are in the
server at once (reading their body, decoding, queued or in inference). A request beyond
that is answered 503 at once, before its body is read, rather than waiting: a client under
overload learns it immediately and can back off, and the server's memory stays bounded by
``(max_queue + max_batch) * max_bytes`` of bodies plus one decoded image per decode thread.
"""

import asyncio
import collections
import contextlib
import logging
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Optional, Sequence

import numpy as np

from common.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# 40 MP covers any camera photo (a 45 MP frame is 8192x5464 ≈ 44.8 MP: raise the cap for
# those); decoding it needs 120 MB, which the server can afford a few times at once.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_QUEUE = 256
# Multipart framing (boundaries, part headers) on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# An oversized body is read and discarded up to this multiple of the limit before the 413
# goes out, so that an ordinary client sees the answer instead of a reset connection.
DRAIN_FACTOR = 4

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# JPEG start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) share
# the range but are not frames.
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}


class ApiError(Exception):
    """An HTTP error answer: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# -- image checks ---------------------------------------------------------------------------
def image_header_size(data: bytes) -> tuple[str, int, int]:
    """``(format, width, height)`` of a JPEG or PNG from its header alone, without decoding.

    Raises:
        ApiError: 415 when the bytes are neither JPEG nor PNG, 422 when the header is
            malformed or truncated.
    """
    if data.startswith(PNG_SIGNATURE):
        # The first chunk must be IHDR: length (4), type (4), width (4), height (4).
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ApiError(422, "malformed PNG: the IHDR header chunk is missing")
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            raise ApiError(422, f"malformed PNG: IHDR declares {width}x{height} pixels")
        return "png", int(width), int(height)
    if data.startswith(JPEG_SOI):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise ApiError(422, f"malformed JPEG: expected a marker at byte {pos}")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte before a marker
                pos += 1
                continue
            if marker in JPEG_STANDALONE:
                pos += 2
                continue
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if length < 2:
                raise ApiError(422, f"malformed JPEG: segment length {length} at byte {pos}")
            if marker in JPEG_SOF_MARKERS:
                if pos + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                if width == 0 or height == 0:
                    raise ApiError(422, f"unsupported JPEG: the frame header declares {width}x{height} pixels")
                return "jpeg", int(width), int(height)
            if marker in (0xDA, 0xD9):  # scan data or end of image before any frame header
                break
            pos += 2 + length
        raise ApiError(422, "malformed JPEG: no frame header (SOF) with the image size")
    raise ApiError(415, "unsupported media type: the body is not a JPEG or PNG image")


def decode_upload(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Check ``data`` (format, declared size) and decode it to HxWx3 uint8 RGB.

    The decoder is the one the data pipeline and ``read_image_rgb`` use, so the server sees
    the pixels that evaluation saw.

    Raises:
        ApiError: 415 (not JPEG/PNG), 413 (more than ``max_pixels`` declared), 422 (undecodable).
    """
    from harness.data import decode_image_rgb
    from common.errors import ImageDecodeError

    if not data:
        raise ApiError(422, "empty body: send the image bytes, or a multipart form with a file field")
    kind, width, height = image_header_size(data)
    if width * height > max_pixels:
        raise ApiError(
            413, f"image too large: {kind} declares {width}x{height} = {width * height} pixels, "
            f"more than the limit of {max_pixels} (--max-pixels)",
        )
    try:
        image = decode_image_rgb(data, f"uploaded {kind}")
    except ImageDecodeError as exc:
        raise ApiError(422, f"cannot decode the image: {exc}") from None
    if image.shape[0] * image.shape[1] > max_pixels:  # header and pixels disagree
        raise ApiError(413, f"image too large: {image.shape[1]}x{image.shape[0]} pixels (--max-pixels {max_pixels})")
    return image


# -- batching -------------------------------------------------------------------------------
def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Batch sizes the server runs: powers of two below ``max_batch``, and ``max_batch``."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return tuple(sizes)


@dataclass
class ServerStats:
    """Counters the server exposes at ``/stats`` (updated on the event loop thread only)."""

    started_at: float = field(default_factory=time.time)
    requests: collections.Counter = field(default_factory=collections.Counter)
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)
    images: int = 0
    inference_seconds: float = 0.0

    def to_dict(self, queue_depth: int) -> dict[str, Any]:
        """Plain-JSON form."""
        batches = sum(self.batch_sizes.values())
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "requests": {str(k): v for k, v in sorted(self.requests.items())},
            "images": self.images,
            "batches": batches,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "mean_batch_size": (self.images / batches) if batches else 0.0,
            "inference_seconds": round(self.inference_seconds, 6),
            "queue_depth": queue_depth,
        }


@dataclass
class _Pending:
    tensor: np.ndarray  # one preprocessed image, [3, crop, crop] float32
    future: "asyncio.Future[tuple[np.ndarray, int]]"


class DynamicBatcher:
    """Gathers concurrent requests into batches for one inference thread.

    ``infer(tensors) -> logits`` runs on a dedicated thread (Paddle predictors are not
    re-entrant and the math library already uses every core); the collector runs on the
    event loop. The queued items are preprocessed ``[3, crop, crop]`` tensors, never
    full-resolution images, so a full queue stays small. Start with :meth:`start` inside
    the running loop, stop with :meth:`stop`.
    """

    def __init__(
        self,
        infer: Callable[[list[np.ndarray]], np.ndarray],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int = DEFAULT_MAX_QUEUE,
        stats: Optional[ServerStats] = None,
    ):
        """``infer`` maps a list of preprocessed tensors to ``[N, C]`` logits; the rest bound the batches."""
        if max_batch < 1 or max_wait_s < 0 or max_queue < 1:
            raise ConfigError(f"need max_batch >= 1, max_wait_s >= 0, max_queue >= 1; got {max_batch}, {max_wait_s}, {max_queue}")
        self._infer = infer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.stats = stats or ServerStats()
        self._queue: Optional[asyncio.Queue[_Pending]] = None
        self._task: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None

    @property
    def running(self) -> bool:
        """True while the collector task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Start the collector on the running loop and the inference thread."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="batch-collector")

    async def stop(self) -> None:
        """Cancel the collector, fail what is still queued, and join the inference thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(ApiError(503, "server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, tensor: np.ndarray) -> tuple[np.ndarray, int]:
        """Queue one preprocessed ``[3, crop, crop]`` tensor; returns its logits row and its batch size.

        Raises:
            ApiError: 503 when the queue is full or the batcher is not running.
        """
        if self._queue is None or not self.running:
            raise ApiError(503, "the inference worker is not running")
        future: asyncio.Future[tuple[np.ndarray, int]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(tensor, future))
        except asyncio.QueueFull:
            raise ApiError(503, f"server busy: {self.max_queue} requests already queued; retry later") from None
        return await future

    async def _gather(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                # Whatever is already waiting joins at once; then wait for stragglers.
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        # A client that went away cancelled its future; do not spend inference on it.
        return [p for p in batch if not p.future.done()]

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                logits = await loop.run_in_executor(self._executor, self._infer, [p.tensor for p in batch])
            except Exception as exc:  # one failed batch must not stop the server
                if len(batch) == 1:
                    self._fail(batch[0], exc)
                    continue
                # One bad input must not fail its neighbours: find it by running each alone.
                log.warning("inference failed for a batch of %d (%s: %s); retrying each request alone",
                            len(batch), type(exc).__name__, exc)
                for p in batch:
                    if p.future.done():
                        continue
                    start = time.perf_counter()
                    try:
                        row = (await loop.run_in_executor(self._executor, self._infer, [p.tensor]))[0]
                    except Exception as single_exc:  # noqa: BLE001 - answered as this request's 500
                        self._fail(p, single_exc)
                        continue
                    self._record(1, time.perf_counter() - start)
                    if not p.future.done():
                        p.future.set_result((row, 1))
                continue
            self._record(len(batch), time.perf_counter() - start)
            for p, row in zip(batch, logits):
                if not p.future.done():
                    p.future.set_result((row, len(batch)))

    def _record(self, size: int, seconds: float) -> None:
        self.stats.inference_seconds += seconds
        self.stats.batch_sizes[size] += 1
        self.stats.images += size

    @staticmethod
    def _fail(pending: _Pending, exc: BaseException) -> None:
        log.error("inference failed for one request: %s: %s", type(exc).__name__, exc, exc_info=exc)
        if not pending.future.done():
            pending.future.set_exception(ApiError(500, f"inference failed: {type(exc).__name__}: {exc}"))


# -- the application ------------------------------------------------------------------------
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

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_bytes", "max_pixels", "max_queue", "default_topk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ConfigError(f"--max-wait-ms must be in [0, 10000], got {self.max_wait_ms!r}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax of a logits vector, in float64 (stable for large logits)."""
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def prepare_upload(data: bytes, predictor: Any, *, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Check, decode and preprocess one upload: its ``[3, crop, crop]`` float32 tensor and ``(width, height)``.

    Runs in a decode thread, one image at a time, so that only the small model input waits
    for a batch and a preprocessing failure fails this request alone. The fused kernel
    processes each image independently, so the tensor equals the image's row of a batched
    ``predictor.preprocess``.

    Raises:
        ApiError: as :func:`decode_upload`; 422 when the image cannot be preprocessed
            (e.g. an aspect ratio too extreme to resize).
    """
    image = decode_upload(data, max_pixels=max_pixels)
    try:
        # threads=1: the decode pool already runs several requests side by side.
        tensor = predictor.preprocess([image], threads=1)
    except ValueError as exc:  # kernels report bad images (and ConfigError is one) as ValueError
        raise ApiError(422, f"cannot preprocess the {image.shape[1]}x{image.shape[0]} image: {exc}") from None
    return np.ascontiguousarray(tensor[0]), (int(image.shape[1]), int(image.shape[0]))


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


def create_app(predictor: Any, settings: Optional[ServerSettings] = None) -> Any:
    """The FastAPI application serving ``predictor`` (a :class:`harness.predictor.Predictor`)."""
    # Route annotations are evaluated here, where ``Request`` is in scope: this module does
    # not use postponed annotations, so FastAPI can resolve them without a module-level import.
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    settings = settings or ServerSettings()
    if predictor.options.batch_size < settings.max_batch:
        raise ConfigError(
            f"the predictor's batch size {predictor.options.batch_size} is below --max-batch {settings.max_batch}"
        )
    model = predictor.model
    classes = list(model.classes) if model.classes is not None else None
    stats = ServerStats()
    batcher = DynamicBatcher(
        make_infer(predictor, settings), max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000.0,
        max_queue=settings.max_queue, stats=stats,
    )
    # Decoding is CPU-bound C code that releases the GIL; a few threads keep it off the loop.
    decode_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="decode")
    # Requests inside /predict; bounds the bodies and images held at once (module docstring).
    admission_limit = settings.max_queue + settings.max_batch
    admission = asyncio.Semaphore(admission_limit)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            decode_pool.shutdown(wait=False)

    app = FastAPI(title=f"tlbench: {model.model_name}", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.stats = stats

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

    async def read_body(request: Request) -> bytes:
        content_type = request.headers.get("content-type", "")
        limit = settings.max_bytes + (MULTIPART_OVERHEAD if content_type.startswith("multipart/") else 0)
        too_large = ApiError(413, f"request body too large: the limit is {settings.max_bytes} bytes (--max-bytes)")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > DRAIN_FACTOR * limit:
            raise too_large
        chunks, total = [], 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > DRAIN_FACTOR * limit:
                    raise too_large
                if total <= limit:
                    chunks.append(chunk)
        except ClientDisconnect:
            # Nobody is left to answer; counted, not logged as a server error.
            raise ApiError(400, "client disconnected before the body was complete") from None
        if total > limit:
            raise too_large
        return b"".join(chunks)

    async def image_bytes(request: Request) -> bytes:
        body = await read_body(request)
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return body
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def once() -> AsyncIterator[bytes]:
            yield body

        parser = MultiPartParser(request.headers, once(), max_files=4, max_fields=16, max_part_size=settings.max_bytes)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise ApiError(422, f"malformed multipart body: {exc.message}") from None
        try:
            upload = next((v for _, v in form.multi_items() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise ApiError(422, "the multipart form has no file field; send the image as e.g. -F file=@image.jpg")
            data = await upload.read()
        finally:
            await form.close()
        if len(data) > settings.max_bytes:
            raise ApiError(413, f"uploaded file too large: the limit is {settings.max_bytes} bytes (--max-bytes)")
        return data

    def parse_topk(request: Request) -> int:
        raw = request.query_params.get("topk")
        if raw is None:
            k = settings.default_topk
        else:
            try:
                k = int(raw)
            except ValueError:
                raise ApiError(422, f"topk must be an integer, got {raw!r}") from None
            if k < 1:
                raise ApiError(422, f"topk must be >= 1, got {k}")
        return k

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        start = time.perf_counter()
        k = parse_topk(request)
        # Refuse at once rather than queue: a waiting request would still hold its connection
        # and, once admitted, its body; the client is better served by a prompt 503.
        if admission.locked():
            raise ApiError(503, f"server busy: {admission_limit} requests already in progress; retry later")
        async with admission:
            data = await image_bytes(request)
            loop = asyncio.get_running_loop()
            tensor, (width, height) = await loop.run_in_executor(
                decode_pool, lambda: prepare_upload(data, predictor, max_pixels=settings.max_pixels)
            )
            del data
            decoded = time.perf_counter()
            logits, batch_size = await batcher.submit(tensor)
        probs = softmax(logits)
        top = np.argsort(-probs, kind="stable")[: min(k, len(probs))]
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
            "batch_size": batch_size,
            "timing_ms": {
                "decode": round((decoded - start) * 1000, 3),  # read + decode + preprocess
                "total": round((time.perf_counter() - start) * 1000, 3),
            },
        })

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
                "max_in_flight": admission_limit,
                "padded_batch_sizes": list(batch_buckets(settings.max_batch)) if settings.pad_batches else None,
            },
            "limits": {"max_bytes": settings.max_bytes, "max_pixels": settings.max_pixels,
                       "formats": ["image/jpeg", "image/png"]},
            "default_topk": settings.default_topk,
        })

    @app.get("/stats")
    async def server_stats() -> JSONResponse:
        return JSONResponse(stats.to_dict(batcher.queue_depth))

    return app


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
    "ApiError",
    "DynamicBatcher",
    "ServerSettings",
    "ServerStats",
    "batch_buckets",
    "bind_socket",
    "build_predictor",
    "create_app",
    "decode_upload",
    "image_header_size",
    "prepare_upload",
    "serve",
)
