"""Search reports: ``report.md``, ``report.json`` and PNG plots from one or more search run directories.

What a report holds, per run: the trial table, the best configuration, the convergence curve
(best value so far against trial number), the effect of each hyperparameter (mean and max value
per level), and accuracy against p99 latency with the Pareto front when trials recorded a
latency (metrics key ``latency_p99_ms``). Across runs: one convergence plot with a line per run
and, per dataset with fixed / grid / bayes runs, the seed's table (Fixed, Grid search, Grid
search time, Bayesian search, Bayesian search time).

Search time is the sum of the trials' own durations (``timings.trial_s``, else finish minus
start), so it does not count time a search spent stopped between a Ctrl-C and its resume.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from common.errors import TlbenchError
from search.journal import JOURNAL_NAME, SearchMeta, load_meta, load_trials
from search.space import to_python
from search.trial import Trial, TrialState

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
#: Metrics keys read as the p99 latency of a trial's exported model, in order of preference.
LATENCY_KEYS = ("latency_p99_ms", "p99_ms")
#: Parameters with at most this many distinct values are grouped by value; others by quantile bins.
MAX_LEVELS = 12


@dataclass(frozen=True)
class RunData:
    """One search run directory, loaded."""

    run_dir: Path
    meta: SearchMeta
    trials: list[Trial]

    @property
    def label(self) -> str:
        """``<dataset>-<strategy>``; :func:`write_report` appends the directory name where runs share one."""
        dataset = self.meta.dataset or "search"
        return f"{dataset}-{self.meta.strategy}"

    @property
    def finished(self) -> list[Trial]:
        """Finished trials by id."""
        return [t for t in self.trials if t.state.is_finished]

    @property
    def complete(self) -> list[Trial]:
        """COMPLETE trials by id."""
        return [t for t in self.trials if t.state is TrialState.COMPLETE]

    @property
    def best(self) -> Optional[Trial]:
        """Highest value (earliest on ties)."""
        return max(self.complete, key=lambda t: (t.value, -t.id)) if self.complete else None


def load_run(run_dir: str | Path) -> RunData:
    """Load ``search.json`` and ``journal.jsonl`` of a search run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL_NAME).is_file():
        raise TlbenchError(f"{run_dir} is not a search run directory: {JOURNAL_NAME} is missing")
    return RunData(run_dir=run_dir, meta=load_meta(run_dir), trials=load_trials(run_dir))


def trial_seconds(trial: Trial) -> float:
    """The trial's duration: ``timings.trial_s`` when recorded, else finish minus start, else 0."""
    if "trial_s" in trial.timings and trial.timings["trial_s"] is not None:
        return float(trial.timings["trial_s"])
    return float(trial.duration_s or 0.0)


def convergence(trials: Sequence[Trial]) -> list[Optional[float]]:
    """Best COMPLETE value so far after each finished trial (by trial id); None before the first."""
    best: Optional[float] = None
    out = []
    for trial in sorted((t for t in trials if t.state.is_finished), key=lambda t: t.id):
        if trial.state is TrialState.COMPLETE and (best is None or trial.value > best):
            best = trial.value
        out.append(best)
    return out


def epoch_history(trial: Trial, key: str = "val_top1") -> list[Optional[float]]:
    """Per-epoch ``key`` of a trial's training history (``metrics.train_history``), in epoch order."""
    history = trial.metrics.get("train_history") or []
    return [record.get(key) for record in history]


