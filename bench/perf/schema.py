"""The ``throughput.json`` contract: file names, the names of stages, inputs and pipelines,
:data:`REPORT_SCHEMA` and :func:`validate_report` (no third-party JSON Schema library needed)."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

from common.errors import TlbenchError

SCHEMA_VERSION = 1
JSON_FILE = "throughput.json"
MARKDOWN_FILE = "throughput.md"
PLOT_LATENCY_FILE = "throughput_vs_p99.png"
PLOT_SPLIT_FILE = "time_split.png"

STAGES = ("decode", "preprocess", "inference", "postprocess")
INPUT_MODES = ("jpeg", "tensor")
PIPELINES = ("ours", "baseline")
LATENCY_KEYS = ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")


class ReportSchemaError(TlbenchError):
    """A throughput report does not follow :data:`REPORT_SCHEMA`."""



_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_POS = {"type": "integer", "minimum": 1}
_STR = {"type": "string"}


def _obj(properties: dict[str, Any], required: Optional[Sequence[str]] = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required or properties)}


#: JSON Schema (draft 2020-12 subset: type, required, properties, items, enum, minimum) of throughput.json.
REPORT_SCHEMA: dict[str, Any] = _obj({
    "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
    "created_at": _STR,
    "environment": _obj({
        "cpu_model": _STR, "cpu_cores": _POS, "cpu_logical": _INT,
        "load_average": {"type": "array", "items": _NUM}, "load_average_end": {"type": "array", "items": _NUM},
        "gpu": {"type": ["string", "null"]}, "os": _STR, "python_version": _STR, "paddle_version": _STR,
        "numpy_version": _STR, "opencv_version": _STR, "jpeg_decoder": _STR,
        "backend": _STR, "precision": _STR, "kernels_backend": _STR,
        "model_name": _STR, "model_dir": _STR, "image_size": _POS, "resize_short": _POS,
        "num_classes": {"type": ["integer", "null"]},
    }),
    "config": _obj({
        "model_dir": _STR, "backend": _STR, "precision": _STR,
        "batch_sizes": {"type": "array", "items": _POS}, "concurrency": {"type": "array", "items": _POS},
        "duration_s": _NUM, "warmup_s": _NUM, "requests": {"type": ["integer", "null"]}, "repetitions": _POS,
        "inputs": {"type": "array", "items": {"type": "string", "enum": list(INPUT_MODES)}},
        "images_dir": _STR, "max_images": _POS, "baseline": {"type": "boolean"},
        "threads": {"type": ["integer", "null"]}, "topk": _POS,
    }),
    "images": _obj({"dir": _STR, "count": _POS, "bytes": _INT}),
    "agreement": {"type": ["object", "null"], "properties": {
        "images": _POS, "top1_agree": _INT, "fraction": _NUM, "near_ties": _INT, "disagree_beyond_ties": _INT,
        "max_abs_input_diff": _NUM, "max_abs_logit_diff": _NUM, "logit_tolerance": _NUM,
    }, "required": ["images", "top1_agree", "fraction", "near_ties", "disagree_beyond_ties", "max_abs_logit_diff"]},
    "points": {"type": "array", "items": _obj({
        "pipeline": {"type": "string", "enum": list(PIPELINES)},
        "input": {"type": "string", "enum": list(INPUT_MODES)},
        "batch_size": _POS, "concurrency": _POS, "threads_per_predictor": _POS, "repetitions": _POS,
        "requests": _POS, "images": _POS, "wall_s": _NUM,
        "images_per_sec": _NUM, "images_per_sec_min": _NUM, "images_per_sec_max": _NUM,
        "images_per_sec_runs": {"type": "array", "items": _NUM},
        "latency_ms": _obj({k: _NUM for k in LATENCY_KEYS}),
        "split_ms": _obj({k: _NUM for k in STAGES}),
        "split_fraction": _obj({k: _NUM for k in STAGES}),
        "pipeline_ms_per_image": _NUM,
        "ratios": _obj({"e2e_over_model": {"type": ["number", "null"]},
                        "ours_over_baseline": {"type": ["number", "null"]},
                        "pipeline_speedup_vs_baseline": {"type": ["number", "null"]}}),
    })},
})

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "null": lambda v: v is None,
}


def _check(value: Any, schema: dict[str, Any], where: str) -> None:
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in allowed):
            raise ReportSchemaError(f"{where}: expected {' or '.join(allowed)}, got {type(value).__name__} {value!r:.60}")
    if value is None:
        return
    if "enum" in schema and value not in schema["enum"]:
        raise ReportSchemaError(f"{where}: expected one of {schema['enum']}, got {value!r}")
    if "minimum" in schema and value < schema["minimum"]:
        raise ReportSchemaError(f"{where}: expected >= {schema['minimum']}, got {value!r}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                raise ReportSchemaError(f"{where}: required key {key!r} is missing")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]")


def validate_report(report: Any) -> None:
    """Check ``report`` against :data:`REPORT_SCHEMA`.

    Raises:
        ReportSchemaError: naming the first offending path (e.g. ``throughput.json.points[2].latency_ms``).
    """
    _check(report, REPORT_SCHEMA, JSON_FILE)


def point_label(p: dict[str, Any]) -> str:
    """Short name of a point, e.g. ``ours/jpeg b8 c2``."""
    return f"{p['pipeline']}/{p['input']} b{p['batch_size']} c{p['concurrency']}"
