"""Preprocessing engine: the fused kernel against the reference op chain, JPEG decode, and the copy bandwidth."""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from common.errors import ConfigError, DatasetError
from common.validate import at_least


MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Row:
    """One measurement: what ran, on which images, how fast."""

    images: str  # image set label
    stage: str  # decode | preprocess | end-to-end
    impl: str
    threads: int
    img_per_s: float  # wall clock
    ms_per_batch: float  # wall clock
    cpu_ms_per_image: float  # process CPU time (all threads) per image
    speedup: Optional[float] = None  # wall-clock, vs the reference row of the same stage, images, threads
    cpu_speedup: Optional[float] = None  # the same ratio of CPU time per image
    bound_img_per_s: Optional[float] = None  # bytes-moved bound (fused preprocessing rows)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"--large-size must look like 2000x1500, got {text!r}") from exc
    if w < 1 or h < 1:
        raise ConfigError(f"--large-size must be positive, got {text!r}")
    return w, h


def _load_jpegs(root: Path, count: int) -> list[bytes]:
    if not root.is_dir():
        raise DatasetError(f"--data-root {root} is not a directory (expected a folder of JPEG images)")
    from harness.data.files import JPEG_EXTENSIONS, list_images  # noqa: PLC0415

    files = list_images(root, extensions=JPEG_EXTENSIONS)
    if not files:
        raise DatasetError(f"no .jpg/.jpeg files under --data-root {root}")
    return [p.read_bytes() for p in files[:count]]


