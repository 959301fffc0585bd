"""Parity of two runtimes on the same inputs: the logit comparison and its report.

:func:`compare_logits` compares a reference's ``[N, C]`` logits with a candidate's;
:class:`ParityReport` records the outcome. The export checks the Paddle Inference predictor
against the dygraph model (:func:`harness.export.export`), the deployment checks
onnxruntime against Paddle Inference (:func:`harness.onnx_export.check_onnx_parity`); both
write the report's :meth:`ParityReport.to_dict` into their JSON (``manifest.json``,
``deploy.json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from common.errors import ExportError

# Parity tolerance between two runtimes: |diff| <= atol + rtol * max|logit|.
# oneDNN reorders float32 reductions (measured ~2e-3 absolute on logits of magnitude ~1500
# for ResNet50_vd, i.e. ~1.3e-6 relative); 1e-4 relative leaves two orders of margin for
# deeper models and other CPUs while still catching a wrong graph, wrong weights or a
# wrong layout (those differ by O(1) relative).
DEFAULT_PARITY_RTOL = 1e-4
DEFAULT_PARITY_ATOL = 1e-3
# cuDNN may run float32 convolutions in TF32 on Ampere and newer GPUs (10-bit mantissa).
GPU_PARITY_RTOL = 5e-3


@dataclass(frozen=True)
class ParityReport:
    """A candidate runtime against a reference on the same inputs.

    ``backend`` is the Paddle Inference backend involved (the candidate in an export's
    check, the reference in a deployment's). ``argmax_mismatches`` are the inputs whose
    argmax differs although the reference's top-2 margin exceeds ``tolerance``; an input
    whose margin is within it is a tie either side may break, counted in ``near_ties``.
    ``source`` says where the inputs came from; ``images`` lists image files, if any.
    """

    backend: str
    input_kind: str
    num_inputs: int
    max_abs_diff: float
    max_abs_logit: float
    tolerance: float
    rtol: float
    atol: float
    argmax_agree: int
    near_ties: int
    argmax_mismatches: tuple[int, ...] = ()
    source: str = ""
    images: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when the logits are within tolerance and the argmax agrees on every input but near-ties."""
        return self.max_abs_diff <= self.tolerance and not self.argmax_mismatches

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: one key per field and ``passed`` (image paths are left out; their count is ``num_inputs``)."""
        d = asdict(self)
        d.pop("images")
        d["argmax_mismatches"] = list(self.argmax_mismatches)
        d["passed"] = self.passed
        return d


def compare_logits(
    reference: np.ndarray, candidate: np.ndarray, *, rtol: float = DEFAULT_PARITY_RTOL, atol: float = DEFAULT_PARITY_ATOL
) -> tuple[float, float, int, int, list[int]]:
    """Compare two ``[N, C]`` logit arrays.

    Returns ``(max_abs_diff, tolerance, argmax_agree, near_ties, bad_rows)`` where
    ``tolerance = atol + rtol * max|reference|`` and ``bad_rows`` are rows whose argmax
    differs although the reference's top-2 margin exceeds the tolerance (a margin within
    numerical noise is a tie that either side may break, counted in ``near_ties``).
    """
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ExportError(f"logit shapes differ: dygraph {reference.shape} vs predictor {candidate.shape}")
    max_abs_logit = float(np.abs(reference).max()) if reference.size else 0.0
    tolerance = float(atol + rtol * max_abs_logit)
    diff = float(np.abs(reference - candidate).max()) if reference.size else 0.0
    ref_arg = reference.argmax(axis=1)
    cand_arg = candidate.argmax(axis=1)
    agree = int(np.sum(ref_arg == cand_arg))
    if reference.shape[1] > 1:
        top2 = np.sort(reference, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    else:
        margin = np.full(reference.shape[0], np.inf)
    ties = margin <= tolerance
    bad = [int(i) for i in np.nonzero((ref_arg != cand_arg) & ~ties)[0]]
    return diff, tolerance, agree, int(np.sum(ties)), bad
