"""Reading a ``/predict`` request: the body within its size limit, the image out of a raw or
multipart body, and the ``?topk=`` parameter. Every failure is an :class:`ApiError`."""

from __future__ import annotations

from typing import Any, AsyncIterator

from .errors import ApiError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# Multipart framing (boundaries, part headers) on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# An oversized body is read and discarded up to this multiple of the limit before the 413
# goes out, so that an ordinary client sees the answer instead of a reset connection.
DRAIN_FACTOR = 4


DEFAULT_BODY_TIMEOUT_S = 10.0
DEFAULT_MAX_INFLIGHT_BYTES = 256 * 1024 * 1024


class ByteBudget:
    """Bytes of request bodies the server holds at once, over every request.

    Used from the event loop thread only, so plain integers suffice. A request takes bytes
    as its body arrives (its declared length at once, when it declares one) and gives them
    back when its image has been decoded; a request that would go over the budget is
    answered 503 instead of being read.
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.held = 0
        self.peak = 0

    def take(self, n: int) -> bool:
        """Take ``n`` bytes; False (nothing taken) when that would exceed the limit."""
        if self.held + n > self.limit:
            return False
        self.held += n
        self.peak = max(self.peak, self.held)
        return True

    def give(self, n: int) -> None:
        """Give back ``n`` bytes taken earlier."""
        self.held = max(0, self.held - n)


class BodyHold:
    """The bytes one request holds in a :class:`ByteBudget`; :meth:`release` gives them back (once)."""

    def __init__(self, budget: "ByteBudget | None") -> None:
        self.budget = budget
        self.bytes = 0

    def grow_to(self, n: int) -> bool:
        """Hold at least ``n`` bytes in all; False when the budget has no room for them."""
        if self.budget is None or n <= self.bytes:
            return True
        if not self.budget.take(n - self.bytes):
            return False
        self.bytes = n
        return True

    def release(self) -> None:
        """Give every held byte back."""
        if self.budget is not None and self.bytes:
            self.budget.give(self.bytes)
        self.bytes = 0


async def read_body(request: Any, max_bytes: int, *, hold: "BodyHold | None" = None,
                    timeout_s: "float | None" = None) -> bytes:
    """The body of ``request`` (a Starlette request), at most ``max_bytes`` plus multipart framing.

    With ``hold``, the bytes received count against its budget as they arrive (a declared
    ``Content-Length`` is taken at once). With ``timeout_s``, the whole body must arrive within
    that many seconds: a client that trickles its upload is cut off instead of holding memory
    and a connection for as long as it likes.

    Raises:
        ApiError: 413 when the body is too large, 408 when it did not arrive in time, 503 when
            the budget of bytes in flight is spent, 400 when the client went away mid-body.
    """
    import asyncio

    from starlette.requests import ClientDisconnect

    hold = hold or BodyHold(None)
    content_type = request.headers.get("content-type", "")
    limit = max_bytes + (MULTIPART_OVERHEAD if content_type.startswith("multipart/") else 0)
    too_large = ApiError(413, f"request body too large: the limit is {max_bytes} bytes (--max-bytes)")
    busy = ApiError(503, "server busy: the uploads in progress hold the --max-inflight-bytes budget; retry later")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > DRAIN_FACTOR * limit:
            raise too_large
        if not hold.grow_to(min(int(declared), limit)):
            raise busy
    chunks: list[bytes] = []

    async def receive() -> int:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > DRAIN_FACTOR * limit:
                raise too_large
            if total <= limit:
                if not hold.grow_to(total):
                    raise busy
                chunks.append(chunk)
        return total

    try:
        total = await asyncio.wait_for(receive(), timeout_s) if timeout_s else await receive()
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s (--body-timeout)") from None
    except ClientDisconnect:
        # Nobody is left to answer; counted, not logged as a server error.
        raise ApiError(400, "client disconnected before the body was complete") from None
    if total > limit:
        raise too_large
    return b"".join(chunks)


async def image_bytes(request: Any, max_bytes: int, *, hold: "BodyHold | None" = None,
                      timeout_s: "float | None" = None) -> bytes:
    """The uploaded image: the raw body, or the first file field of a ``multipart/form-data`` body.

    ``hold`` and ``timeout_s`` as for :func:`read_body`.

    Raises:
        ApiError: 413 (too large), 422 (malformed multipart, or no file field), 400 (client gone),
            408 (too slow), 503 (bytes in flight).
    """
    body = await read_body(request, max_bytes, hold=hold, timeout_s=timeout_s)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return body
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, once(), max_files=4, max_fields=16, max_part_size=max_bytes)
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
    if len(data) > max_bytes:
        raise ApiError(413, f"uploaded file too large: the limit is {max_bytes} bytes (--max-bytes)")
    return data


def parse_topk(request: Any, default: int) -> int:
    """The ``?topk=`` query parameter of ``request``, ``default`` when absent.

    Raises:
        ApiError: 422 when it is not an integer >= 1.
    """
    raw = request.query_params.get("topk")
    if raw is None:
        k = default
    else:
        try:
            k = int(raw)
        except ValueError:
            raise ApiError(422, f"topk must be an integer, got {raw!r}") from None
        if k < 1:
            raise ApiError(422, f"topk must be >= 1, got {k}")
    return k
