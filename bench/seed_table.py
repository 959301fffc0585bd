"""The seed's comparison table for one dataset, from finished search run directories.

Rows, as in PaddleClas's transfer-learning table: Fixed scheme, Grid search, Grid search time,
Bayesian search (its trials), Bayesian search time, BiT, and multi-fidelity searches. Each
search row gives the val value its search selected on and the test top-1 of that one
configuration, scored once (``summary.json``'s ``test``; none without a summary). Times are wall time from the first
trial's start to the last trial's end; with a grid, a search whose trials are all grid points
also gets the grid's recorded time for those points (what the search costs on the machine and
load the grid ran on: a trial computes the same thing whichever search runs it).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from common.errors import ConfigError

ROW_KINDS = ("fixed", "grid", "bayes", "bit", "multi_fidelity")


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


@dataclass(frozen=True)
class SearchRun:
    """What the table reads from one run directory."""

    path: Path
    strategy: str
    trials: int
    best_trial: int
    best_params: dict[str, Any]
    val: float
    test_top1: Optional[float]
    found_at: int  # the number of finished trials when the best value was first reached
    wall_s: float
    trial_seconds: dict[str, float]  # params (JSON) -> that trial's seconds
    work: dict[str, float]  # params (JSON) -> share of a full trial trained (1 for a plain trial)

    @property
    def fte(self) -> float:
        """Full-trial equivalents trained: the number of trials for a plain search."""
        return sum(self.work.values())


def read_run(path: str | Path) -> SearchRun:
    """The summary, trials and times of a finished search run directory."""
    from search import load_meta, load_trials

    path = Path(path)
    meta = load_meta(path)
    finished = sorted((t for t in load_trials(path) if t.value is not None and t.state.name == "COMPLETE"),
                      key=lambda t: t.finished_at or 0.0)
    if not finished:
        raise ConfigError(f"{path}: no complete trial in journal.jsonl")
    summary_path = path / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        # A search stopped before its summary (or one from the Python API): the journal's best, no test score.
        top = max(finished, key=lambda t: t.value)
        summary = {"best": {"trial": top.id, "params": top.params, "val": top.value}}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{summary_path} is not JSON: {exc}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("best"), dict):
        raise ConfigError(f"{summary_path}: expected a search summary with a 'best' trial")
    best = summary["best"]
    val = float(best["val"])
    found_at = next(i for i, t in enumerate(finished, 1) if t.value >= val)
    spans = [(t.started_at, t.finished_at) for t in finished]
    work = {_key(t.params): 1.0 for t in finished}
    rung_records = _rung_records(path, meta)
    if rung_records:
        # Multi-fidelity: every rung job counts, each for the epochs it added to its trial.
        spans = [(r.get("started_at"), r.get("finished_at")) for r in rung_records]
        max_epochs = max(int(r["epochs"]) for r in rung_records)
        done: dict[int, int] = {}
        work = {}
        for r in sorted(rung_records, key=lambda r: (r["trial"], r["epochs"])):
            added = int(r["epochs"]) - done.get(r["trial"], 0)
            done[r["trial"]] = int(r["epochs"])
            work[_key(r["params"])] = work.get(_key(r["params"]), 0.0) + added / max_epochs
    starts = [a for a, _ in spans if a is not None]
    ends = [b for _, b in spans if b is not None]
    test = summary.get("test") or {}
    return SearchRun(
        path=path, strategy=meta.strategy, trials=len(work), best_trial=int(best["trial"]),
        best_params=dict(best["params"]), val=val,
        test_top1=float(test["top1"]) if test.get("top1") is not None else None, found_at=found_at,
        wall_s=(max(ends) - min(starts)) if starts and ends else 0.0,
        trial_seconds={_key(t.params): float(t.duration_s or 0.0) for t in finished},
        work=work,
    )


def _rung_records(path: Path, meta) -> list[dict[str, Any]]:
    """The finished rung results of a multi-fidelity search (none for a plain one)."""
    from search.journal import JOURNAL_NAME, read_records

    records = read_records(path / JOURNAL_NAME, meta.record_space(), warn=False)
    return [r for r in records if "rung" in r and r["state"] in ("PRUNED", "COMPLETE")]


def grid_time_of(run: SearchRun, grid: Optional[SearchRun]) -> Optional[float]:
    """The grid's recorded seconds for what ``run`` trained (a trial trained to epoch k of n costs
    k/n of the grid's trial); None when one of its points is not a grid point."""
    if grid is None:
        return None
    try:
        return sum(grid.trial_seconds[key] * share for key, share in run.work.items())
    except KeyError:
        return None


