"""What a throughput report becomes on disk: ``throughput.json``, ``throughput.md`` and two plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .plots import plot_throughput_vs_latency, plot_time_split
from .schema import JSON_FILE, LATENCY_KEYS, MARKDOWN_FILE, PLOT_LATENCY_FILE, PLOT_SPLIT_FILE, STAGES, validate_report

def machine_line(env: dict[str, Any]) -> str:
    """One line describing where the numbers were measured."""
    def load(key: str) -> str:
        return ", ".join(f"{x:.1f}" for x in env.get(key, [])) or "n/a"

    gpu = env.get("gpu") or "no GPU"
    return (f"{env['cpu_model']}, {env['cpu_cores']} cores available ({env['cpu_logical']} logical), {gpu}; "
            f"load average (1, 5, 15 min) {load('load_average')} at start, {load('load_average_end')} at end; "
            f"Paddle {env['paddle_version']}, {env['backend']}/{env['precision']}, "
            f"preprocessing kernel {env['kernels_backend']}, decoder {env['jpeg_decoder']}")


def _fmt_ratio(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}×"


def markdown_report(report: dict[str, Any]) -> str:
    """``throughput.md``: machine, table of every point, ratios, agreement and the plots."""
    env, cfg = report["environment"], report["config"]
    window = f"{cfg['requests']} requests per client" if cfg["requests"] else f"{cfg['duration_s']:g} s"
    lines = [
        f"# Throughput: {env['model_name']} @ {env['image_size']} px, {env['backend']}/{env['precision']}",
        "",
        f"- Machine: {machine_line(env)}.",
        f"- Images: {report['images']['count']} JPEGs from `{report['images']['dir']}`, held in memory.",
        f"- Method: warm-up {cfg['warmup_s']:g} s per point, then {cfg['repetitions']} round(s) that each measure "
        f"every point for {window}, in a rotating order; img/s is the median (min–max) over rounds; latency is per "
        "request (one batch), percentiles over all requests of all rounds; the split is the mean time per request in "
        "each stage. Concurrency c = c client threads, each with its own predictor; the baseline runs at c = 1.",
        f"- Created {report['created_at']}.",
        "",
        "| pipeline | input | batch | conc. | threads | img/s (median) | min–max | mean ms | p50 | p90 | p95 | p99 | max "
        "| decode | preprocess | inference | postprocess | pipeline ms/img | e2e / model | ours / baseline "
        "| pipeline speed-up |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in report["points"]:
        lat, split = p["latency_ms"], p["split_ms"]
        lines.append(
            f"| {p['pipeline']} | {p['input']} | {p['batch_size']} | {p['concurrency']} | {p['threads_per_predictor']} "
            f"| {p['images_per_sec']:.1f} | {p['images_per_sec_min']:.1f}–{p['images_per_sec_max']:.1f} | "
            + " | ".join(f"{lat[k]:.1f}" for k in LATENCY_KEYS) + " | "
            + " | ".join(f"{split[s]:.2f}" for s in STAGES) + f" | {p['pipeline_ms_per_image']:.2f}"
            + f" | {_fmt_ratio(p['ratios']['e2e_over_model'])} | {_fmt_ratio(p['ratios']['ours_over_baseline'])}"
            + f" | {_fmt_ratio(p['ratios']['pipeline_speedup_vs_baseline'])} |"
        )
    lines += ["", "Latency and split columns are milliseconds per request. *e2e / model*: the JPEG point's img/s "
              "over ours/tensor at the same batch and concurrency. *ours / baseline*: ours/jpeg over the baseline "
              "(concurrency 1) at the same batch. *pipeline ms/img*: decode + preprocess + postprocess per image; "
              "*pipeline speed-up*: the baseline's pipeline ms/img over ours at concurrency 1 and the same batch (steadier than the "
              "img/s ratio on a loaded machine, since it leaves out the model time).", ""]
    agreement = report.get("agreement")
    if agreement:
        lines.append(
            f"Predictions: ours and the baseline give the same top-1 on {agreement['top1_agree']} of "
            f"{agreement['images']} images ({agreement['fraction']:.1%}; {agreement['near_ties']} near-ties; "
            f"max |input diff| {agreement.get('max_abs_input_diff', float('nan')):.3g}, "
            f"max |logit diff| {agreement['max_abs_logit_diff']:.3g})."
        )
        lines.append("")
    lines += [f"![throughput vs p99 latency]({PLOT_LATENCY_FILE})", "", f"![time split]({PLOT_SPLIT_FILE})", ""]
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``throughput.json``, ``throughput.md`` and the two plots into ``out_dir``; returns their paths.

    Raises:
        ReportSchemaError: the report does not follow :data:`REPORT_SCHEMA` (nothing is written).
    """
    validate_report(report)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / JSON_FILE, "markdown": out_dir / MARKDOWN_FILE,
             "plot_latency": out_dir / PLOT_LATENCY_FILE, "plot_split": out_dir / PLOT_SPLIT_FILE}
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_report(report), encoding="utf-8")
    plot_throughput_vs_latency(report, paths["plot_latency"])
    plot_time_split(report, paths["plot_split"])
    return paths
