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


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The body of ``request`` (a Starlette request), at most ``max_bytes`` plus multipart framing.

    Raises:
        ApiError: 413 when the body is too large, 400 when the client went away mid-body.
    """
    from starlette.requests import ClientDisconnect

    content_type = request.headers.get("content-type", "")
    limit = max_bytes + (MULTIPART_OVERHEAD if content_type.startswith("multipart/") else 0)
    too_large = ApiError(413, f"request body too large: the limit is {max_bytes} bytes (--max-bytes)")
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


async def image_bytes(request: Any, max_bytes: int) -> bytes:
    """The uploaded image: the raw body, or the first file field of a ``multipart/form-data`` body.

    Raises:
        ApiError: 413 (too large), 422 (malformed multipart, or no file field), 400 (client gone).
    """
    body = await read_body(request, max_bytes)
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
