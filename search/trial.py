"""``Trial``: one evaluated (or running) point of a search, and its state."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from common.errors import TlbenchError

from .space import to_python


class TrialState(str, enum.Enum):
    """Life cycle of a trial. ``RUNNING`` is the only unfinished state."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    PRUNED = "PRUNED"

    @property
    def is_finished(self) -> bool:
        """True for COMPLETE, FAILED and PRUNED."""
        return self is not TrialState.RUNNING


class TrialPruned(TlbenchError):
    """Raised by an objective to stop a trial early on purpose; the trial ends PRUNED."""


@dataclass(frozen=True)
class Trial:
    """One trial: its point, state and outcome.

    ``value`` is the objective to maximise (``None`` unless COMPLETE); ``metrics`` and ``timings``
    are what the objective returned (timings in seconds; the runner adds ``trial_s``);
    ``error`` is the one-line error of a FAILED trial; ``started_at``/``finished_at`` are Unix
    times; ``worker`` is the worker slot that ran it.
    """

    id: int
    params: dict[str, Any]
    state: TrialState
    value: Optional[float] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    timings: dict[str, float] = field(default_factory=dict)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    worker: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, TrialState):
            object.__setattr__(self, "state", TrialState(self.state))
        if self.value is not None:
            value = float(self.value)
            if not math.isfinite(value):
                raise TlbenchError(f"trial {self.id}: value must be finite, got {self.value!r}")
            object.__setattr__(self, "value", value)

    @property
    def duration_s(self) -> Optional[float]:
        """Wall time from start to finish, if both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_record(self) -> dict[str, Any]:
        """The journal record of this trial (JSON-safe)."""
        return to_python(
            {
                "trial": self.id,
                "state": self.state.value,
                "params": self.params,
                "value": self.value,
                "metrics": self.metrics,
                "error": self.error,
                "timings": self.timings,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "worker": self.worker,
            }
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Trial":
        """Inverse of :meth:`to_record` (extra keys such as ``traceback`` are ignored)."""
        return cls(
            id=int(record["trial"]),
            params=dict(record.get("params") or {}),
            state=TrialState(record["state"]),
            value=record.get("value"),
            metrics=dict(record.get("metrics") or {}),
            error=record.get("error"),
            timings=dict(record.get("timings") or {}),
            started_at=record.get("started_at"),
            finished_at=record.get("finished_at"),
            worker=record.get("worker"),
        )
