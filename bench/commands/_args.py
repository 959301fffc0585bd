"""Flags that several commands share."""

from __future__ import annotations

import argparse
from typing import Optional

DATASET_NAMES = "demo, folder, list, flowers102, pets, dtd, aircraft, cars, caltech101, food101, sun397"


def add_dataset_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, required: bool = False,
                          dataset_absent: Optional[str] = None, data_root_absent: Optional[str] = None) -> None:
    """Add ``--dataset`` and ``--data-root``, both defaulting to None (not given).

    Each command decides what an absent flag means (a YAML value, synthetic batches, the
    benchmark image set) and says so through ``dataset_absent`` / ``data_root_absent``, which
    end the help texts. ``required`` makes ``--dataset`` mandatory.
    """
    parser.add_argument("--dataset", default=None, required=required,
                        help=f"dataset name: {DATASET_NAMES}" + (f" ({dataset_absent})" if dataset_absent else ""))
    parser.add_argument("--data-root", default=None,
                        help="dataset folder (not needed for demo)" + (f" ({data_root_absent})" if data_root_absent else ""))
