"""``bench serve``: an HTTP inference server for an exported model (see ``bench/serve/``)."""

from __future__ import annotations

import argparse
import ipaddress
import logging

NAME = "serve"
HELP = "serve an exported model over HTTP (POST /predict) with dynamic batching"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bench serve``."""
    from bench.serve.batcher import DEFAULT_MAX_QUEUE
    from bench.serve.request_body import DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BYTES, DEFAULT_MAX_INFLIGHT_BYTES
    from bench.serve.uploads import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_PIXELS

    parser.add_argument("--model", required=True, help="export directory (exported_models/X) or a PaddleClas inference dir")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; the server has no authentication)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-batch", type=int, default=8, help="largest batch the server forms (default 8)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long the first request of a batch waits for more (default 5 ms)")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                        help=f"requests that may wait for a batch before the server answers 503 (default {DEFAULT_MAX_QUEUE})")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help=f"largest accepted upload in bytes (default {DEFAULT_MAX_BYTES})")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"largest accepted image, width*height from its header (default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S, metavar="SECONDS",
                        help=f"time a client has to send its whole upload; slower ones get 408 (default {DEFAULT_BODY_TIMEOUT_S:g})")
    parser.add_argument("--max-inflight-bytes", type=int, default=DEFAULT_MAX_INFLIGHT_BYTES,
                        help="upload bytes held at once over all requests; beyond it a request gets 503 "
                             f"(default {DEFAULT_MAX_INFLIGHT_BYTES})")
    parser.add_argument("--max-decode-mb", type=int, default=DEFAULT_MAX_DECODE_BYTES // 2**20,
                        help="memory decoding one image may take, from its header (pixels x channels x bit depth); "
                             f"beyond it 413 (default {DEFAULT_MAX_DECODE_BYTES // 2**20})")
    parser.add_argument("--full-decode", action="store_true",
                        help="decode every JPEG at full size (default: JPEGs over 4 MP and 4x the model's resize are "
                             "decoded at 1/2, 1/4 or 1/8 size in the DCT domain)")
    parser.add_argument("--topk", type=int, default=5, help="classes per answer unless ?topk= says otherwise (default 5)")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "cpu-plain", "gpu", "trt"),
                        help="predictor backend (default cpu = oneDNN)")
    parser.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16", "int8"),
                        help="predictor precision (default: int8 for an int8 export, else fp32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="predictor CPU threads (default: every core but one, at least 1; the spare core decodes "
                             "uploads)")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                        help="uvicorn's log level (default warning)")


def run(args: argparse.Namespace) -> int:
    """Load the model, warm it up, and serve until interrupted."""
    from rich.console import Console

    from bench.serve.app import ServerSettings, bind_socket, build_predictor, create_app, default_serve_threads, serve
    from common.machine import usable_cores
    from common.validate import at_least

    from bench.commands.eval import resolve_precision

    if args.threads is not None:
        at_least(args.threads, "--threads", 1)
    resolve_precision(args)
    settings = ServerSettings(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
        max_queue=args.max_queue, default_topk=args.topk, body_timeout_s=args.body_timeout,
        max_inflight_bytes=args.max_inflight_bytes, max_decode_bytes=args.max_decode_mb * 2**20,
        full_decode=args.full_decode,
    )
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        log.warning("binding %s: the server is reachable from other machines and has no authentication", args.host)
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    threads = args.threads if args.threads is not None else default_serve_threads(usable_cores(), args.backend)
    predictor = build_predictor(args.model, backend=args.backend, precision=args.precision, threads=threads,
                                max_batch=settings.max_batch)
    app = create_app(predictor, settings)
    Console(stderr=True).print(
        f"serving [bold]{predictor.model.model_name}[/bold] from {args.model} on http://{args.host}:{port} "
        f"(POST /predict, GET /health /metadata /stats; max batch {settings.max_batch}, "
        f"max wait {settings.max_wait_ms:g} ms, {args.backend}/{args.precision})",
        highlight=False,
    )
    serve(app, sock, log_level=args.log_level)
    return 0