def fidelity_correlation(trials: Sequence[Trial], epochs: Sequence[int] = (1, 2, 4),
                         key: str = "val_top1") -> dict[str, Any]:
    """Spearman rank correlation between the val metric after epoch ``e`` and after the last epoch.

    Over COMPLETE trials whose history covers the last epoch (the longest history among them).
    Says how well a short run ranks configurations the way the full run does: what
    multi-fidelity search relies on. ``None`` where fewer than 3 trials or a constant column.
    """
    from scipy.stats import spearmanr

    histories = [h for h in (epoch_history(t, key) for t in trials if t.state is TrialState.COMPLETE) if h]
    if not histories:
        return {"n_trials": 0, "last_epoch": None, "spearman": {}}
    last = max(len(h) for h in histories)
    full = [h for h in histories if len(h) == last and h[-1] is not None]
    result: dict[str, Optional[float]] = {}
    for e in epochs:
        if not 1 <= e <= last:
            continue
        pairs = [(h[e - 1], h[-1]) for h in full if h[e - 1] is not None]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(pairs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
            result[str(e)] = None
        else:
            result[str(e)] = float(spearmanr(xs, ys).statistic)
    return {"n_trials": len(full), "last_epoch": last, "spearman": result}


def parameter_effects(trials: Sequence[Trial]) -> dict[str, list[dict[str, Any]]]:
    """Per parameter: COMPLETE trials grouped by level (or quantile bin) with n, mean and max value."""
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    names: list[str] = []
    for t in complete:
        names.extend(n for n in t.params if n not in names)
    effects: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        pairs = [(t.params[name], t.value) for t in complete if name in t.params]
        levels = {json.dumps(v) for v, _ in pairs}
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _ in pairs)
        groups: dict[str, list[float]] = defaultdict(list)
        order: list[tuple[Any, str]] = []
        if len(levels) <= MAX_LEVELS or not numeric:
            for v, y in pairs:
                key = json.dumps(v)
                if key not in groups:
                    order.append((v, key))
                groups[key].append(y)
            if numeric or all(isinstance(v, bool) for v, _ in pairs):
                order.sort(key=lambda item: item[0])
            rows = [{"level": v, "n": len(groups[k]), "mean": float(np.mean(groups[k])), "max": float(np.max(groups[k]))}
                    for v, k in order]
        else:
            xs = np.array([float(v) for v, _ in pairs])
            ys = np.array([y for _, y in pairs])
            edges = np.unique(np.quantile(xs, np.linspace(0, 1, 7)))
            rows = []
            for i in range(len(edges) - 1):
                last = i == len(edges) - 2
                mask = (xs >= edges[i]) & ((xs <= edges[i + 1]) if last else (xs < edges[i + 1]))
                if mask.any():
                    rows.append({"level": f"[{edges[i]:.3g}, {edges[i + 1]:.3g}{']' if last else ')'}",
                                 "n": int(mask.sum()), "mean": float(ys[mask].mean()), "max": float(ys[mask].max())})
        effects[name] = rows
    return effects


def latency_of(trial: Trial) -> Optional[float]:
    """The trial's p99 latency in ms from its metrics, if recorded."""
    for key in LATENCY_KEYS:
        value = trial.metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def pareto_front(points: Sequence[tuple[int, float, float]]) -> list[int]:
    """Ids of the (id, value, latency) points no other point beats on both (higher value, lower latency)."""
    front = []
    for tid, value, latency in points:
        dominated = any(
            v >= value and lat <= latency and (v > value or lat < latency) for other, v, lat in points if other != tid
        )
        if not dominated:
            front.append(tid)
    return sorted(front, key=lambda i: next(lat for t, _, lat in points if t == i))


def summarize_run(run: RunData) -> dict[str, Any]:
    """JSON-safe summary of one run (everything report.md shows)."""
    best = run.best
    counts = {s.value: sum(t.state is s for t in run.trials) for s in TrialState}
    starts = [t.started_at for t in run.trials if t.started_at]
    ends = [t.finished_at for t in run.trials if t.finished_at]
    latency_points = [(t.id, t.value, latency_of(t)) for t in run.complete if latency_of(t) is not None]
    return to_python({
        "run_dir": str(run.run_dir),
        "label": run.label,
        "strategy": run.meta.strategy,
        "dataset": run.meta.dataset,
        "seed": run.meta.seed,
        "options": run.meta.options,
        "space": run.meta.space,
        "counts": counts,
        "n_finished": len(run.finished),
        "best": None if best is None else {
            "trial": best.id, "value": best.value, "params": best.params, "metrics": best.metrics,
        },
        "search_time_s": sum(trial_seconds(t) for t in run.finished),
        "wall_time_s": (max(ends) - min(starts)) if starts and ends else None,
        "convergence": convergence(run.trials),
        "effects": parameter_effects(run.trials),
        "fidelity": fidelity_correlation(run.trials),
        "pareto": pareto_front(latency_points) if len(latency_points) >= 2 else [],
        "trials": [t.to_record() for t in run.trials],
    })


def disambiguate_labels(summaries: Sequence[dict[str, Any]]) -> None:
    """Make every summary's ``label`` unique, in place.

    A label shared by several runs (e.g. two grid searches of one dataset) gets the run
    directory's name appended; should that still collide (same directory names under
    different parents), a running number follows.
    """
    counts = Counter(s["label"] for s in summaries)
    for s in summaries:
        if counts[s["label"]] > 1:
            s["label"] = f"{s['label']}-{Path(s['run_dir']).name}"
    seen: Counter = Counter()
    counts = Counter(s["label"] for s in summaries)
    for s in summaries:
        if counts[s["label"]] > 1:
            seen[s["label"]] += 1
            s["label"] = f"{s['label']}#{seen[s['label']]}"


