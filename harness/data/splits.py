"""Deterministic stratified splitting and cheap file checks shared by every adapter."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from common.errors import ConfigError, DatasetError
from .image_io import probe_image_file
from .types import DataReport, Sample

log = logging.getLogger(__name__)


def _by_label(samples: Iterable[Sample]) -> dict[int, list[Sample]]:
    groups: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.label].append(s)
    # Sorting makes the result independent of directory-listing or list-file order.
    return {label: sorted(group, key=lambda s: s.path) for label, group in sorted(groups.items())}


def stratified_split(
    samples: Sequence[Sample], fraction: float, seed: int, *, min_keep: int = 1
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """Split ``samples`` into ``(kept, held_out)`` with ``round(fraction * n_c)`` of each class held out.

    Each class with at least ``min_keep + 1`` samples gives at least one sample and keeps
    at least ``min_keep``; smaller classes stay whole in ``kept``. The choice depends only
    on the set of samples, ``fraction`` and ``seed`` (not on input order), and the two
    parts never overlap.
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"split fraction must be in (0, 1), got {fraction!r}")
    kept: list[Sample] = []
    held: list[Sample] = []
    for label, group in _by_label(samples).items():
        n = len(group)
        n_held = int(round(fraction * n))
        n_held = max(1, n_held) if n > min_keep else 0
        n_held = min(n_held, n - min_keep)
        # One generator per class so adding or removing a class leaves the others unchanged.
        perm = np.random.default_rng([int(seed), int(label)]).permutation(n)
        held_idx = set(perm[:n_held].tolist())
        for i, s in enumerate(group):
            (held if i in held_idx else kept).append(s)
    return tuple(sorted(kept, key=lambda s: s.path)), tuple(sorted(held, key=lambda s: s.path))


def fixed_count_split(
    samples: Sequence[Sample], per_class: int, seed: int
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """``(chosen, rest)`` with ``per_class`` random samples of each class chosen (all if fewer)."""
    chosen: list[Sample] = []
    rest: list[Sample] = []
    for label, group in _by_label(samples).items():
        perm = np.random.default_rng([int(seed), int(label)]).permutation(len(group))
        pick = set(perm[:per_class].tolist())
        for i, s in enumerate(group):
            (chosen if i in pick else rest).append(s)
    return tuple(sorted(chosen, key=lambda s: s.path)), tuple(sorted(rest, key=lambda s: s.path))


def check_files(samples: Sequence[Sample], report: DataReport, *, strict: bool, split: str) -> tuple[Sample, ...]:
    """Drop samples whose file is missing, empty or not a usable image, recording each in ``report.skipped``.

    Nothing is decoded: :func:`~harness.data.image_io.probe_image_file` reads the header and
    the end of each file (a missing end-of-image marker, a format that is not an image), so
    the counts a report gives are of images that will load. With ``strict=True`` the first
    bad file raises :class:`DatasetError` naming it.
    """
    good: list[Sample] = []
    for s in samples:
        reason = probe_image_file(s.path)
        if reason is None:
            good.append(s)
            continue
        if strict:
            raise DatasetError(f"{s.path}: {reason} (listed in the {split} split; strict mode)")
        if report.add_skipped(s.path, reason, split):
            log.warning("skipping %s (%s split): %s", s.path, split, reason)
    return tuple(good)
