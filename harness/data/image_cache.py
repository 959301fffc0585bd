"""Decoded images shared by the trials of a search: decode each file once per process.

A search trains every trial on the same files, and decoding a JPEG costs more than the
augmentation that follows it. :class:`DecodedImageCache` keeps decoded RGB arrays keyed on
the **file's content** (a BLAKE2b digest of its bytes), so a file that changes on disk is
decoded again and two copies of one photo share an entry. Reading the bytes is still done
on every call (it is what the key is made of, and it costs far less than decoding).

The cache is bounded in bytes of decoded pixels (least recently used entries go first):
``TLBENCH_DECODE_CACHE_MB`` sets the bound, default 1024 MiB, which holds about 7,000
decoded 224x224 photos; ``0`` turns the cache off, and so does ``TLBENCH_FAST_TRIALS=0``.
Cached arrays are read-only: transforms must copy before writing (they all do).
"""

from __future__ import annotations

import collections
import hashlib
import os
import threading
from typing import Optional

import numpy as np

from common.errors import ConfigError, ImageDecodeError
from common.validate import non_negative_int

from ..runtime import fast_trials_enabled

from .image_io import decode_image_rgb

CACHE_ENV = "TLBENCH_DECODE_CACHE_MB"
DEFAULT_CACHE_MB = 1024


class DecodedImageCache:
    """Thread-safe LRU of decoded ``HxWx3`` uint8 images keyed on file content, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = non_negative_int(max_bytes, "max_bytes")
        self._entries: "collections.OrderedDict[bytes, np.ndarray]" = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes of decoded pixels held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def read(self, path: str | os.PathLike) -> np.ndarray:
        """The decoded image of ``path`` (read-only), decoding it only if its content is new.

        Raises ImageDecodeError naming ``path`` like :func:`~harness.data.read_image_rgb`.
        """
        path = os.fspath(path)
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise ImageDecodeError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
        key = hashlib.blake2b(data.tobytes(), digest_size=20).digest()
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return cached
            self.misses += 1
        image = decode_image_rgb(data, path)
        image.flags.writeable = False
        if image.nbytes <= self.max_bytes:
            with self._lock:
                if key not in self._entries:
                    self._entries[key] = image
                    self._bytes += image.nbytes
                while self._bytes > self.max_bytes:
                    _, dropped = self._entries.popitem(last=False)
                    self._bytes -= dropped.nbytes
        return image

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.hits = self.misses = 0


_shared: Optional[DecodedImageCache] = None
_shared_lock = threading.Lock()


def configured_cache_bytes() -> int:
    """The bound from ``TLBENCH_DECODE_CACHE_MB`` (MiB; default 1024), 0 when fast trials are off."""
    if not fast_trials_enabled():
        return 0
    raw = os.environ.get(CACHE_ENV, str(DEFAULT_CACHE_MB)).strip()
    try:
        megabytes = float(raw)
    except ValueError:
        raise ConfigError(f"{CACHE_ENV} must be a number of MiB >= 0, got {raw!r}") from None
    if megabytes < 0:
        raise ConfigError(f"{CACHE_ENV} must be a number of MiB >= 0, got {raw!r}")
    return int(megabytes * (1 << 20))


def shared_cache() -> Optional[DecodedImageCache]:
    """The process-wide cache the data loaders use, or None when it is turned off."""
    global _shared
    max_bytes = configured_cache_bytes()
    if max_bytes == 0:
        return None
    with _shared_lock:
        if _shared is None or _shared.max_bytes != max_bytes:
            _shared = DecodedImageCache(max_bytes)
        return _shared