def build_table(runs: dict[str, list[str | Path]], *, dataset: str = "") -> dict[str, Any]:
    """The table as JSON: one entry per run (grouped by row kind) plus the markdown rows.

    ``runs`` maps a row kind (:data:`ROW_KINDS`) to run directories; ``grid`` takes at most one.
    """
    unknown = sorted(set(runs) - set(ROW_KINDS))
    if unknown:
        raise ConfigError(f"unknown row kind(s) {unknown}; expected some of {list(ROW_KINDS)}")
    if len(runs.get("grid", [])) > 1:
        raise ConfigError("one grid run at most")
    read = {kind: [read_run(p) for p in paths] for kind, paths in runs.items() if paths}
    grid = read.get("grid", [None])[0]
    entries: dict[str, list[dict[str, Any]]] = {}
    for kind, items in read.items():
        entries[kind] = [{
            "run_dir": str(r.path), "strategy": r.strategy, "trials": r.trials, "fte": r.fte, "best_trial": r.best_trial,
            "params": r.best_params, "val": r.val, "test_top1": r.test_top1, "found_at_trial": r.found_at,
            "wall_s": r.wall_s, "grid_time_s": grid_time_of(r, grid),
        } for r in items]
    return {"dataset": dataset, "entries": entries, "markdown": markdown_rows(entries)}


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _hours(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _mean(values: list[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present and len(present) == len(values) else None


def markdown_rows(entries: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The table in markdown: row, val top-1 (%), test top-1 (%), and what the row's value means."""
    lines = ["| | val top-1 (%) | test top-1 (%) | |", "|---|---:|---:|---|"]

    def search_rows(kind: str, title: str) -> None:
        items = entries.get(kind, [])
        if not items:
            return
        trials = sorted({e["trials"] for e in items})
        label = f"{title} ({'/'.join(map(str, trials))} trials)" if kind not in ("fixed", "bit") else title
        if kind == "multi_fidelity":
            configs = "/".join(str(e["trials"]) for e in items)
            ftes = "/".join(f"{e['fte']:.1f}" for e in items)
            label = f"{title} ({configs} configurations, {ftes} FTE)"
        if len(items) == 1:
            e = items[0]
            lines.append(f"| {label} | {_pct(e['val'])} | {_pct(e['test_top1'])} | "
                         f"{_params(e['params'])}; best at trial {e['found_at_trial']} |")
        else:
            vals = [e["val"] for e in items]
            tests = [e["test_top1"] for e in items]
            spread = ", ".join(f"{_pct(e['val'])}/{_pct(e['test_top1'])} (best at trial {e['found_at_trial']})"
                               for e in items)
            lines.append(f"| {label}, mean of {len(items)} search seeds | {_pct(_mean(vals))} | "
                         f"{_pct(_mean(tests))} | per seed val/test: {spread} |")
        if kind in ("grid", "bayes", "multi_fidelity"):
            walls = [e["wall_s"] for e in items]
            grid_times = [e["grid_time_s"] for e in items]
            note = f"wall time{', mean' if len(items) > 1 else ''}"
            text = _hours(statistics.fmean(walls))
            if kind != "grid" and _mean(grid_times) is not None:
                text += f" ({_hours(_mean(grid_times))} at the grid's trial times)"
            lines.append(f"| {title} time | {text} | | {note} |")

    search_rows("fixed", "Fixed scheme")
    search_rows("grid", "Grid search")
    search_rows("bayes", "Bayesian search")
    search_rows("bit", "BiT-HyperRule")
    search_rows("multi_fidelity", "Multi-fidelity search")
    return lines


def _params(params: dict[str, Any]) -> str:
    short = {"label_smoothing": "LS", "l2_decay": "l2"}
    return ", ".join(f"{short.get(k, k)} {v:g}" if isinstance(v, float) else f"{short.get(k, k)} {v}"
                     for k, v in params.items())
