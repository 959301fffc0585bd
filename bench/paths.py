"""Paths the benchmarks share (pathlib only, so that standalone scripts can import it)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The benchmark image set (flowers12: train/ and test/ folders of JPEGs), relative to the
#: repository root; ``bench throughput`` also looks for it relative to the working directory.
BENCHMARK_DATASET_RELATIVE = Path("..") / "shared" / "datasets" / "flowers12"
BENCHMARK_DATASET = REPO_ROOT / BENCHMARK_DATASET_RELATIVE