def _make_large(seeds: Sequence[bytes], count: int, size: tuple[int, int]) -> list[bytes]:
    """Large photo-like JPEGs: dataset images upscaled (bicubic) plus mild noise, quality 90."""
    import cv2  # noqa: PLC0415

    rng = np.random.default_rng(0)
    blobs = []
    for i in range(count):
        img = cv2.imdecode(np.frombuffer(seeds[i % len(seeds)], np.uint8), cv2.IMREAD_COLOR)
        big = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC).astype(np.int16)
        big += rng.integers(-6, 7, big.shape, dtype=np.int16)
        ok, enc = cv2.imencode(".jpg", np.clip(big, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise DatasetError("OpenCV could not encode a generated JPEG")
        blobs.append(enc.tobytes())
    return blobs


@dataclass(frozen=True)
class Timing:
    """Median wall-clock seconds of one call, and the process CPU seconds of that same repetition.

    CPU time (all threads of the process) is what a call costs in cores; on a shared machine it
    is also far less disturbed by other processes than wall-clock time.
    """

    wall: float
    cpu: float


def _measure(fn: Callable[[], Any], repeats: int) -> Timing:
    fn()  # warm-up: caches, thread pools, lazy imports
    samples = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        samples.append((time.perf_counter() - wall, time.process_time() - cpu))
    samples.sort()
    return Timing(*samples[len(samples) // 2])


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


BANDWIDTH_BUFFER_BYTES = 256 * 2**20  # far beyond the caches


def memory_bandwidth_gbs() -> float:
    """Sustained single-thread copy bandwidth (bytes read + written per second, GB/s)."""
    src = np.ones(BANDWIDTH_BUFFER_BYTES // 8, np.float64)
    dst = np.empty_like(src)
    seconds = _measure(lambda: np.copyto(dst, src), 3).wall
    return 2 * src.nbytes / seconds / 1e9


def fused_bytes_per_image(shape: tuple[int, int], resize_short: int, crop: int, out_itemsize: int = 4) -> float:
    """Bytes the fused kernel must move for one image: source rows it samples (the crop's column
    span, whole 64-byte lines) plus the output it writes."""
    from kernels.reference import resize_crop_geometry  # noqa: PLC0415

    h, w = shape
    new_h, new_w, top, left = resize_crop_geometry(h, w, resize_short, crop)
    scale_y, scale_x = h / new_h, w / new_w
    ys = np.floor((np.arange(top, top + crop) + 0.5) * scale_y - 0.5).astype(np.int64)
    rows = np.unique(np.clip(np.concatenate([ys, ys + 1]), 0, h - 1)).size
    x_first = max(0.0, (left + 0.5) * scale_x - 0.5)
    x_last = min(w - 1.0, (left + crop - 0.5) * scale_x - 0.5 + 1)
    span = (x_last - x_first + 1) * 3
    span = min(np.ceil(span / 64) * 64 + 64, w * 3)
    return rows * span + 3 * crop * crop * out_itemsize


def environment(threads: int) -> dict[str, Any]:
    """Machine facts plus OpenCV, simplejpeg and the kernels' backend."""
    import cv2  # noqa: PLC0415

    import kernels  # noqa: PLC0415
    from kernels import decode  # noqa: PLC0415

    from common.machine import machine_facts  # noqa: PLC0415

    return machine_facts(
        threads_all=threads,
        opencv=cv2.__version__,
        simplejpeg=getattr(decode.simplejpeg, "__version__", None) if decode.simplejpeg else None,
        backend=kernels.backend(),
    )


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything; returns ``{"environment": ..., "rows": [...]}``."""
    import cv2  # noqa: PLC0415

    import kernels  # noqa: PLC0415
    from common.machine import usable_cores  # noqa: PLC0415
    from kernels.decode import decode_jpeg  # noqa: PLC0415

    for flag in ("count", "batch_size", "crop_size", "resize_short", "repeats"):
        at_least(getattr(args, flag), f"--{flag.replace('_', '-')}", 1)
    at_least(args.large_count, "--large-count", 0)
    if args.crop_size > args.resize_short:
        raise ConfigError(f"--crop-size {args.crop_size} must not exceed --resize-short {args.resize_short}")
    if kernels.backend() != "cpu-native":
        raise ConfigError("the fused kernel is not built (kernels.backend() is 'reference'); "
                          "run `pip install -e .` with a C++ compiler, and unset TLBENCH_KERNELS")
    all_threads = args.threads or usable_cores()
    kw = dict(resize_short=args.resize_short, crop_size=args.crop_size, mean=MEAN, std=STD)
    flowers = _load_jpegs(Path(args.data_root), args.count)
    sets = {f"flowers12 ({len(flowers)})": flowers}
    if args.large_count:
        size = _parse_size(args.large_size)
        sets[f"{size[0]}x{size[1]} ({args.large_count})"] = _make_large(flowers, args.large_count, size)
    bandwidth = memory_bandwidth_gbs()
    bs, reps = args.batch_size, args.repeats
    default_cv2_threads = cv2.getNumThreads()

    def cv2_decode(blob: bytes) -> np.ndarray:
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    decoders = {
        "opencv": cv2_decode,
        "simplejpeg": lambda b: decode_jpeg(b),
        "simplejpeg-dct": lambda b: decode_jpeg(b, min_side=args.resize_short),
    }
    rows: list[Row] = []
    try:
        for label, blobs in sets.items():
            n = len(blobs)
            images = [cv2_decode(b) for b in blobs]
            batches = _batches(images, bs)
            blob_batches = _batches(blobs, bs)
            nb = len(batches)

            def row(stage: str, impl: str, threads: int, t: Timing, base: Optional[Timing] = None,
                    bound_img_per_s: Optional[float] = None) -> Row:
                return Row(label, stage, impl, threads, n / t.wall, t.wall / nb * 1e3, t.cpu / n * 1e3,
                           speedup=base.wall / t.wall if base else None,
                           cpu_speedup=base.cpu / t.cpu if base else None, bound_img_per_s=bound_img_per_s)

            cv2.setNumThreads(1)
            for name, dec in decoders.items():
                rows.append(row("decode", name, 1, _measure(lambda: [dec(b) for b in blobs], reps)))
            bytes_per_image = statistics.mean(fused_bytes_per_image(im.shape[:2], args.resize_short, args.crop_size)
                                              for im in images)
            bound = bandwidth * 1e9 / bytes_per_image
            out = np.empty((bs, 3, args.crop_size, args.crop_size), np.float32)
            for threads in sorted({1, all_threads}):
                cv2.setNumThreads(1 if threads == 1 else default_cv2_threads)
                t_ref = _measure(lambda: [kernels.preprocess_reference(b, **kw) for b in batches], reps)
                rows.append(row("preprocess", "reference op chain", threads, t_ref))

                def fused_all() -> None:
                    for b in batches:
                        kernels.preprocess(b, threads=threads, out=out[: len(b)], **kw)

                rows.append(row("preprocess", "fused", threads, _measure(fused_all, reps), t_ref, bound))
                pool = ThreadPoolExecutor(threads) if threads > 1 else None

                def decode_batch(dec: Callable[[bytes], np.ndarray], blob_batch: Sequence[bytes]) -> list[np.ndarray]:
                    return list(pool.map(dec, blob_batch)) if pool else [dec(b) for b in blob_batch]

                t_e2e_ref = _measure(
                    lambda: [kernels.preprocess_reference(decode_batch(cv2_decode, bb), **kw) for bb in blob_batches], reps)
                rows.append(row("end-to-end", "opencv + reference", threads, t_e2e_ref))
                for name in ("simplejpeg", "simplejpeg-dct"):
                    dec = decoders[name]
                    t = _measure(
                        lambda: [kernels.preprocess(decode_batch(dec, bb), threads=threads, **kw) for bb in blob_batches],
                        reps)
                    rows.append(row("end-to-end", f"{name} + fused", threads, t, t_e2e_ref))
                if pool:
                    pool.shutdown()
    finally:
        cv2.setNumThreads(default_cv2_threads)
    env = environment(all_threads)
    env["memory_bandwidth_gbs"] = round(bandwidth, 2)
    env["batch_size"] = bs
    env["crop_size"] = args.crop_size
    env["resize_short"] = args.resize_short
    return {"environment": env, "rows": [asdict(r) for r in rows]}
