"""Parity and timing of the CUDA preprocessing kernel (run by bench/gpu_check.sh).

Needs numpy and CuPy on a CUDA machine; uses PyTorch when present (tensor input, DLPack hand-off)
and never imports Paddle or the harness. The reference is ``kernels.reference`` (OpenCV when
installed, else its bit-exact numpy transcription of cv2.resize INTER_LINEAR).

Exit status: 0 when every parity check is within one uint8 level (the contract; 0 expected),
1 otherwise, 2 when the machine cannot run the check (no CuPy or GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from kernels import reference  # noqa: E402
from kernels.cuda import library_path, preprocess_cuda  # noqa: E402

from bench.paths import BENCHMARK_DATASET  # noqa: E402
from common.machine import machine_facts  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ONE_LEVEL = 1.0 / 255.0 / min(STD)
FLOWERS = BENCHMARK_DATASET
ODD_SIZES = [(1, 1), (3000, 20), (20, 3000), (17, 5), (5, 17), (2, 3), (224, 224), (375, 500), (512, 768), (1500, 2000)]


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gradients plus noise: photo-like content where resampling errors would show."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 127 + 60 * np.sin(x / max(w, 1) * 7 + rng.uniform(0, 3)) * np.cos(y / max(h, 1) * 5)
    img = np.stack([base, 255 - base, np.roll(base, 3, axis=1)], axis=2) + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def flowers_images(limit: int) -> list[np.ndarray]:
    """Up to ``limit`` decoded flowers12 JPEGs (RGB), or [] when the dataset or a decoder is missing."""
    files = sorted(FLOWERS.glob("*/*/*.jpg"))[:limit] if FLOWERS.is_dir() else []
    images = []
    for f in files:
        data = f.read_bytes()
        try:
            import simplejpeg  # noqa: PLC0415

            images.append(simplejpeg.decode_jpeg(data, colorspace="RGB"))
        except ImportError:
            try:
                import cv2  # noqa: PLC0415
            except ImportError:
                return []
            images.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy())
    return images


def parity(cp, images: list[np.ndarray], label: str, dtype: str, resize_short: int = 256, crop: int = 224,
           device_images=None) -> dict:
    """Compare the CUDA output with the reference for one batch; returns a result record."""
    ref = reference.preprocess_reference(images, resize_short=resize_short, crop_size=crop, mean=MEAN, std=STD,
                                         dtype=dtype)
    dev = device_images if device_images is not None else [cp.asarray(im) for im in images]
    out = preprocess_cuda(dev, resize_short=resize_short, crop_size=crop, mean=MEAN, std=STD, dtype=dtype)
    cp.cuda.get_current_stream().synchronize()
    got = cp.asnumpy(out)
    diff = np.abs(got.astype(np.float32) - ref.astype(np.float32))
    tol = ONE_LEVEL + (0.01 if dtype == "float16" else 1e-6)
    record = {
        "check": label,
        "dtype": dtype,
        "images": len(images),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "exact_fraction": float(np.mean(got.view(np.uint8) == ref.view(np.uint8))) if diff.size else 1.0,
        "ok": bool(diff.size == 0 or diff.max() <= tol),
    }
    print(f"  {'ok  ' if record['ok'] else 'FAIL'} {label:<34} {dtype:<8} max|diff| {record['max_abs_diff']:.3g}"
          f"  bytes identical {record['exact_fraction']:.6f}")
    return record


def time_batch(cp, images: list[np.ndarray], label: str, repeats: int, dtype: str = "float32") -> dict:
    """CuPy-event timing of one batch already on the device (plus the upload, for context)."""
    stream = cp.cuda.get_current_stream()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record(stream)
    dev = [cp.asarray(im) for im in images]
    stop.record(stream)
    stop.synchronize()
    upload_ms = cp.cuda.get_elapsed_time(start, stop)
    out = cp.empty((len(images), 3, 224, 224), dtype=dtype)
    for _ in range(3):  # warm-up: module load, first launch
        preprocess_cuda(dev, resize_short=256, crop_size=224, mean=MEAN, std=STD, dtype=dtype, out=out)
    times = []
    for _ in range(repeats):
        start.record(stream)
        preprocess_cuda(dev, resize_short=256, crop_size=224, mean=MEAN, std=STD, dtype=dtype, out=out)
        stop.record(stream)
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    wall = time.perf_counter()
    for _ in range(repeats):
        preprocess_cuda(dev, resize_short=256, crop_size=224, mean=MEAN, std=STD, dtype=dtype, out=out)
    stream.synchronize()
    wall_ms = (time.perf_counter() - wall) / repeats * 1e3
    ms = float(np.median(times))
    out_bytes = out.nbytes
    in_bytes = sum(im.nbytes for im in images)
    record = {
        "batch": label,
        "dtype": dtype,
        "images": len(images),
        "kernel_ms_per_batch": ms,
        "img_per_s": len(images) / ms * 1e3,
        "host_wall_ms_per_batch": wall_ms,
        "upload_ms_per_batch": upload_ms,
        "output_gb_per_s": out_bytes / ms / 1e6,
        "input_mb": in_bytes / 1e6,
    }
    print(f"  {label:<28} {dtype:<8} {ms:8.3f} ms/batch  {record['img_per_s']:12,.0f} img/s"
          f"  (host loop {wall_ms:.3f} ms, upload {upload_ms:.2f} ms, output {record['output_gb_per_s']:.1f} GB/s)")
    return record


def main(argv=None) -> int:
    """Run every check and timing; print them and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--repeats", type=int, default=20, help="timed launches per batch (median)")
    args = parser.parse_args(argv)
    try:
        import cupy as cp  # noqa: PLC0415
    except ImportError:
        print("CuPy is not installed: this check needs a CUDA machine with CuPy", file=sys.stderr)
        return 2
    try:
        n_devices = cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError as exc:
        print(f"no usable CUDA device: {exc}", file=sys.stderr)
        return 2
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    env = machine_facts(
        device=name,
        devices=n_devices,
        compute_capability=f"{props['major']}.{props['minor']}",
        driver_version=cp.cuda.runtime.driverGetVersion(),
        runtime_version=cp.cuda.runtime.runtimeGetVersion(),
        cupy=cp.__version__,
        library=str(library_path()),
        reference_resize="opencv " + reference.cv2.__version__ if reference.cv2 is not None else "numpy transcription",
    )
    try:
        import torch  # noqa: PLC0415

        env["torch"] = torch.__version__
    except ImportError:
        torch = None
    print("== environment")
    for k, v in env.items():
        print(f"  {k}: {v}")

    rng = np.random.default_rng(0)
    checks = []
    print("== parity against kernels.reference (contract: <= 1 uint8 level; expected: identical)")
    odd = [smooth_image(rng, h, w) for h, w in ODD_SIZES]
    noise = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ODD_SIZES]
    for dtype in ("float32", "float16"):
        checks.append(parity(cp, odd, "odd sizes, smooth", dtype))
        checks.append(parity(cp, noise, "odd sizes, noise", dtype))
    mixed = [smooth_image(rng, int(h), int(w)) for h, w in rng.integers(1, 700, (40, 2))]
    checks.append(parity(cp, mixed, "40 random sizes, 72->64", "float32", resize_short=72, crop=64))
    big = smooth_image(rng, 900, 1300)
    dev_big = cp.asarray(big)
    views = [dev_big[100:700, 200:1100], dev_big[::1, 5:905]]  # row-strided device views, no copy
    checks.append(parity(cp, [big[100:700, 200:1100], big[:, 5:905]], "row-strided device views", "float32",
                         device_images=views))
    flowers = flowers_images(64)
    if flowers:
        checks.append(parity(cp, flowers, f"flowers12 ({len(flowers)})", "float32"))
    if torch is not None and torch.cuda.is_available():
        t_images = [torch.from_numpy(im).cuda() for im in odd]
        checks.append(parity(cp, odd, "torch CUDA tensors as input", "float32", device_images=t_images))
        out = preprocess_cuda([cp.asarray(odd[6])], resize_short=256, crop_size=224, mean=MEAN, std=STD)
        shared = torch.from_dlpack(out)
        same_memory = shared.data_ptr() == out.data.ptr
        checks.append({"check": "DLPack hand-off to torch without copy", "ok": bool(same_memory)})
        print(f"  {'ok  ' if same_memory else 'FAIL'} DLPack hand-off to torch without copy")

    print("== timing (CuPy events, median of %d launches, batch already on the device)" % args.repeats)
    timings = []
    flowers_batch = (flowers * 32)[:32] if flowers else [smooth_image(rng, 224, 224) for _ in range(32)]
    small_label = "32 x 224x224 (flowers12)" if flowers else "32 x 224x224 (generated)"
    large_batch = [smooth_image(rng, 1500, 2000) for _ in range(4)] * 8
    for dtype in ("float32", "float16"):
        timings.append(time_batch(cp, flowers_batch, small_label, args.repeats, dtype))
        timings.append(time_batch(cp, large_batch, "32 x 1500x2000", args.repeats, dtype))

    assert "paddle" not in sys.modules, "gpu_check must not import paddle"
    ok = all(c["ok"] for c in checks)
    print(f"== {'PASS' if ok else 'FAIL'}: {sum(c['ok'] for c in checks)}/{len(checks)} checks")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "checks": checks, "timings": timings}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
