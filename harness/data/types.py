"""Records that cross the data layer's boundary: samples, splits and the data report."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS = ("top1", "mean_per_class")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One labelled image: an absolute file path and a 0-based class index."""

    path: str
    label: int


@dataclass
class DataReport:
    """What the data layer did to a dataset: split sizes, carving, skipped files, downloads.

    ``add_skipped`` may be called from loader worker threads; a path is recorded
    once however often it fails (it fails again every epoch), with the split it was in.
    ``counts`` are usable images: a file the loader drops after the counts were set is
    taken off its split's count. ``carving`` records the fractions and seed of carved splits.
    """

    dataset: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    val_carved: bool = False
    test_carved: bool = False
    carving: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    downloads: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def add_skipped(self, path: str, reason: str, split: str = "") -> bool:
        """Record ``path`` of ``split`` as skipped because of ``reason``; False if it was already recorded."""
        path = str(path)
        with self._lock:
            if any(p == path for p, _, _ in self.skipped):
                return False
            self.skipped.append((path, str(reason), str(split)))
            if split in self.counts:
                self.counts[split] = max(0, self.counts[split] - 1)
            return True

    def skipped_in(self, split: str) -> list[dict[str, str]]:
        """The skipped files of ``split`` as ``{"path", "reason", "split"}`` objects."""
        with self._lock:
            return [{"path": p, "reason": r, "split": s} for p, r, s in self.skipped if s == split]

    def add_note(self, note: str) -> None:
        """Record a human-readable decision the loader made (e.g. which split became test)."""
        with self._lock:
            self.notes.append(str(note))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, skipped files as ``{"path", "reason"}`` objects."""
        with self._lock:
            return {
                "dataset": self.dataset,
                "counts": {k: int(v) for k, v in self.counts.items()},
                "val_carved": bool(self.val_carved),
                "test_carved": bool(self.test_carved),
                "carving": dict(self.carving),
                "skipped": [{"path": p, "reason": r, "split": s} for p, r, s in self.skipped],
                "num_skipped": len(self.skipped),
                "notes": list(self.notes),
                "downloads": [dict(d) for d in self.downloads],
            }

    def write(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as indented JSON to ``path`` atomically and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset resolved into train/val/test samples with its class names and headline metric.

    ``metric`` is the accuracy the dataset's protocol reports: ``"mean_per_class"`` for
    Flowers102, Pets, Caltech101 and Aircraft (Kornblith et al., 2019), ``"top1"`` otherwise.
    """

    name: str
    classes: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]
    metric: str = "top1"
    report: DataReport = field(default_factory=DataReport, compare=False, hash=False, repr=False)

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``classes``)."""
        return len(self.classes)

    def split(self, name: str) -> tuple[Sample, ...]:
        """Samples of split ``name`` ('train', 'val' or 'test')."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)