def seed_table(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seed's table (:func:`bench.seed_table.build_table`) of every dataset that has at least
    two of fixed / grid / bayes runs; several runs of one strategy make one mean row (one grid:
    the one with the most finished trials)."""
    from bench.seed_table import build_table

    kinds = {"fixed": "fixed", "grid": "grid", "bayes": "bayes", "bit": "bit", "asha": "multi_fidelity",
             "bohb": "multi_fidelity"}
    by_dataset: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for s in summaries:
        if s["strategy"] in kinds and s["best"] is not None:
            by_dataset[s["dataset"] or "search"][kinds[s["strategy"]]].append(s)
    tables = []
    for dataset, runs in sorted(by_dataset.items()):
        if sum(k in runs for k in ("fixed", "grid", "bayes")) < 2:
            continue
        if "grid" in runs:
            runs["grid"] = [max(runs["grid"], key=lambda s: s["n_finished"])]
        tables.append(build_table({k: [s["run_dir"] for s in v] for k, v in runs.items()}, dataset=dataset))
    return tables


def _is_fraction(values: Sequence[Optional[float]]) -> bool:
    vals = [v for v in values if v is not None]
    return bool(vals) and all(0.0 <= v <= 1.0 for v in vals)


def _fmt_value(value: Optional[float], percent: bool) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4g}"


def _fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _fmt_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _plots(summaries: list[dict[str, Any]], out_dir: Path, percent: bool) -> dict[str, list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100.0 if percent else 1.0
    ylabel = "val accuracy (%)" if percent else "objective value"
    files: dict[str, list[str]] = defaultdict(list)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in summaries:
        ys = [None if v is None else v * scale for v in s["convergence"]]
        xs = [i + 1 for i, v in enumerate(ys) if v is not None]
        if xs:
            ax.step(xs, [v for v in ys if v is not None], where="post", label=s["label"], marker="." if len(xs) < 40 else None)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best {ylabel} so far")
    ax.set_title("Convergence")
    ax.grid(alpha=0.3)
    if summaries:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "convergence.png", dpi=110)
    plt.close(fig)
    files["_all"].append("convergence.png")

    labels_seen: dict[str, int] = defaultdict(int)
    for s in summaries:
        labels_seen[s["label"]] += 1
        stem = s["label"] if labels_seen[s["label"]] == 1 else f"{s['label']}-{labels_seen[s['label']]}"
        s["_stem"] = stem
        effects = {k: v for k, v in s["effects"].items() if v}
        if effects:
            n = len(effects)
            cols = min(n, 3)
            rows = math.ceil(n / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
            for ax, (name, levels) in zip(axes.flat, effects.items()):
                x = np.arange(len(levels))
                ax.bar(x, [r["mean"] * scale for r in levels], color="#8fb4d9", label="mean")
                ax.plot(x, [r["max"] * scale for r in levels], "o", color="#c0392b", label="max")
                ax.set_xticks(x, [_fmt_param(r["level"]) for r in levels], rotation=45, ha="right", fontsize=8)
                ax.set_title(name)
                ax.set_ylabel(ylabel, fontsize=8)
                lows = [r["mean"] * scale for r in levels]
                ax.set_ylim(bottom=max(0.0, min(lows) - 0.1 * (max(r["max"] * scale for r in levels) - min(lows) + 1e-9)))
            for ax in list(axes.flat)[n:]:
                ax.axis("off")
            axes.flat[0].legend(fontsize=8)
            fig.suptitle(f"Effect of each hyperparameter: {s['label']}")
            fig.tight_layout()
            name = f"effects-{stem}.png"
            fig.savefig(out_dir / name, dpi=110)
            plt.close(fig)
            files[s["run_dir"]].append(name)

        points = [(r["trial"], r["value"], latency_of(Trial.from_record(r))) for r in s["trials"]
                  if r["state"] == TrialState.COMPLETE.value]
        points = [p for p in points if p[2] is not None]
        if len(points) >= 2:
            front = set(s["pareto"])
            fig, ax = plt.subplots(figsize=(6.5, 4.5))
            ax.scatter([p[2] for p in points], [p[1] * scale for p in points], s=18, color="#7f8c8d", label="trials")
            fp = sorted((p for p in points if p[0] in front), key=lambda p: p[2])
            ax.plot([p[2] for p in fp], [p[1] * scale for p in fp], "-o", color="#c0392b", label="Pareto front")
            for p in fp:
                ax.annotate(str(p[0]), (p[2], p[1] * scale), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel("p99 latency (ms)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"Accuracy vs latency: {s['label']}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            name = f"pareto-{stem}.png"
            fig.savefig(out_dir / name, dpi=110)
            plt.close(fig)
            files[s["run_dir"]].append(name)
    return files


def _markdown(summaries: list[dict[str, Any]], table: list[dict[str, Any]], files: dict[str, list[str]],
              percent: bool) -> str:
    unit = " (%)" if percent else ""
    lines = ["# Search report", ""]
    lines.append(f"Runs: {', '.join(s['label'] for s in summaries)}. Values are the objective"
                 f"{' (validation accuracy, percent)' if percent else ''}; search time is the sum of trial durations.")
    lines.append("")
    for seed in table:
        lines += [f"## The seed's table: {seed['dataset']}", "", *seed["markdown"], ""]
    lines += ["## Convergence", "", "![convergence](convergence.png)", ""]
    for s in summaries:
        lines += [f"## {s['label']}", "", f"Run directory: `{s['run_dir']}`; strategy `{s['strategy']}`, seed {s['seed']}"
                  + (f", options `{json.dumps(s['options'])}`" if s["options"] else "") + ".", ""]
        counts = ", ".join(f"{n} {state.lower()}" for state, n in s["counts"].items() if n)
        lines.append(f"Trials: {counts or 'none'}; search time {_fmt_time(s['search_time_s'])}.")
        lines.append("")
        best = s["best"]
        if best is not None:
            lines += [f"### Best configuration (trial {best['trial']}, value {_fmt_value(best['value'], percent)})", "",
                      "| Parameter | Value |", "|---|---|"]
            lines += [f"| {k} | {_fmt_param(v)} |" for k, v in best["params"].items()]
            lines += [f"| metric: {k} | {v:.4g} |" for k, v in best["metrics"].items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)]
            lines.append("")
        params = []
        for r in s["trials"]:
            params.extend(k for k in r["params"] if k not in params)
        has_latency = any(latency_of(Trial.from_record(r)) is not None for r in s["trials"])
        header = ["Trial", "State", *params, f"Value{unit}", *(["p99 ms"] if has_latency else []), "Time", "Error"]
        lines += ["### Trials", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in s["trials"]:
            t = Trial.from_record(r)
            lat = latency_of(t)
            cells = [str(t.id), t.state.value, *(_fmt_param(t.params.get(p, "")) for p in params),
                     _fmt_value(t.value, percent), *([f"{lat:.2f}" if lat is not None else "-"] if has_latency else []),
                     _fmt_time(trial_seconds(t)), (t.error or "").replace("|", "/")[:80]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if s["effects"]:
            lines += ["### Effect of each hyperparameter", "", f"| Parameter | Level | Trials | Mean{unit} | Max{unit} |",
                      "|---|---|---|---|---|"]
            for name, levels in s["effects"].items():
                for r in levels:
                    lines.append(f"| {name} | {_fmt_param(r['level'])} | {r['n']} | {_fmt_value(r['mean'], percent)} | "
                                 f"{_fmt_value(r['max'], percent)} |")
            lines.append("")
        for name in files.get(s["run_dir"], []):
            lines += [f"![{name}]({name})", ""]
        fidelity = s.get("fidelity") or {}
        if any(r is not None for r in (fidelity.get("spearman") or {}).values()):
            cells = ", ".join(f"epoch {e}: {'n/a' if r is None else f'{r:.2f}'}" for e, r in fidelity["spearman"].items())
            lines += ["### Early epochs as predictors of the final value", "",
                      f"Spearman rank correlation of per-epoch val top-1 with epoch {fidelity['last_epoch']}, "
                      f"over {fidelity['n_trials']} trials: {cells}.", ""]
        if s["pareto"]:
            lines.append(f"Pareto front (higher accuracy, lower p99 latency): trials {', '.join(map(str, s['pareto']))}.")
            lines.append("")
    return "\n".join(lines)


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and PNG plots for ``run_dirs`` into ``out_dir``; returns report.json's content."""
    if not run_dirs:
        raise TlbenchError("bench report needs at least one search run directory")
    runs = [load_run(d) for d in run_dirs]
    seen: set[str] = set()
    for run in runs:
        key = str(run.run_dir.resolve())
        if key in seen:
            raise TlbenchError(f"run directory {run.run_dir} is given twice")
        seen.add(key)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [summarize_run(r) for r in runs]
    disambiguate_labels(summaries)
    percent = _is_fraction([t.value for r in runs for t in r.complete])
    table = seed_table(summaries)
    files = _plots(summaries, out_dir, percent)
    report = {
        "generated_at": time.time(),
        "values_are_fractions": percent,
        "seed_table": table,
        "plots": {k: v for k, v in files.items()},
        "runs": [{k: v for k, v in s.items() if not k.startswith("_")} for s in summaries],
    }
    (out_dir / REPORT_JSON).write_text(json.dumps(to_python(report), indent=2, allow_nan=False, default=str) + "\n")
    (out_dir / REPORT_MD).write_text(_markdown(summaries, table, files, percent) + "\n")
    log.info("wrote %s and %s in %s", REPORT_MD, REPORT_JSON, out_dir)
    return report


__all__ = ["RunData", "load_run", "convergence", "disambiguate_labels", "epoch_history", "fidelity_correlation",
           "parameter_effects", "pareto_front", "seed_table", "summarize_run", "write_report"]
